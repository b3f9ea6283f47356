// Memory helpers for CPU kernels that write large fresh outputs.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <c10/util/accumulate.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pydet::cpu {

// A freshly allocated output of hundreds of MB costs more in page faults (one per 4 KiB page, each
// zeroing its page) than the kernel that fills it. Asking for transparent huge pages on the
// 2 MiB-aligned interior of the buffer before the first write cuts the faults 512-fold; where THP is
// disabled or unsupported the call is a no-op. Only worth it above a few MiB.
inline void advise_huge_pages(const at::Tensor& out) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  if (out.nbytes() < 8 * kHuge) return;
  const auto begin = reinterpret_cast<uintptr_t>(out.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + out.nbytes()) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

// A zero-filled CPU tensor whose zeros cost nothing until read: above a few MiB the storage comes from
// calloc, which for fresh memory (mmap'd by the C library) skips the fill because the kernel hands out
// zeroed pages on first touch, so a kernel that writes only a sparse part of a large output (pasted
// masks: the boxes' pixels of N images) pays for the pages it writes, not for the whole output, and
// untouched pages never become resident. The storage is not resizable (as any from_blob tensor).
inline at::Tensor lazily_zeroed(c10::IntArrayRef sizes, const at::TensorOptions& options) {
  constexpr size_t kCalloc = size_t(4) << 20;
  const size_t count = static_cast<size_t>(c10::multiply_integers(sizes));
  const size_t bytes = count * c10::elementSize(c10::typeMetaToScalarType(options.dtype()));
  if (bytes < kCalloc) return at::zeros(sizes, options);
  void* data = std::calloc(bytes, 1);
  if (data == nullptr) throw std::bad_alloc();
  return at::from_blob(data, sizes, [](void* p) { std::free(p); }, options);
}

// Scratch buffers for 64-byte vector loads and stores: std::vector's default allocator aligns to
// 16 bytes, and AVX-512 accesses that straddle cache lines cost twice as much (and made kernel times
// vary 2x from one process to the next).
template <class T, std::size_t kAlign = 64>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, kAlign>&) {}
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, kAlign>;
  };
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(kAlign))); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(kAlign)); }
  friend bool operator==(const AlignedAllocator&, const AlignedAllocator&) { return true; }
};
template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace pydet::cpu

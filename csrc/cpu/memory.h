// Memory helpers for CPU kernels that write large fresh outputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
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

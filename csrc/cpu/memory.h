// Memory helpers for CPU kernels that write large fresh outputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

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

}  // namespace pydet::cpu

// CPU kernel of soft_nms (mmcv). Front end: ops/soft_nms.h.

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "common/nms_math.h"
#include "common/rows.h"
#include "common/simd.h"
#include "ops/soft_nms.h"

namespace pydet::soft_nms {
namespace {

// Decays scores sc[0..n) by the overlap of box a with each box (mmcv's soft-NMS weights). The
// weights depend only on the box, so all of them are applied in one vectorisable pass.
template <class T, SoftNmsMethod kMethod>
PYDET_SIMD_INLINE void soft_decay(const BoxTerms<T> a, const T* __restrict x1, const T* __restrict y1,
                                  const T* __restrict x2, const T* __restrict y2, const T* __restrict area,
                                  T* __restrict sc, int64_t n, T t, T sigma, T offset) {
  // mmcv's overlap: widths with the legacy +offset, no eps (an eps of -inf disables the clamp).
  const MetricParams<T> p{-std::numeric_limits<T>::infinity(), offset};
  for (int64_t k = 0; k < n; ++k) {
    const BoxTerms<T> b = stored_terms(x1[k], y1[k], x2[k], y2[k], area[k]);
    const T ovr = box_metric<BoxMetric::kMmIoU>(a, b, p);
    T weight;
    if constexpr (kMethod == SoftNmsMethod::kNaive) {
      weight = ovr >= t ? T(0) : T(1);
    } else if constexpr (kMethod == SoftNmsMethod::kLinear) {
      weight = ovr >= t ? T(1) - ovr : T(1);
    } else {  // a NaN IoU (NaN box) leaves the score alone; select(), not ?:, so that exp_ stays out of a branch
      weight = select(ovr == ovr, exp_(-(ovr * ovr) / sigma), T(1));
    }
    sc[k] *= weight;
  }
}

template <class T>
std::tuple<at::Tensor, at::Tensor> soft_nms_impl(const at::Tensor& boxes, const at::Tensor& scores_in, double thr,
                                                 double sigma_d, double min_score_d, SoftNmsMethod method,
                                                 int64_t offset) {
  const at::Tensor scores = scores_in.contiguous();
  const T* s_in = scores.const_data_ptr<T>();
  const BoxRows<T> rows(boxes);
  // Working arrays in mmcv's order; NaN scores are dropped first (never kept, never suppress).
  std::vector<T> x1, y1, x2, y2, sc, area;
  std::vector<int64_t> ind;
  for (int64_t i = 0; i < rows.size; ++i) {
    if (std::isnan(s_in[i])) continue;
    const Box4<T> q = rows[i];
    x1.push_back(q.a);
    y1.push_back(q.b);
    x2.push_back(q.c);
    y2.push_back(q.d);
    sc.push_back(s_in[i]);
    area.push_back((q.c - q.a + T(offset)) * (q.d - q.b + T(offset)));
    ind.push_back(i);
  }
  const T t = T(thr), sigma = T(sigma_d), min_score = T(min_score_d);
  size_t n = x1.size();
  std::vector<T> dets;
  for (size_t i = 0; i < n; ++i) {
    // The first maximum of sc[i..n) (mmcv scans with a strict `<`, so NaN never wins).
    T top = sc[i];
    for (size_t pos = i + 1; pos < n; ++pos) top = sc[pos] > top ? sc[pos] : top;
    size_t best = i;
    if (top == top && !(sc[i] == top)) {
      best = i + 1;
      while (!(sc[best] == top)) ++best;
    }
    std::swap(x1[i], x1[best]);
    std::swap(y1[i], y1[best]);
    std::swap(x2[i], x2[best]);
    std::swap(y2[i], y2[best]);
    std::swap(sc[i], sc[best]);
    std::swap(area[i], area[best]);
    std::swap(ind[i], ind[best]);
    dets.insert(dets.end(), {x1[i], y1[i], x2[i], y2[i], sc[i]});
    const BoxTerms<T> a = stored_terms(x1[i], y1[i], x2[i], y2[i], area[i]);
    const size_t o = i + 1;
    const auto decay = [&](auto kind) {
      simd::dispatch([&] {
        soft_decay<T, decltype(kind)::value>(a, x1.data() + o, y1.data() + o, x2.data() + o, y2.data() + o,
                                             area.data() + o, sc.data() + o, int64_t(n - o), t, sigma, T(offset));
      });
    };
    if (method == SoftNmsMethod::kNaive) {
      decay(std::integral_constant<SoftNmsMethod, SoftNmsMethod::kNaive>{});
    } else if (method == SoftNmsMethod::kLinear) {
      decay(std::integral_constant<SoftNmsMethod, SoftNmsMethod::kLinear>{});
    } else {
      decay(std::integral_constant<SoftNmsMethod, SoftNmsMethod::kGaussian>{});
    }
    // Drop scores below min_score: the last box takes the dropped one's place and is examined next.
    for (size_t pos = o; pos < n;) {
      if (sc[pos] < min_score) {
        const size_t last = --n;
        x1[pos] = x1[last];
        y1[pos] = y1[last];
        x2[pos] = x2[last];
        y2[pos] = y2[last];
        sc[pos] = sc[last];
        area[pos] = area[last];
        ind[pos] = ind[last];
      } else {
        ++pos;
      }
    }
  }
  const int64_t k = static_cast<int64_t>(n);
  at::Tensor out_dets = at::empty({k, 5}, boxes.options());
  at::Tensor out_ind = at::empty({k}, boxes.options().dtype(at::kLong));
  std::copy(dets.begin(), dets.end(), out_dets.data_ptr<T>());
  std::copy(ind.begin(), ind.begin() + k, out_ind.data_ptr<int64_t>());
  return {out_dets, out_ind};
}

struct CpuKernels {
  static std::tuple<at::Tensor, at::Tensor> soft_nms(const at::Tensor& boxes, const at::Tensor& scores, double thr,
                                                     double sigma, double min_score, SoftNmsMethod method,
                                                     int64_t offset) {
    std::tuple<at::Tensor, at::Tensor> out;
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "soft_nms", [&] {
      out = soft_nms_impl<scalar_t>(boxes, scores, thr, sigma, min_score, method, offset);
    });
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

}  // namespace pydet::soft_nms

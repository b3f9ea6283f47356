// Baselines for the NMS benchmarks, written the way the reference libraries write their CPU kernels,
// as plain C++ with a C interface (loaded by pydet/benchmarks/native.py through ctypes):
//   greedy_nms: torchvision's CPU nms kernel -- sort by score, then for every kept box test every
//               later box that is not yet suppressed (O(N^2) IoU tests, scalar).
//   soft_nms:   mmcv's CPU soft-NMS kernel.
// They exist so `pydet bench` can measure pydet against the algorithm those libraries run, in the
// same process, on machines where the libraries themselves are not installed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

extern "C" {

// boxes: n x 4 (x1, y1, x2, y2) float32, contiguous; scores: n. Writes kept indices (decreasing score)
// to keep and returns how many.
int64_t greedy_nms(const float* boxes, const float* scores, int64_t n, double iou_threshold, int64_t* keep) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  std::vector<float> x1(n), y1(n), x2(n), y2(n), areas(n);
  for (int64_t i = 0; i < n; ++i) {
    x1[i] = boxes[4 * i];
    y1[i] = boxes[4 * i + 1];
    x2[i] = boxes[4 * i + 2];
    y2[i] = boxes[4 * i + 3];
    areas[i] = (x2[i] - x1[i]) * (y2[i] - y1[i]);
  }
  std::vector<uint8_t> suppressed(n, 0);
  int64_t num_to_keep = 0;
  for (int64_t _i = 0; _i < n; _i++) {
    const int64_t i = order[_i];
    if (suppressed[i] == 1) continue;
    keep[num_to_keep++] = i;
    const float ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = areas[i];
    for (int64_t _j = _i + 1; _j < n; _j++) {
      const int64_t j = order[_j];
      if (suppressed[j] == 1) continue;
      const float xx1 = std::max(ix1, x1[j]);
      const float yy1 = std::max(iy1, y1[j]);
      const float xx2 = std::min(ix2, x2[j]);
      const float yy2 = std::min(iy2, y2[j]);
      const float w = std::max(0.0f, xx2 - xx1);
      const float h = std::max(0.0f, yy2 - yy1);
      const float inter = w * h;
      const float ovr = inter / (iarea + areas[j] - inter);
      if (ovr > iou_threshold) suppressed[j] = 1;
    }
  }
  return num_to_keep;
}

// mmcv soft-NMS (method 0 naive, 1 linear, 2 gaussian). dets: n x 5 output; keep: n. Returns K.
int64_t soft_nms(const float* boxes, const float* scores, int64_t n, float iou_threshold, float sigma,
                 float min_score, int method, float* dets, int64_t* keep) {
  std::vector<float> x1(n), y1(n), x2(n), y2(n), sc(scores, scores + n), areas(n);
  std::vector<int64_t> inds(n);
  for (int64_t i = 0; i < n; ++i) {
    x1[i] = boxes[4 * i];
    y1[i] = boxes[4 * i + 1];
    x2[i] = boxes[4 * i + 2];
    y2[i] = boxes[4 * i + 3];
    areas[i] = (x2[i] - x1[i]) * (y2[i] - y1[i]);
    inds[i] = i;
  }
  int64_t nboxes = n;
  for (int64_t i = 0; i < nboxes; i++) {
    int64_t max_pos = i;
    for (int64_t pos = i + 1; pos < nboxes; ++pos) {
      if (sc[max_pos] < sc[pos]) max_pos = pos;
    }
    std::swap(x1[i], x1[max_pos]);
    std::swap(y1[i], y1[max_pos]);
    std::swap(x2[i], x2[max_pos]);
    std::swap(y2[i], y2[max_pos]);
    std::swap(sc[i], sc[max_pos]);
    std::swap(areas[i], areas[max_pos]);
    std::swap(inds[i], inds[max_pos]);
    dets[5 * i] = x1[i];
    dets[5 * i + 1] = y1[i];
    dets[5 * i + 2] = x2[i];
    dets[5 * i + 3] = y2[i];
    dets[5 * i + 4] = sc[i];
    for (int64_t pos = i + 1; pos < nboxes;) {
      const float xx1 = std::max(x1[i], x1[pos]);
      const float yy1 = std::max(y1[i], y1[pos]);
      const float xx2 = std::min(x2[i], x2[pos]);
      const float yy2 = std::min(y2[i], y2[pos]);
      const float w = std::max(0.0f, xx2 - xx1);
      const float h = std::max(0.0f, yy2 - yy1);
      const float inter = w * h;
      const float ovr = inter / (areas[i] + areas[pos] - inter);
      float weight = 1.0f;
      if (method == 0) {
        if (ovr >= iou_threshold) weight = 0.0f;
      } else if (method == 1) {
        if (ovr >= iou_threshold) weight = 1.0f - ovr;
      } else {
        weight = std::exp(-(ovr * ovr) / sigma);
      }
      sc[pos] *= weight;
      if (sc[pos] < min_score) {
        x1[pos] = x1[nboxes - 1];
        y1[pos] = y1[nboxes - 1];
        x2[pos] = x2[nboxes - 1];
        y2[pos] = y2[nboxes - 1];
        sc[pos] = sc[nboxes - 1];
        areas[pos] = areas[nboxes - 1];
        inds[pos] = inds[nboxes - 1];
        --nboxes;
      } else {
        ++pos;
      }
    }
  }
  std::copy(inds.begin(), inds.begin() + nboxes, keep);
  return nboxes;
}

}  // extern "C"

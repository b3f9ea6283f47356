// Rotated boxes (detectron2 convention): (cx, cy, w, h, angle in degrees, counter-clockwise in image
// coordinates, where y points down). IoU is the exact area of the intersection of the two
// rectangles (a convex polygon: one rectangle clipped by the other's four edges), computed in
// float64 whatever the input dtype, with the boxes re-centred on their common midpoint first
// (as detectron2 does, for precision). Boxes with area < 1e-14 have IoU 0 with everything.
#pragma once

#include <cmath>

#include "common/dual.h"

namespace pydet {

struct Point2 {
  double x, y;
};

PYDET_HD double cross2(const Point2& o, const Point2& a, const Point2& b) {
  return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x);
}

// Corners in order (detectron2's get_rotated_vertices).
PYDET_HD void rotated_corners(double cx, double cy, double w, double h, double angle_deg, Point2 (&p)[4]) {
  const double theta = angle_deg * (3.14159265358979323846 / 180.0);
  const double c = std::cos(theta) * 0.5, s = std::sin(theta) * 0.5;
  p[0] = {cx + s * h + c * w, cy + c * h - s * w};
  p[1] = {cx - s * h + c * w, cy - c * h - s * w};
  p[2] = {2 * cx - p[0].x, 2 * cy - p[0].y};
  p[3] = {2 * cx - p[1].x, 2 * cy - p[1].y};
}

// Area of the intersection of two convex quadrilaterals: Sutherland-Hodgman clipping of `a` by each
// edge of `b` (at most 8 vertices remain), then the shoelace formula.
PYDET_HD double convex_quad_intersection(const Point2 (&a)[4], const Point2 (&b)[4]) {
  Point2 poly[8], next[8];
  int n = 4;
  for (int i = 0; i < 4; ++i) poly[i] = a[i];
  // Orientation of b, so that "inside" is the same side of every edge.
  const double orient = cross2(b[0], b[1], b[2]) >= 0 ? 1.0 : -1.0;
  for (int e = 0; e < 4 && n > 0; ++e) {
    const Point2 p = b[e], q = b[(e + 1) & 3];
    int m = 0;
    for (int i = 0; i < n; ++i) {
      const Point2 cur = poly[i], nxt = poly[(i + 1) % n];
      const double dc = orient * cross2(p, q, cur), dn = orient * cross2(p, q, nxt);
      if (dc >= 0) next[m++] = cur;
      if ((dc >= 0) != (dn >= 0)) {  // the edge cur -> nxt crosses the clip line
        const double t = dc / (dc - dn);
        next[m++] = {cur.x + t * (nxt.x - cur.x), cur.y + t * (nxt.y - cur.y)};
      }
    }
    n = m;
    for (int i = 0; i < n; ++i) poly[i] = next[i];
  }
  double area = 0;
  for (int i = 0; i < n; ++i) {
    const Point2 u = poly[i], v = poly[(i + 1) % n];
    area += u.x * v.y - v.x * u.y;
  }
  return std::fabs(area) * 0.5;
}

// IoU of rotated boxes given as (cx, cy, w, h, angle_deg).
PYDET_HD double rotated_iou(double cx1, double cy1, double w1, double h1, double a1, double cx2, double cy2, double w2,
                            double h2, double a2) {
  const double area1 = w1 * h1, area2 = w2 * h2;
  if (area1 < 1e-14 || area2 < 1e-14) return 0.0;
  const double sx = (cx1 + cx2) * 0.5, sy = (cy1 + cy2) * 0.5;
  Point2 p[4], q[4];
  rotated_corners(cx1 - sx, cy1 - sy, w1, h1, a1, p);
  rotated_corners(cx2 - sx, cy2 - sy, w2, h2, a2, q);
  const double inter = convex_quad_intersection(p, q);
  return inter / (area1 + area2 - inter);
}

}  // namespace pydet

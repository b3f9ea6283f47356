"""Autograd and autocast rules for the differentiable ``torch.ops.pydet`` operators.

Every backward is a compiled kernel (``torch.ops.pydet._*_backward``); the box ops' evaluate the same
formula as the forward on dual numbers (``csrc/common/dual.h``), so nothing here re-derives a gradient. Gradients
follow PyTorch's conventions for the reference formulas: at a tie of max/min each side gets half,
clamp passes the gradient at its bounds, and CIoU's alpha is a constant (torch.no_grad in
torchvision).

Autocast: box arithmetic is precision-sensitive (areas overflow float16 above 65504 px^2), so under
``torch.autocast`` the box ops run in float32, like PyTorch's own "fp32" autocast ops; the depthwise
convolution runs in the active autocast dtype (``torch.get_autocast_dtype``), like ``conv2d``;
the RoI pooling ops and deform_conv2d run in float32 and return the input's dtype, as torchvision's do.
"""

from __future__ import annotations

import math

import torch

_ops = torch.ops.pydet


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*(x for x in inputs if isinstance(x, torch.Tensor)))
    ctx.args = tuple(x for x in inputs if not isinstance(x, torch.Tensor))


def _register(name: str, backward) -> None:
    torch.library.register_autograd("pydet::" + name, backward, setup_context=_save_inputs)


# ---- boxes -------------------------------------------------------------------------------------
def _box_area_backward(ctx, grad):
    (boxes,) = ctx.saved_tensors
    (fmt,) = ctx.args
    return _ops._box_area_backward(grad, boxes, fmt), None


def _box_convert_backward(ctx, grad):
    (boxes,) = ctx.saved_tensors
    in_fmt, out_fmt = ctx.args
    return _ops._box_convert_backward(grad, boxes, in_fmt, out_fmt), None, None


def _clip_backward(ctx, grad):
    (boxes,) = ctx.saved_tensors
    (size,) = ctx.args
    return _ops._clip_boxes_to_image_backward(grad, boxes, size), None


_register("box_area", _box_area_backward)
_register("box_convert", _box_convert_backward)
_register("clip_boxes_to_image", _clip_backward)


# ---- IoU family --------------------------------------------------------------------------------
def _pairwise_backward(metric: str, argument: str | None):
    # argument: the op's one non-tensor argument ("eps" or box_iou's "fmt"), or None.
    def backward(ctx, grad):
        boxes1, boxes2 = ctx.saved_tensors
        eps = ctx.args[0] if argument == "eps" else 0.0
        fmt = ctx.args[0] if argument == "fmt" else "xyxy"
        g1, g2 = _ops._pairwise_box_metric_backward(grad, boxes1, boxes2, metric, eps, 0.0, fmt)
        return (g1, g2) if argument is None else (g1, g2, None)

    return backward


def _aligned_backward(metric: str, has_eps: bool):
    def backward(ctx, grad):
        boxes1, boxes2 = ctx.saved_tensors
        eps = ctx.args[0] if has_eps else 0.0
        g1, g2 = _ops._aligned_box_metric_backward(grad, boxes1, boxes2, metric, eps, 0.0, 1.0)
        return (g1, g2, None) if has_eps else (g1, g2)

    return backward


_register("box_iou", _pairwise_backward("iou", "fmt"))
_register("generalized_box_iou", _pairwise_backward("giou", None))
for _name, _metric in (("box_iou", "iou"), ("generalized_box_iou", "giou")):
    _register(_name + "_aligned", _aligned_backward(_metric, has_eps=False))
for _name, _metric in (("distance_box_iou", "diou"), ("complete_box_iou", "ciou")):
    _register(_name, _pairwise_backward(_metric, "eps"))
    _register(_name + "_aligned", _aligned_backward(_metric, has_eps=True))


def _bbox_overlaps_backward(ctx, grad):
    boxes1, boxes2 = ctx.saved_tensors
    mode, is_aligned, eps, offset = ctx.args
    metric = "mm_" + mode
    if is_aligned:
        g1, g2 = _ops._aligned_box_metric_backward(grad, boxes1, boxes2, metric, eps, float(offset), 1.0)
    else:
        g1, g2 = _ops._pairwise_box_metric_backward(grad, boxes1, boxes2, metric, eps, float(offset), "xyxy")
    return g1, g2, None, None, None, None


_register("bbox_overlaps", _bbox_overlaps_backward)


def _loss_backward(metric: str):
    def backward(ctx, grad):
        boxes1, boxes2 = ctx.saved_tensors
        reduction, eps = ctx.args
        scale = 1.0
        if reduction == "mean":
            pairs = math.prod(torch.broadcast_shapes(boxes1.shape[:-1], boxes2.shape[:-1]))
            scale = 1.0 / max(pairs, 1)
        g1, g2 = _ops._aligned_box_metric_backward(grad, boxes1, boxes2, metric, eps, 0.0, scale)
        return g1, g2, None, None

    return backward


for _name, _metric in (
    ("generalized_box_iou_loss", "giou_loss"),
    ("distance_box_iou_loss", "diou_loss"),
    ("complete_box_iou_loss", "ciou_loss"),
):
    _register(_name, _loss_backward(_metric))


# ---- box coding ---------------------------------------------------------------------------------
# box_decode's rule is registered in C++ (csrc/autograd/coders.cpp): a Python rule runs on every
# call, gradients or not, and its overhead was ~15% of decoding 100,000 boxes.


# ---- classification losses ---------------------------------------------------------------------
def _focal_backward(ctx, grad):
    inputs, targets = ctx.saved_tensors
    targets_grad = ctx.needs_input_grad[1]
    grad_inputs, grad_targets = _ops._sigmoid_focal_loss_backward(
        grad, inputs, targets, *ctx.args, targets_grad
    )
    return grad_inputs, grad_targets if targets_grad else None, None, None, None


_register("sigmoid_focal_loss", _focal_backward)


# ---- depthwise convolution ---------------------------------------------------------------------
def _depthwise_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, activation = inputs
    ctx.save_for_backward(input, weight, bias)
    ctx.args = (stride, padding, dilation, activation)
    ctx.has_bias = bias is not None


def _depthwise_backward(ctx, grad):
    input, weight, bias = ctx.saved_tensors
    grad_input, grad_weight, grad_bias = _ops._depthwise_conv2d_backward(grad, input, weight, bias, *ctx.args)
    return grad_input, grad_weight, grad_bias if ctx.has_bias else None, None, None, None, None


torch.library.register_autograd(
    "pydet::depthwise_conv2d", _depthwise_backward, setup_context=_depthwise_setup
)


# ---- RoI pooling -------------------------------------------------------------------------------
# Only the input gets a gradient, as in torchvision. The backward is linear in its grad, so its own
# derivative is the forward op again: second derivatives work too.
def _roi_align_setup(ctx, inputs, output):
    input, rois, *args = inputs
    ctx.save_for_backward(rois)
    ctx.args = tuple(args)  # spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    ctx.input_shape = input.shape


def _roi_align_backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    scale, ph, pw, ratio, aligned = ctx.args
    grad_input = _ops._roi_align_backward(grad, rois, scale, ph, pw, *ctx.input_shape, ratio, aligned)
    return grad_input, None, None, None, None, None, None


def _roi_align_backward_setup(ctx, inputs, output):
    _grad, rois, scale, ph, pw, _n, _c, _h, _w, ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (scale, ph, pw, ratio, aligned)


def _roi_align_double_backward(ctx, grad_grad_input):
    (rois,) = ctx.saved_tensors
    return (_ops.roi_align(grad_grad_input, rois, *ctx.args),) + (None,) * 10


def _multi_scale_setup(ctx, inputs, output):
    features, rois, levels, *args = inputs
    ctx.save_for_backward(rois, levels)
    ctx.args = tuple(args)  # spatial_scales, pooled_height, pooled_width, sampling_ratio, aligned
    ctx.sizes = [size for f in features for size in f.shape[2:]]
    ctx.batch, ctx.channels = features[0].shape[:2]


def _multi_scale_backward(ctx, grad):
    rois, levels = ctx.saved_tensors
    scales, ph, pw, ratio, aligned = ctx.args
    grads = _ops._multi_scale_roi_align_backward(
        grad, rois, levels, scales, ph, pw, ctx.sizes, ctx.batch, ctx.channels, ratio, aligned
    )
    return list(grads), None, None, None, None, None, None, None


def _roi_align_rotated_backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    scale, ph, pw, ratio = ctx.args
    grad_input = _ops._roi_align_rotated_backward(grad, rois, scale, ph, pw, *ctx.input_shape, ratio)
    return grad_input, None, None, None, None, None


def _roi_align_rotated_backward_setup(ctx, inputs, output):
    _grad, rois, scale, ph, pw, _n, _c, _h, _w, ratio = inputs
    ctx.save_for_backward(rois)
    ctx.args = (scale, ph, pw, ratio)


def _roi_align_rotated_double_backward(ctx, grad_grad_input):
    (rois,) = ctx.saved_tensors
    return (_ops.roi_align_rotated(grad_grad_input, rois, *ctx.args),) + (None,) * 9


def _index_pooling_setup(ctx, inputs, output):
    """roi_pool, ps_roi_pool, ps_roi_align: the backward takes the forward's int32 index output."""
    input, rois, *args = inputs
    ctx.save_for_backward(rois, output[1])
    ctx.args = tuple(args)  # spatial_scale, pooled_height, pooled_width[, sampling_ratio]
    ctx.input_shape = input.shape


def _index_pooling_backward(backward_op):
    def backward(ctx, grad, _grad_index):
        rois, index = ctx.saved_tensors
        scale, ph, pw, *ratio = ctx.args
        grad_input = backward_op(grad, rois, index, scale, ph, pw, *ratio, *ctx.input_shape)
        return (grad_input, None, *(None for _ in ctx.args))

    return backward


torch.library.register_autograd("pydet::roi_align", _roi_align_backward, setup_context=_roi_align_setup)
torch.library.register_autograd(
    "pydet::multi_scale_roi_align", _multi_scale_backward, setup_context=_multi_scale_setup
)
torch.library.register_autograd(
    "pydet::_roi_align_backward", _roi_align_double_backward, setup_context=_roi_align_backward_setup
)
torch.library.register_autograd(
    "pydet::roi_align_rotated", _roi_align_rotated_backward, setup_context=_roi_align_setup
)
torch.library.register_autograd(
    "pydet::_roi_align_rotated_backward",
    _roi_align_rotated_double_backward,
    setup_context=_roi_align_rotated_backward_setup,
)
for _name in ("roi_pool", "ps_roi_pool", "ps_roi_align"):
    torch.library.register_autograd(
        "pydet::" + _name,
        _index_pooling_backward(getattr(_ops, f"_{_name}_backward")),
        setup_context=_index_pooling_setup,
    )


# ---- deformable convolution --------------------------------------------------------------------
def _deform_conv2d_backward(ctx, grad):
    input, weight, offset, mask, bias = ctx.saved_tensors
    grads = _ops._deform_conv2d_backward(grad, input, weight, offset, mask, bias, *ctx.args)
    grad_input, grad_weight, grad_offset, grad_mask, grad_bias = grads
    use_mask = ctx.args[-1]
    return (grad_input, grad_weight, grad_offset, grad_mask if use_mask else None, grad_bias) + (None,) * 9


_register("deform_conv2d", _deform_conv2d_backward)


# ---- autocast ----------------------------------------------------------------------------------
_FLOAT32_OPS = (
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "box_iou_aligned",
    "generalized_box_iou_aligned",
    "distance_box_iou_aligned",
    "complete_box_iou_aligned",
    "bbox_overlaps",
    "generalized_box_iou_loss",
    "distance_box_iou_loss",
    "complete_box_iou_loss",
    "box_encode",
    "box_decode",
    "box_overlap_max",
    "box_overlap_ties",
    "sigmoid_focal_loss",
)
_lib = torch.library.Library("pydet", "IMPL")


def _cast_floating(args, device_type: str, dtype: torch.dtype):
    """Autocast's input cast: floating tensors on the autocast device (but float64) to ``dtype``."""

    def cast(v):
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.device.type == device_type:
            return v if v.dtype == torch.float64 else v.to(dtype)
        if isinstance(v, (list, tuple)):
            return type(v)(cast(x) for x in v)
        return v

    return [cast(v) for v in args]


def _register_autocast_rule(name: str, device_type: str, compute) -> None:
    """``compute(op, args)`` as the op's autocast rule on ``device_type``, run with autocast excluded
    (``torch.library.register_autocast`` only casts every input to one dtype fixed at registration)."""
    op = getattr(_ops, name).default
    key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    key = getattr(torch._C.DispatchKey, key_name)

    def run(*args):
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return compute(op, args)

    op.py_impl(key)(run)  # what torch.compile traces
    _lib.impl(name, lambda _keyset, *args: run(*args), key_name, with_keyset=True)


def _in_active_dtype(device_type: str):
    """The rule of ATen's lower-precision ops: inputs cast to the autocast region's dtype."""
    return lambda op, args: op(*_cast_floating(args, device_type, torch.get_autocast_dtype(device_type)))


def _in_float32_returning_input_dtype(device_type: str):
    """torchvision's rule for the RoI pooling ops: computed in float32, returned in the (first) input's dtype."""

    def compute(op, args):
        first = args[0][0] if isinstance(args[0], (list, tuple)) else args[0]
        out = op(*_cast_floating(args, device_type, torch.float32))
        if isinstance(out, tuple):  # (pooled, int32 index): only the pooled values are cast back
            return (out[0].to(first.dtype), *out[1:])
        return out.to(first.dtype)

    return compute


for _device in ("cpu", "cuda"):
    if torch.amp.is_autocast_available(_device):
        for _name in _FLOAT32_OPS:
            torch.library.register_autocast("pydet::" + _name, _device, torch.float32)
        _register_autocast_rule("depthwise_conv2d", _device, _in_active_dtype(_device))
        for _name in (
            "roi_align",
            "multi_scale_roi_align",
            "roi_align_rotated",
            "roi_pool",
            "ps_roi_pool",
            "ps_roi_align",
            "deform_conv2d",
        ):
            _register_autocast_rule(_name, _device, _in_float32_returning_input_dtype(_device))

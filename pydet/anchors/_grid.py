"""What every generator shares: the bounded cache of generated grids and argument helpers."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor


def split_levels(anchors: Tensor, counts: Sequence[int]) -> list[Tensor]:
    """Per-level views of one grid tensor."""
    return list(torch.split(anchors, list(counts)))


class GridCache:
    """A bounded (LRU), thread-safe cache of generated grids, keyed by feature-map sizes, dtype, device.

    A hit returns the cached tensor itself, so cached calls cost nothing. Callers must treat it as
    read-only; should one modify it in place anyway, the tensor's version counter (shared by its
    views) changes, the entry no longer matches and the next call regenerates: an in-place edit can
    never leak into later results. Under ``torch.compile`` the cache is bypassed (the kernel call is
    traced instead). Grids are made outside ``torch.inference_mode`` even when asked for inside it, so
    one cache serves evaluation and training alike.
    """

    def __init__(self, maxsize: int = 16) -> None:
        if maxsize < 1:
            raise ValueError(f"GridCache: maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, tuple[object, Tensor, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, create: Callable[[], tuple[object, Tensor]]) -> object:
        """``create()`` returns (value to hand out, tensor whose version guards it)."""
        if torch.compiler.is_compiling():
            return create()[0]
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1]._version == entry[2]:
                self._entries.move_to_end(key)
                return entry[0]
        # inference tensors have no version counter to guard an entry, and a training step after an
        # evaluation could not use them
        with torch.inference_mode(False):
            value, guard = create()
        with self._lock:
            self._entries[key] = (value, guard, guard._version)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def pair(value, name: str) -> tuple:
    """mmcv's _pair: an int/float becomes (v, v); a 2-sequence stays."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a (w, h) pair, got {value!r}")
        return tuple(value)
    return (value, value)


def check_featmap_sizes(featmap_sizes, num_levels: int, owner: str) -> list[tuple[int, int]]:
    sizes = [tuple(int(v) for v in s) for s in featmap_sizes]
    if len(sizes) != num_levels:
        raise ValueError(
            f"{owner}: featmap_sizes must have one (h, w) per level ({num_levels}), got {len(sizes)}"
        )
    for s in sizes:
        if len(s) != 2 or s[0] < 0 or s[1] < 0:
            raise ValueError(f"{owner}: every featmap size must be (h, w) with h, w >= 0, got {s}")
    return sizes

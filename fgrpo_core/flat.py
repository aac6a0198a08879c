"""One adapter as one flat float32 buffer: the layout the streamed aggregation works in.

An adapter has hundreds of small tensors (SmolLM2 r8: 420); one torch call per tensor per owner
costs more than the arithmetic (bench/comm.py measured per-tensor sums at 16-28% of the
machine's copy bandwidth). Laid end to end in sorted key order, each owner costs one call.
``decode`` (fgrpo_core/deltas.py) returns adapters already laid out this way, so ``as_flat``
finds their buffer without a copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fgrpo_core.types import Adapter


@dataclass(frozen=True)
class FlatLayout:
    """Where each key of an adapter lies in its flat buffer (keys in sorted order)."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    numel: int


def layout_of(adapter: Adapter) -> FlatLayout:
    """The flat layout of ``adapter``'s keys and shapes."""
    keys = tuple(sorted(adapter))
    shapes = tuple(tuple(adapter[k].shape) for k in keys)
    offsets, total = [], 0
    for shape in shapes:
        offsets.append(total)
        total += math.prod(shape)
    return FlatLayout(keys, shapes, tuple(offsets), total)


def views(flat: torch.Tensor, layout: FlatLayout) -> Adapter:
    """The adapter whose tensors are views of ``flat`` (no copy)."""
    return {
        key: flat[start : start + math.prod(shape)].view(shape)
        for key, shape, start in zip(layout.keys, layout.shapes, layout.offsets, strict=True)
    }


def empty_like_layout(layout: FlatLayout) -> tuple[torch.Tensor, Adapter]:
    """A new float32 buffer of the layout's size and its per-key views (to be written into)."""
    flat = torch.empty(layout.numel, dtype=torch.float32)
    return flat, views(flat, layout)


def matches(adapter: Adapter, layout: FlatLayout) -> bool:
    """Whether ``adapter`` has exactly the layout's keys and shapes (one cheap pass; no message)."""
    if len(adapter) != len(layout.keys):
        return False
    for key, shape in zip(layout.keys, layout.shapes, strict=True):
        tensor = adapter.get(key)
        if tensor is None or tensor.shape != shape:
            return False
    return True


def _shared_buffer(adapter: Adapter, layout: FlatLayout) -> torch.Tensor | None:
    """The flat float32 buffer ``adapter`` already views in this layout, or None.

    Each tensor must be float32, contiguous and start where the layout puts it, inside the first
    tensor's storage: then the flat view reads exactly the adapter's values. (420 tensors: ~0.1 ms.)
    """
    if not layout.keys:
        return None
    first = adapter[layout.keys[0]]
    storage, base = first.untyped_storage(), first.storage_offset()
    if storage.nbytes() < 4 * (base + layout.numel):
        return None
    origin = first.data_ptr()
    for key, start in zip(layout.keys, layout.offsets, strict=True):
        tensor = adapter[key]
        if (
            tensor.dtype != torch.float32
            or tensor.data_ptr() != origin + 4 * start
            or not tensor.is_contiguous()
        ):
            return None
    return torch.empty(0, dtype=torch.float32).set_(storage, base, (layout.numel,), (1,))


def as_flat(adapter: Adapter, layout: FlatLayout) -> torch.Tensor:
    """``adapter`` as one float32 buffer: its own when it views one in this layout, else a copy.

    The caller has checked keys and shapes (``matches`` or fgrpo_core.deltas.check_layout); the
    buffer is read only.
    """
    shared = _shared_buffer(adapter, layout)
    if shared is not None:
        return shared
    return torch.cat([adapter[key].detach().reshape(-1).to(torch.float32) for key in layout.keys])


def flat_copy(adapter: Adapter) -> Adapter:
    """A copy of ``adapter`` in float32, laid out in one buffer."""
    layout = layout_of(adapter)
    if not layout.keys:
        return {}
    shared = _shared_buffer(adapter, layout)
    return views(shared.clone() if shared is not None else as_flat(adapter, layout), layout)

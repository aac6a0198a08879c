"""What owners download: theta_t as an encoded step from theta_{t-1}, in ``federation.delta_dtype``.

The coordinator DEFINES theta_t as the decoded value of what it sends (docs/algorithm.md,
"Downloads"): ``theta_t = theta_{t-1} + decode(encode(candidate - theta_{t-1}))``, one float32 add
per element. An owner that holds theta_{t-1} computes the same add on the same bytes and gets the
same bits; the coordinator also stores theta_t in float32 (bit-exact) for any reader that does
not hold theta_{t-1}, and the commit gate, the evaluation and the next round all use this theta_t.

Encoding the step rather than theta_t itself: an int8 step is quantised at the step's own scale
(error at most max|step| / 254 per element, like an upload's), whereas int8 of theta_t would
round every step smaller than max|theta| / 254 away.
"""

from __future__ import annotations

import torch

from fgrpo_core.deltas import Encoding, check_layout, decode, encode, subtract
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.flat import as_flat, layout_of, views
from fgrpo_core.types import Adapter


def apply_step(parent: Adapter, data: bytes) -> Adapter:
    """theta_t from theta_{t-1} and the step's bytes: ``parent + decode(data)`` in float32."""
    step, _ = decode(data)
    try:
        check_layout(step, parent, what="global step")
    except DeltaValidationError as err:
        raise DeltaValidationError(
            err.reason, f"{err}: the step was made from another global adapter", key=err.key
        ) from err
    layout = layout_of(parent)
    with torch.no_grad():
        return views(torch.add(as_flat(parent, layout), as_flat(step, layout)), layout)


def encoded_step(parent: Adapter, candidate: Adapter, encoding: Encoding) -> tuple[Adapter, bytes]:
    """(theta_t, the step's bytes): the round's candidate as owners will hold it."""
    data = encode(subtract(candidate, parent), encoding)
    return apply_step(parent, data), data

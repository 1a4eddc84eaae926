"""Left-right consistency: where a left-view disparity agrees with the right view's, and where it cannot.

The right-view disparity comes from the same model run on the mirrored, swapped pair: mirroring the right
image makes it a "left" view whose partner is the mirrored left image, so
``d_right = mirror(model(mirror(right), mirror(left)))``. A left pixel ``x`` sees its point at ``x - d_left(x)``
in the right view; the consistency error is ``|d_left(x) - d_right(x - d_left(x))|`` (linear interpolation),
``inf`` where that column is outside the right image. Pixels whose error exceeds a threshold (1 px by default)
are occluded in the right view or unreliable.
"""

from typing import Callable

import torch
from torch import Tensor


def right_view_disparity(predict: Callable[[Tensor, Tensor], Tensor], left: Tensor, right: Tensor) -> Tensor:
    """``predict(left, right) -> (..., H, W)`` disparity applied to the mirrored swapped pair, mirrored back."""
    return predict(right.flip(-1), left.flip(-1)).flip(-1)


def lr_error(disparity_left: Tensor, disparity_right: Tensor) -> Tensor:
    """Per-pixel ``|d_L(x) - d_R(x - d_L(x))|`` for maps of shape ``(..., H, W)``; ``inf`` out of the right view."""
    width = disparity_left.shape[-1]
    x = torch.arange(width, dtype=disparity_left.dtype, device=disparity_left.device)
    target = x - disparity_left
    inside = (target >= 0) & (target <= width - 1)
    position = target.clamp(0, width - 1)
    low = position.floor().long().clamp(max=width - 2) if width > 1 else position.floor().long()
    weight = position - low
    high = (low + 1).clamp(max=width - 1)
    sampled = disparity_right.gather(-1, low) * (1 - weight) + disparity_right.gather(-1, high) * weight
    error = (disparity_left - sampled).abs()
    return error.masked_fill(~inside, float("inf"))


def unreliable_mask(error: Tensor, threshold: float = 1.0) -> Tensor:
    """``True`` where the left-right error exceeds ``threshold`` px (occluded, out of view or inconsistent)."""
    if threshold <= 0:
        raise ValueError(f"the left-right threshold must be positive, got {threshold}")
    return ~(error <= threshold)

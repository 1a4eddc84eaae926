"""Image normalisation of the model input and its inverse, shared by the presets, the losses and the figures."""

from collections.abc import Sequence

import torch
from torch import Tensor


def denormalize(images: Tensor, mean: Sequence[float] | float = 0.5, std: Sequence[float] | float = 0.5) -> Tensor:
    """Undo ``Normalize(mean, std)`` on ``(..., C, H, W)`` images, giving values in [0, 1] (clamped: float
    rounding can step just outside). Float images keep their dtype; others become float32."""
    images = images if images.is_floating_point() else images.float()
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).reshape(-1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)

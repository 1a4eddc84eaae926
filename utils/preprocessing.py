"""The evaluation input of the models, and the inverse of its normalisation.

``eval_input`` is the image path of ``presets.StereoMatchingEvalPreset`` (its ``Resize`` with float32 output
and its ``Normalize``, on the same kernels), so that the published weights' ``transforms()``
(``models.weights.StereoEvalTransform``) give the preset's images bit for bit: to float in [0, 1], resized
without antialias (bilinear by default; converting before resizing is the published protocol, resizing uint8
would round), normalised with ``mean`` and ``std``.
"""

from collections.abc import Sequence
from typing import Optional, Union

import torch
import torchvision.transforms.v2.functional as F
from torch import Tensor
from torchvision.transforms import InterpolationMode

from utils.resample import resize, target_size

Number = Union[float, Sequence[float]]


def per_channel(value: Number) -> list[float]:
    """One number for all three channels, or one per channel, as a list of floats."""
    return [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]


def normalize(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(image - mean) / std`` per channel; uint8 images are scaled to [0, 1] in the same step (float32)."""
    if image.dtype != torch.uint8:
        return F.normalize(image, list(mean), list(std))
    # uint8 is scaled to [0, 1] on the way, as to_dtype(scale=True) then normalize would do.
    std_t = torch.tensor(std, dtype=torch.float32, device=image.device).view(-1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=image.device).view(-1, 1, 1)
    image = image.to(torch.float32, memory_format=torch.contiguous_format)  # decoded images are channels-last
    return image.mul_(1.0 / (255.0 * std_t)).sub_(mean_t / std_t)


def eval_input(
    image: Tensor,
    resize_size: Optional[Union[int, Sequence[int]]],
    interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    mean: Number = 0.5,
    std: Number = 0.5,
) -> Tensor:
    """One ``(..., 3, H, W)`` image, uint8 or float in [0, 1], as the model's float32 evaluation input:
    resized to ``resize_size`` (``(H, W)``, or one number for the smaller edge; ``None`` keeps the size),
    then normalised."""
    if resize_size is not None:
        image = resize(image, target_size(resize_size, *image.shape[-2:]), interpolation, torch.float32)
    return normalize(image, per_channel(mean), per_channel(std))


def denormalize(images: Tensor, mean: Number = 0.5, std: Number = 0.5) -> Tensor:
    """Undo ``normalize(mean, std)`` on ``(..., C, H, W)`` images, giving values in [0, 1] (clamped: float
    rounding can step just outside). Float images keep their dtype; others become float32."""
    images = images if images.is_floating_point() else images.float()
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).reshape(-1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)

"""Pad images so that their size is a multiple of what the model needs, and crop predictions back."""

import torch.nn.functional as F
from torch import Tensor

PADDER_MODES = ("kitti", "sintel")


class InputPadder:
    """Replicate-pads ``(..., H, W)`` tensors up to multiples of ``divisor``.

    ``mode="sintel"`` centres the padding in both axes; ``mode="kitti"`` centres it horizontally and puts all
    vertical padding at the bottom (the two modes of torchvision's reference scripts). CREStereo needs
    ``divisor = 16 * 2**(c - 1)`` for ``c`` cascades; their fixed 8 is not enough.
    """

    def __init__(self, dims: tuple[int, ...] | list[int], mode: str = "sintel", divisor: int = 8):
        if mode not in PADDER_MODES:
            raise ValueError(f"unknown padder mode {mode!r}; choose from {list(PADDER_MODES)}")
        if divisor < 1:
            raise ValueError(f"divisor must be a positive integer, got {divisor}")
        ht, wd = dims[-2:]
        pad_ht = -ht % divisor
        pad_wd = -wd % divisor
        if mode == "sintel":
            self._pad = [pad_wd // 2, pad_wd - pad_wd // 2, pad_ht // 2, pad_ht - pad_ht // 2]
        else:
            self._pad = [pad_wd // 2, pad_wd - pad_wd // 2, 0, pad_ht]

    def pad(self, *inputs: Tensor) -> list[Tensor]:
        """Padded copies of the inputs (a no-op when nothing needs padding)."""
        if not any(self._pad):
            return list(inputs)
        return [_replicate_pad(x, self._pad) for x in inputs]

    def unpad(self, x: Tensor) -> Tensor:
        """Crop a padded tensor (any leading dimensions) back to the original size."""
        left, right, top, bottom = self._pad
        ht, wd = x.shape[-2:]
        return x[..., top : ht - bottom, left : wd - right]


def _replicate_pad(x: Tensor, pad: list[int]) -> Tensor:
    # F.pad's replicate mode needs a batch dimension, and no integer dtypes: pad (C, H, W) and bool inputs too.
    squeeze = x.dim() == 3
    dtype = x.dtype
    y = x.unsqueeze(0) if squeeze else x
    if not y.is_floating_point():
        y = y.float()
    y = F.pad(y, pad, mode="replicate").to(dtype)
    return y.squeeze(0) if squeeze else y

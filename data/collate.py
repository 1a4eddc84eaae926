"""Batching of stereo samples (the contract's ``stereo_collate``)."""

from typing import Optional, Sequence

import torch

Batch = tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]


def stereo_collate(batch: Sequence[tuple]) -> Batch:
    """Stack samples ``(images, disparities, masks)`` into ``(left, right, disparity, valid)``.

    The right-view ground truth is dropped. ``disparity`` and ``valid`` are None for test splits (every
    sample without ground truth); a batch mixing samples with and without ground truth is an error, as are
    samples of different sizes (the message names the fix).
    """
    if len(batch) == 0:
        raise ValueError("stereo_collate got an empty batch")
    sizes = {tuple(images[0].shape) for images, _, _ in batch}
    if len(sizes) > 1:
        raise ValueError(f"Samples in a batch differ in size {sorted(sizes)}: crop or resize them, or use batch size 1")
    left = torch.stack([images[0] for images, _, _ in batch])
    right = torch.stack([images[1] for images, _, _ in batch])
    has_gt = [disparities[0] is not None for _, disparities, _ in batch]
    if not any(has_gt):
        return left, right, None, None
    if not all(has_gt):
        raise ValueError("A batch mixes samples with and without ground-truth disparity")
    disparity = torch.stack([disparities[0] for _, disparities, _ in batch])
    valid = torch.stack([masks[0] for _, _, masks in batch])
    return left, right, disparity, valid

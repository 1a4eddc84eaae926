"""Training losses: the sequence loss over all refinement predictions, and optional auxiliary terms.

Predictions are `(B, C, H, W)` in pixels with channel 0 = positive disparity (C = 2 for CREStereo, whose
second channel is the vertical flow, trained towards 0). Ground truth is `(B, 1, H, W)` disparity with a
`(B, H, W)` bool mask of valid pixels. Images are the normalised model inputs.
"""

import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.preprocessing import denormalize

LOSS_AVERAGES = ("valid", "all")


@dataclass(frozen=True)
class LossConfig:
    """The terms of `training_loss` and their weights; checked on construction (ValueError naming the flag).

    The defaults are train.py's flag defaults (``--gamma`` aside: there it defaults to the model's own).

    - ``gamma`` (``--gamma``): sequence-loss weight decay over the predictions, in (0, 1]; the final one weighs 1.
    - ``average`` (``--loss-average``): ``valid`` averages the L1 over valid pixels, ``all`` over all pixels like
      torchvision's reference train.py.
    - ``flow_loss_weight`` (``--flow-loss-weight``): weight of the sequence loss.
    - ``max_disparity`` (``--max-disparity`` with ``--flow-loss-exclude-large``): ground truth at or above it is
      left out of the sequence loss; ``None`` keeps it.
    - ``consistency_weight``, ``consistency_resize_factor``: change between consecutive predictions, compared at
      this fraction of the resolution, in (0, 1].
    - ``psnr_weight``, ``smoothness_weight``, ``photometric_weight``: the image-based terms (0: off);
      ``photometric_ssim_weight`` in [0, 1] mixes SSIM into the photometric L1, and
      ``photometric_max_displacement_ratio`` (> 0) leaves out pixels whose disparity exceeds that fraction of the
      width.
    - ``norm_mean``, ``norm_std`` (``--norm-mean``, ``--norm-std``): the input normalisation, undone for the
      image-based terms.
    """

    gamma: float = 0.8
    average: str = "valid"
    flow_loss_weight: float = 1.0
    max_disparity: float | None = None
    consistency_weight: float = 0.0
    consistency_resize_factor: float = 0.25
    psnr_weight: float = 0.0
    smoothness_weight: float = 0.0
    photometric_weight: float = 0.0
    photometric_ssim_weight: float = 0.85
    photometric_max_displacement_ratio: float = 0.15
    norm_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    norm_std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ValueError(f"--gamma must be in (0, 1], got {self.gamma}.")
        if self.average not in LOSS_AVERAGES:
            raise ValueError(f"--loss-average must be one of {LOSS_AVERAGES}, got {self.average!r}.")
        weights = ("flow_loss_weight", "consistency_weight", "psnr_weight", "smoothness_weight", "photometric_weight")
        for name in weights:
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (0 turns the term off), "
                                 f"got {getattr(self, name)}.")
        if not 0 < self.consistency_resize_factor <= 1:
            raise ValueError(f"--consistency-resize-factor must be in (0, 1], got {self.consistency_resize_factor}.")
        if not 0 <= self.photometric_ssim_weight <= 1:
            raise ValueError(f"--photometric-ssim-weight must be in [0, 1], got {self.photometric_ssim_weight}.")
        if self.photometric_max_displacement_ratio <= 0:
            raise ValueError("--photometric-max-displacement-ratio must be positive (a fraction of the width), "
                             f"got {self.photometric_max_displacement_ratio}.")

    @classmethod
    def from_args(cls, args: argparse.Namespace, model_gamma: float) -> "LossConfig":
        """The loss of train.py's flags; `model_gamma` (``model.loss_gamma``) where ``--gamma`` is not given."""
        return cls(
            gamma=model_gamma if args.gamma is None else args.gamma,
            average=args.loss_average,
            flow_loss_weight=args.flow_loss_weight,
            max_disparity=args.max_disparity if args.flow_loss_exclude_large else None,
            consistency_weight=args.consistency_weight,
            consistency_resize_factor=args.consistency_resize_factor,
            psnr_weight=args.psnr_weight,
            smoothness_weight=args.smoothness_weight,
            photometric_weight=args.photometric_weight,
            photometric_ssim_weight=args.photometric_ssim_weight,
            photometric_max_displacement_ratio=args.photometric_max_displacement_ratio,
            norm_mean=tuple(args.norm_mean),
            norm_std=tuple(args.norm_std),
        )


def two_channel_target(disparity: torch.Tensor, channels: int) -> torch.Tensor:
    """Disparity `(B,1,H,W)` as the model's `channels`-channel target: zero vertical flow appended."""
    if disparity.shape[1] == channels:
        return disparity
    if disparity.shape[1] == 1 and channels == 2:
        return torch.cat([disparity, torch.zeros_like(disparity)], dim=1)
    raise ValueError(f"Cannot turn a {disparity.shape[1]}-channel target into {channels} channels.")


def sequence_weights(n: int, gamma: float) -> list[float]:
    """`gamma ** (n - 1 - i)` for prediction i: the final prediction has weight 1."""
    if not 0 < gamma <= 1:
        raise ValueError(f"--gamma must be in (0, 1], got {gamma}.")
    return [gamma ** (n - 1 - i) for i in range(n)]


def sequence_loss(
    predictions: list[torch.Tensor],
    disparity: torch.Tensor,
    valid: torch.Tensor | None,
    gamma: float = 0.8,
    average: str = "valid",
    max_disparity: float | None = None,
) -> torch.Tensor:
    """`sum_i gamma^(N-1-i) * L1(P_i, target)` over all N predictions.

    `average="valid"` divides each L1 sum by the number of valid pixels (times channels), so sparse ground
    truth is not diluted; `average="all"` divides by all pixels, valid or not, like torchvision's reference
    train.py.
    `max_disparity` additionally excludes pixels whose ground truth is at or above it.
    """
    if average not in LOSS_AVERAGES:
        raise ValueError(f"average must be one of {LOSS_AVERAGES}, got {average!r}.")
    target = two_channel_target(disparity, predictions[-1].shape[1])
    mask = torch.ones_like(disparity[:, 0], dtype=torch.bool) if valid is None else valid.bool()
    if max_disparity is not None:
        mask = mask & (disparity[:, 0] < max_disparity)
    mask = mask[:, None].to(target.dtype)
    channels = target.shape[1]
    denominator = mask.sum() * channels if average == "valid" else torch.tensor(float(mask.numel() * channels))
    denominator = denominator.clamp(min=1.0)
    weights = sequence_weights(len(predictions), gamma)
    loss = target.new_zeros(())
    for w, pred in zip(weights, predictions):
        loss = loss + w * ((pred.float() - target).abs() * mask).sum() / denominator
    return loss


def consistency_loss(predictions: list[torch.Tensor], gamma: float = 0.8, resize_factor: float = 0.25) -> torch.Tensor:
    """Penalise change between consecutive predictions: `sum_j gamma^(N-2-j) * mean((P_{j+1} - P_j)^2)`.

    Predictions are first downsampled by `resize_factor` (their values scaled with it, so they stay in pixels
    of the smaller grid). Returns a scalar; 0 for a single prediction.
    """
    if not 0 < resize_factor <= 1:
        raise ValueError(f"--consistency-resize-factor must be in (0, 1], got {resize_factor}.")
    if len(predictions) < 2:
        return predictions[-1].new_zeros(())
    preds = [p.float() for p in predictions]
    if resize_factor < 1:
        preds = [
            resize_factor * F.interpolate(p, scale_factor=resize_factor, mode="bilinear", align_corners=False)
            for p in preds
        ]
    weights = sequence_weights(len(preds) - 1, gamma)
    return sum(w * (b - a).pow(2).mean() for w, a, b in zip(weights, preds[:-1], preds[1:]))


def warp_right_to_left(right: torch.Tensor, disparity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the right image at `x - d` for every left pixel; also return where that lands inside the image.

    `right (B,C,H,W)`, `disparity (B,1,H,W)` in pixels. Pixel centres are at integer coordinates, matching
    `align_corners=True` normalisation.
    """
    b, _, h, w = right.shape
    xs = torch.arange(w, device=right.device, dtype=disparity.dtype).view(1, 1, w).expand(b, h, w)
    ys = torch.arange(h, device=right.device, dtype=disparity.dtype).view(1, h, 1).expand(b, h, w)
    x_src = xs - disparity[:, 0]
    grid = torch.stack([2 * x_src / max(w - 1, 1) - 1, 2 * ys / max(h - 1, 1) - 1], dim=-1)
    warped = F.grid_sample(right, grid.to(right.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
    in_bounds = (x_src >= 0) & (x_src <= w - 1)
    return warped, in_bounds


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, max_val: float = 1.0):
    """Per-pixel SSIM of images in [0, max_val] (Gaussian window, reflect padding), mean over channels."""
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, [window // 2] * 4, mode="reflect"), kernel, groups=x.shape[1])

    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim.mean(dim=1, keepdim=True)


def _photometric_mask(disparity, in_bounds, valid, max_displacement_ratio):
    mask = in_bounds & (disparity[:, 0].abs() < max_displacement_ratio * disparity.shape[-1])
    if valid is not None:
        mask = mask & valid.bool()
    return mask[:, None].to(disparity.dtype)


def photometric_loss(
    left: torch.Tensor,
    right: torch.Tensor,
    disparity: torch.Tensor,
    valid: torch.Tensor | None = None,
    ssim_weight: float = 0.85,
    max_displacement_ratio: float = 0.15,
) -> torch.Tensor:
    """`(1 - w) * L1 + w * (1 - SSIM) / 2` between the left image and the right one warped by the disparity.

    Images in [0, 1]. Averaged over pixels that are valid, whose match lies inside the right image and whose
    |disparity| is below `max_displacement_ratio * W`.
    """
    warped, in_bounds = warp_right_to_left(right, disparity)
    mask = _photometric_mask(disparity, in_bounds, valid, max_displacement_ratio)
    l1 = (warped - left).abs().mean(dim=1, keepdim=True)
    dssim = (1 - ssim_map(warped, left)).clamp(0, 2) / 2
    per_pixel = (1 - ssim_weight) * l1 + ssim_weight * dssim
    return (per_pixel * mask).sum() / mask.sum().clamp(min=1.0)


def psnr_loss(
    left: torch.Tensor,
    right: torch.Tensor,
    disparity: torch.Tensor,
    valid: torch.Tensor | None = None,
    max_displacement_ratio: float = 0.15,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Negative PSNR (dB) of the right image warped onto the left one, images in [0, 1].

    The mean squared error runs over the same pixels as the photometric loss, per sample, then the
    batch mean is taken; `eps` keeps identical images finite (at most 60 dB).
    """
    warped, in_bounds = warp_right_to_left(right, disparity)
    mask = _photometric_mask(disparity, in_bounds, valid, max_displacement_ratio)
    sq = (warped - left).pow(2).mean(dim=1, keepdim=True) * mask
    mse = sq.sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp(min=1.0)
    return (10 * torch.log10(mse + eps)).mean()


def smoothness_loss(image: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness (monodepth2): `|d_x d'| exp(-|d_x I|) + |d_y d'| exp(-|d_y I|)`.

    `d'` is the disparity divided by its per-sample mean, so the term does not depend on the disparity scale;
    image gradients (mean over channels) lower the penalty at image edges, where depth edges are expected.
    """
    d = disparity / disparity.mean(dim=(2, 3), keepdim=True).abs().clamp(min=1e-6)
    dx = (d[..., :, 1:] - d[..., :, :-1]).abs()
    dy = (d[..., 1:, :] - d[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


def training_loss(
    predictions: list[torch.Tensor],
    left: torch.Tensor,
    right: torch.Tensor,
    disparity: torch.Tensor,
    valid: torch.Tensor | None,
    config: LossConfig = LossConfig(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total training loss and its terms (detached, for logging). Auxiliary terms are added only if weighted.

    The image-based terms average over the predictions, each using its disparity channel.
    """
    c = config
    loss = c.flow_loss_weight * sequence_loss(predictions, disparity, valid, c.gamma, c.average, c.max_disparity)
    terms = {"sequence": loss.detach()}
    if c.consistency_weight > 0:
        term = c.consistency_weight * consistency_loss(predictions, c.gamma, c.consistency_resize_factor)
        terms["consistency"] = term.detach()
        loss = loss + term
    if c.photometric_weight > 0 or c.psnr_weight > 0 or c.smoothness_weight > 0:
        left01 = denormalize(left.float(), c.norm_mean, c.norm_std)
        right01 = denormalize(right.float(), c.norm_mean, c.norm_std)
        disps = [p[:, :1].float() for p in predictions]
        n = len(disps)
        ratio = c.photometric_max_displacement_ratio
        aux = {
            "photometric": (c.photometric_weight, lambda d: photometric_loss(
                left01, right01, d, valid, c.photometric_ssim_weight, ratio)),
            "psnr": (c.psnr_weight, lambda d: psnr_loss(left01, right01, d, valid, ratio)),
            "smoothness": (c.smoothness_weight, lambda d: smoothness_loss(left01, d)),
        }
        for name, (weight, fn) in aux.items():
            if weight > 0:
                term = weight * sum(fn(d) for d in disps) / n
                terms[name] = term.detach()
                loss = loss + term
    return loss, terms

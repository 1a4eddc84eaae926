"""Joint stereo transforms on ``(images, disparities, masks)``, each a ``(left, right)`` pair.

Every transform is an ``nn.Module`` with ``forward(images, disparities, masks) -> (images, disparities, masks)``.
Images are ``(C, H, W)`` uint8 or float tensors, disparities float ``(1, H, W)``, masks bool ``(H, W)``; any
right-view entry, and the left disparity and mask of test splits, may be ``None``. Random draws come only
from torch's global RNG, so ``torch.random.fork_rng()`` + ``torch.manual_seed`` reproduces a sample.

Geometry rules kept by every transform: both views get the same resampling; disparity is multiplied by the
horizontal scale factor; a horizontal flip swaps the views (see ``RandomHorizontalFlip``).
"""

import math
from collections.abc import Sequence
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode

from utils.preprocessing import normalize, per_channel
from utils.resample import nearest_resize, resize, resize_window, target_size

Pair = tuple[Optional[Tensor], Optional[Tensor]]
Sample = tuple[tuple[Tensor, Tensor], Pair, Pair]

INTERPOLATION_TYPES = ("bilinear", "bicubic", "mixed")
SCALING_TYPES = ("linear", "exponential")


def _check_interpolation(interpolation_type: str) -> str:
    if interpolation_type not in INTERPOLATION_TYPES:
        raise ValueError(
            f"Unknown interpolation type {interpolation_type!r}: choose one of {', '.join(INTERPOLATION_TYPES)}"
        )
    return interpolation_type


def _draw_interpolation(interpolation_type: str) -> InterpolationMode:
    """Resolve ``mixed`` to bilinear or bicubic with one torch draw."""
    if interpolation_type == "mixed":
        return InterpolationMode.BICUBIC if torch.rand(()) < 0.5 else InterpolationMode.BILINEAR
    return InterpolationMode(interpolation_type)


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _randint(low: int, high: int) -> int:
    """Uniform integer in ``[low, high]``, both bounds included."""
    return int(torch.randint(low, high + 1, ()))


def _check_range(name: str, value: Sequence[float], minimum: float = 0.0) -> tuple[float, float]:
    if len(value) != 2 or not (minimum <= value[0] <= value[1]):
        raise ValueError(f"{name} must be two numbers {minimum} <= min <= max, got {tuple(value)}")
    return float(value[0]), float(value[1])


def _check_prob(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return float(p)


class ValidateModelInput(nn.Module):
    """Check shapes and dtypes of a sample before it reaches the model; raise a clear ``ValueError``."""

    def forward(self, images, disparities, masks) -> Sample:
        left, right = images
        if left.ndim != 3 or left.shape != right.shape:
            raise ValueError(f"Left and right images must be (C, H, W) of one shape: {left.shape} vs {right.shape}")
        size = left.shape[-2:]
        for side, disp, mask in zip(("left", "right"), disparities, masks):
            if disp is not None and (disp.ndim != 3 or disp.shape[0] != 1 or disp.shape[-2:] != size):
                raise ValueError(f"The {side} disparity must have shape (1, {size[0]}, {size[1]}), got {disp.shape}")
            if mask is not None and (mask.dtype != torch.bool or mask.shape != size):
                raise ValueError(f"The {side} mask must be bool of shape {tuple(size)}, got {mask.dtype} {mask.shape}")
        return images, disparities, masks


class ConvertImageDtype(nn.Module):
    """Convert both images to ``dtype`` (uint8 -> float scales to [0, 1])."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, images, disparities, masks) -> Sample:
        images = tuple(F.to_dtype(img, self.dtype, scale=True).contiguous() for img in images)
        return images, disparities, masks


class ConvertToGrayscale(nn.Module):
    """Grayscale images with 3 identical channels, so that the model input shape is unchanged."""

    def forward(self, images, disparities, masks) -> Sample:
        return tuple(F.rgb_to_grayscale(img, num_output_channels=3) for img in images), disparities, masks


class Normalize(nn.Module):
    """``(img - mean) / std`` per channel; uint8 images are scaled to [0, 1] in the same step."""

    def __init__(self, mean: Union[float, Sequence[float]] = 0.5, std: Union[float, Sequence[float]] = 0.5) -> None:
        super().__init__()
        self.mean, self.std = per_channel(mean), per_channel(std)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def forward(self, images, disparities, masks) -> Sample:
        return tuple(normalize(img, self.mean, self.std) for img in images), disparities, masks


class MakeValidDisparityMask(nn.Module):
    """AND each given mask with ``finite & disp > 0`` and, if ``max_disparity`` is set, ``disp < max_disparity``.

    A side whose disparity is ``None`` keeps mask ``None``; a missing mask beside a disparity starts all-True.
    """

    def __init__(self, max_disparity: Optional[float] = None) -> None:
        super().__init__()
        if max_disparity is not None and max_disparity <= 0:
            raise ValueError(f"max_disparity must be positive or None, got {max_disparity}")
        self.max_disparity = max_disparity

    def forward(self, images, disparities, masks) -> Sample:
        out = []
        for disp, mask in zip(disparities, masks):
            if disp is None:
                out.append(None)
                continue
            # NaN fails both comparisons, +inf fails the upper bound.
            limit = math.inf if self.max_disparity is None else self.max_disparity
            valid = (disp[0] > 0).logical_and_(disp[0] < limit)
            out.append(valid if mask is None else valid.logical_and_(mask))
        return images, disparities, tuple(out)


class Resize(nn.Module):
    """Resize both views to a fixed size; disparity is multiplied by ``new_W / old_W``.

    Images use ``interpolation_type`` without antialias. The ground truth is resampled by
    ``resample_ground_truth`` with ``gt_resampling``: ``"published"`` (the evaluation protocol of
    torchvision's published numbers), ``"mask-aware"`` (training) or ``"sparse"`` (KITTI-like maps).

    ``dtype`` converts the images as ``ConvertImageDtype`` would before resizing; bilinear resizing then
    reads only the source rows it needs, which avoids converting the full-resolution images.
    """

    def __init__(
        self,
        size: Union[int, Sequence[int]],
        interpolation_type: str = "bilinear",
        gt_resampling: str = "published",
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        target_size(size, 1, 1)
        self.size = size
        self.interpolation_type = _check_interpolation(interpolation_type)
        self.gt_resampling = _check_gt_resampling(gt_resampling)
        self.dtype = dtype

    def forward(self, images, disparities, masks) -> Sample:
        mode = _draw_interpolation(self.interpolation_type)
        height, width = images[0].shape[-2:]
        new_h, new_w = target_size(self.size, height, width)
        images = tuple(resize(img, (new_h, new_w), mode, self.dtype) for img in images)
        out_d, out_m = [], []
        for disp, mask in zip(disparities, masks):
            if disp is not None:
                disp, mask = resample_ground_truth(disp, mask, (new_h, new_w), self.gt_resampling)
            out_d.append(disp)
            out_m.append(mask)
        return images, tuple(out_d), tuple(out_m)


def scatter_sparse_disparity(
    disp: Tensor,
    mask: Tensor,
    src_offset: tuple[int, int],
    src_size: tuple[int, int],
    dst_size: tuple[int, int],
    crop_offset: tuple[int, int],
    crop_size: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Move each valid point of a sparse map into a resized and cropped grid, without interpolation.

    The region ``src_offset + [0, src_size)`` of the source is resized to ``dst_size`` (pixel centres map as
    ``(i + 0.5) * s - 0.5``, rounded), then ``crop_size`` is cut at ``crop_offset``. Points landing outside the
    crop are dropped; where several land on one pixel the largest disparity (the nearest surface) wins.
    Values are multiplied by the horizontal scale. Returns ``(disp (1, h, w), mask (h, w))``.
    """
    (r0, c0), (rh, rw), (dh, dw), (y0, x0), (ch, cw) = src_offset, src_size, dst_size, crop_offset, crop_size
    sy, sx = dh / rh, dw / rw
    region_mask = mask[r0 : r0 + rh, c0 : c0 + rw]
    rows, cols = torch.nonzero(region_mask, as_tuple=True)
    values = disp[0, r0 : r0 + rh, c0 : c0 + rw][rows, cols] * sx
    ty = torch.round((rows.to(torch.float64) + 0.5) * sy - 0.5).long() - y0
    tx = torch.round((cols.to(torch.float64) + 0.5) * sx - 0.5).long() - x0
    inside = (ty >= 0) & (ty < ch) & (tx >= 0) & (tx < cw)
    flat = ty[inside] * cw + tx[inside]
    out = torch.zeros(ch * cw, dtype=disp.dtype, device=disp.device)
    out.scatter_reduce_(0, flat, values[inside], reduce="amax", include_self=False)
    out_mask = torch.zeros(ch * cw, dtype=torch.bool, device=disp.device)
    out_mask[flat] = True
    return out.view(1, ch, cw), out_mask.view(ch, cw)


GT_RESAMPLINGS = ("published", "mask-aware", "sparse")


def _check_gt_resampling(method: str) -> str:
    if method not in GT_RESAMPLINGS:
        raise ValueError(f"Unknown ground-truth resampling {method!r}: choose one of {', '.join(GT_RESAMPLINGS)}")
    return method


def resample_ground_truth(
    disp: Tensor,
    mask: Optional[Tensor],
    size: Sequence[int],
    method: str,
    offset: Sequence[int] = (0, 0),
    window: Optional[Sequence[int]] = None,
) -> tuple[Tensor, Tensor]:
    """Resize a ``(1, H, W)`` disparity and its ``(H, W)`` mask to ``size``, keep ``window`` at ``offset``.

    The one place that decides how ground truth is resampled; disparity is multiplied by ``size[1] / W``.
    ``method``:

    - ``"published"``: torchvision's evaluation protocol. The raw map is resized bilinearly without
      antialias, so pixels that a mask excludes but that carry a true disparity (Sintel occlusions, ETH3D's
      occluded pixels) are resampled with their values; only pixels without any ground truth count as 0
      (non-finite values, and the 0 that the readers store there: KITTI, InStereo2K, Middlebury's inf). The
      mask is nearest-resized; ``MakeValidDisparityMask`` later ANDs it with ``disp > 0``.
    - ``"mask-aware"``: for training. ``d * m`` and ``m`` are resampled and divided; an output pixel is valid
      only where every source pixel it interpolates is valid, so neither invalid nor masked values bleed in
      and a fully valid map stays fully valid. Invalid outputs are 0.
    - ``"sparse"``: valid points are moved to their nearest output pixel, never blended
      (``scatter_sparse_disparity``).

    A missing mask means ``finite & disp > 0``. Returns ``(disp (1, h, w), mask (h, w))`` as float32 / bool.
    """
    _check_gt_resampling(method)
    height, width = disp.shape[-2:]
    window = tuple(size) if window is None else tuple(window)
    if mask is None:
        mask = torch.isfinite(disp[0]) & (disp[0] > 0)
    if method == "sparse":
        return scatter_sparse_disparity(disp, mask, (0, 0), (height, width), tuple(size), tuple(offset), window)
    scale_x = size[1] / width
    if method == "published":
        out = resize_window(disp, size, offset, window)
        if not bool(torch.isfinite(out).all()):  # a non-finite source pixel was read: it counts as 0
            out = resize_window(disp, size, offset, window, valid=torch.isfinite(disp[0]))
        (y0, x0), (win_h, win_w) = offset, window
        return out.mul_(scale_x), nearest_resize(mask, size)[y0 : y0 + win_h, x0 : x0 + win_w]
    if bool(mask.all()):  # e.g. SceneFlow: no validity work
        out = resize_window(disp, size, offset, window)
        return out.mul_(scale_x), torch.ones(window, dtype=torch.bool, device=mask.device)
    weight = resize_window(mask[None], size, offset, window)
    valid = weight[0] > 1.0 - 1e-4
    out = resize_window(disp, size, offset, window, valid=mask).div_(weight.clamp_(min=1e-4))
    return out.mul_(scale_x).masked_fill_(~valid[None], 0.0), valid


class ScaleDraw(NamedTuple):
    """What one `RandomRescaleAndCrop` call did: the scale it drew, the scale it applied (raised so that the
    crop fits), its input size and the size it rescaled to before cropping."""

    drawn: float
    applied: float
    input_size: tuple[int, int]
    rescaled_size: tuple[int, int]


class RandomRescaleAndCrop(nn.Module):
    """Random scale then a random ``crop_size`` window, computed only for the window.

    Scale sampling follows the ``--scale-range`` of torchvision's reference scripts: ``exponential`` gives
    ``s = 2 ** U(lo, hi)``, ``linear`` gives ``s = U(lo, hi)``. With probability ``1 - rescale_prob`` the
    scale is 1. The scale is then raised to the minimum that makes the crop fit (so images smaller than the
    crop are upscaled), and the crop offset is uniform over every position, both ends included (a crop equal
    to the image is fine).

    The result equals resizing to ``round(H * s), round(W * s)`` without antialias (like the cv2 linear resize
    of the original CREStereo and RAFT-Stereo code) and cropping, but only the window is computed. Images use
    ``interpolation_type``. Ground truth goes through ``resample_ground_truth``: ``"mask-aware"`` for dense
    maps (an output pixel is valid only if every source pixel it interpolates is valid), ``"sparse"`` (points
    moved, never blended) with ``sparse_gt``. Disparity is multiplied by the horizontal scale.
    ``last_draw`` (a `ScaleDraw`) records the latest call, for analyses such as disparity_eda.py.
    """

    def __init__(
        self,
        crop_size: Sequence[int],
        scale_range: Sequence[float] = (-0.2, 0.5),
        rescale_prob: float = 1.0,
        scaling_type: str = "exponential",
        interpolation_type: str = "bilinear",
        sparse_gt: bool = False,
    ) -> None:
        super().__init__()
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"crop_size must be two positive numbers (H, W), got {tuple(crop_size)}")
        if scaling_type not in SCALING_TYPES:
            raise ValueError(f"Unknown scaling type {scaling_type!r}: choose linear or exponential")
        minimum = 0.0 if scaling_type == "linear" else -math.inf
        self.scale_range = _check_range("scale_range", scale_range, minimum)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.rescale_prob = _check_prob("rescale_prob", rescale_prob)
        self.scaling_type = scaling_type
        self.interpolation_type = _check_interpolation(interpolation_type)
        self.sparse_gt = sparse_gt
        self.last_draw: ScaleDraw | None = None

    def _draw_scale(self) -> float:
        value = _uniform(*self.scale_range)
        scale = 2.0**value if self.scaling_type == "exponential" else value
        return scale if torch.rand(()) < self.rescale_prob else 1.0

    def forward(self, images, disparities, masks) -> Sample:
        mode = _draw_interpolation(self.interpolation_type)
        height, width = images[0].shape[-2:]
        ch, cw = self.crop_size
        drawn = self._draw_scale()
        scale = max(drawn, ch / height, cw / width)
        new_h, new_w = max(ch, round(height * scale)), max(cw, round(width * scale))
        self.last_draw = ScaleDraw(drawn, scale, (height, width), (new_h, new_w))
        y0, x0 = _randint(0, new_h - ch), _randint(0, new_w - cw)

        full, offset, window = (new_h, new_w), (y0, x0), (ch, cw)
        images = tuple(_like(resize_window(img, full, offset, window, mode), img) for img in images)
        method = "sparse" if self.sparse_gt else "mask-aware"
        out_d, out_m = [], []
        for disp, mask in zip(disparities, masks):
            if disp is not None:
                disp, mask = resample_ground_truth(disp, mask, full, method, offset, window)
            out_d.append(disp)
            out_m.append(mask)
        return images, tuple(out_d), tuple(out_m)


def _like(out: Tensor, img: Tensor) -> Tensor:
    """Cast a float result back to the input's dtype (uint8 is rounded and clamped, as ``F.resize`` does)."""
    if img.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(img.dtype)


class AsymmetricColorJitter(nn.Module):
    """Colour jitter drawn independently per view with probability ``p``, otherwise shared by both views.

    ``brightness``, ``contrast``, ``saturation``: a number ``v`` means factors in ``[max(0, 1 - v), 1 + v]``,
    a pair means ``[min, max]``; 0 disables the op. ``hue``: ``v`` means ``[-v, v]`` (``v <= 0.5``). The ops
    run in a random order, as in torchvision's ColorJitter.
    """

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, p: float = 0.2) -> None:
        super().__init__()
        self.brightness = self._factor_range("brightness", brightness)
        self.contrast = self._factor_range("contrast", contrast)
        self.saturation = self._factor_range("saturation", saturation)
        self.hue = self._hue_range(hue)
        self.p = _check_prob("asymmetric jitter probability", p)

    @staticmethod
    def _factor_range(name: str, value) -> Optional[tuple[float, float]]:
        if isinstance(value, (int, float)):
            if value < 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
            value = (max(0.0, 1.0 - value), 1.0 + value)
        low, high = _check_range(name, value)
        return None if low == high == 1.0 else (low, high)

    @staticmethod
    def _hue_range(value) -> Optional[tuple[float, float]]:
        if isinstance(value, (int, float)):
            value = (-abs(value), abs(value))
        low, high = _check_range("hue", value, minimum=-0.5)
        if high > 0.5:
            raise ValueError(f"hue must lie in [-0.5, 0.5], got {value}")
        return None if low == high == 0.0 else (low, high)

    def _jitter(self, img: Tensor) -> Tensor:
        ops = [
            (F.adjust_brightness, self.brightness),
            (F.adjust_contrast, self.contrast),
            (F.adjust_saturation, self.saturation),
            (F.adjust_hue, self.hue),
        ]
        for i in torch.randperm(4).tolist():
            fn, bounds = ops[i]
            if bounds is not None:
                img = fn(img, _uniform(*bounds))
        return img

    def forward(self, images, disparities, masks) -> Sample:
        if torch.rand(()) < self.p:
            images = tuple(self._jitter(img) for img in images)
        else:
            images = tuple(self._jitter(torch.stack(images)).unbind(0))
        return images, disparities, masks


class AsymmetricGammaAdjust(nn.Module):
    """Gamma ``out = gain * in ** gamma``: with probability ``p`` one gamma per view, otherwise one shared."""

    def __init__(self, p: float = 0.2, gamma_range: Sequence[float] = (0.8, 1.2), gain: float = 1.0) -> None:
        super().__init__()
        self.p = _check_prob("gamma asymmetry probability", p)
        self.gamma_range = _check_range("gamma_range", gamma_range)
        if self.gamma_range[0] <= 0:
            raise ValueError(f"gamma_range must be positive, got {self.gamma_range}")
        self.gain = gain

    def forward(self, images, disparities, masks) -> Sample:
        if torch.rand(()) < self.p:
            images = tuple(F.adjust_gamma(img, _uniform(*self.gamma_range), self.gain) for img in images)
        else:
            gamma = _uniform(*self.gamma_range)
            images = tuple(F.adjust_gamma(img, gamma, self.gain) for img in images)
        return images, disparities, masks


class RandomSpatialShift(nn.Module):
    """With probability ``p``, rotate the right view by a small angle and shift it vertically.

    Simulates imperfect rectification: angle ~ U(-max_angle, max_angle) degrees about a random pixel, vertical
    shift ~ U(-max_px_shift, max_px_shift). Resampled with ``grid_sample`` (bilinear or bicubic), borders
    replicated. Ground truth is left as is, as in torchvision's reference scripts.
    """

    def __init__(
        self, p: float = 0.5, max_angle: float = 0.1, max_px_shift: float = 2.0, interpolation_type: str = "bilinear"
    ) -> None:
        super().__init__()
        self.p = _check_prob("spatial shift probability", p)
        if max_angle < 0 or max_px_shift < 0:
            raise ValueError(f"max_angle and max_px_shift must be non-negative, got {max_angle}, {max_px_shift}")
        self.max_angle = max_angle
        self.max_px_shift = max_px_shift
        self.interpolation_type = _check_interpolation(interpolation_type)

    def forward(self, images, disparities, masks) -> Sample:
        mode = _draw_interpolation(self.interpolation_type)
        if not torch.rand(()) < self.p:
            return images, disparities, masks
        left, right = images
        height, width = right.shape[-2:]
        angle = math.radians(_uniform(-self.max_angle, self.max_angle))
        shift = _uniform(-self.max_px_shift, self.max_px_shift)
        cy, cx = _randint(0, height - 1), _randint(0, width - 1)
        return (left, shift_image(right, angle, shift, (cy, cx), mode)), disparities, masks


def shift_image(img: Tensor, angle: float, shift: float, center: tuple[int, int], mode: InterpolationMode) -> Tensor:
    """Rotate ``img`` by ``angle`` radians about ``center`` (y, x), then move it down by ``shift`` pixels."""
    height, width = img.shape[-2:]
    cos, sin = math.cos(angle), math.sin(angle)
    ys = torch.arange(height, dtype=torch.float32, device=img.device).view(-1, 1) - center[0] - shift
    xs = torch.arange(width, dtype=torch.float32, device=img.device).view(1, -1) - center[1]
    # Inverse mapping: output pixel p comes from R(-angle) (p - c - t) + c.
    src_x = cos * xs + sin * ys + center[1]
    src_y = -sin * xs + cos * ys + center[0]
    grid = torch.stack([(2 * src_x + 1) / width - 1, (2 * src_y + 1) / height - 1], dim=-1)
    out = nnf.grid_sample(
        img[None].float(), grid[None], mode=mode.value, padding_mode="border", align_corners=False
    )[0]
    return _like(out, img)


class RandomHorizontalFlip(nn.Module):
    """With probability ``p``, mirror both views and swap them, so that the result is again a stereo pair.

    Mirrored, the right view becomes a left view (its scene lies to the right of the mirrored left view), and
    its ground truth is the right-view disparity. A sample without right-view disparity (Sintel, ETH3D,
    KITTI 2012) is therefore never flipped: the new left view would have no ground truth, and mirroring
    without the swap gives negative disparities. Use ``RandomVerticalFlip`` for those datasets.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _check_prob("horizontal flip probability", p)

    def forward(self, images, disparities, masks) -> Sample:
        if disparities[0] is not None and disparities[1] is None:
            return images, disparities, masks
        if not torch.rand(()) < self.p:
            return images, disparities, masks

        def flip(t: Optional[Tensor]) -> Optional[Tensor]:
            return None if t is None else t.flip(-1)

        left, right = images
        return (
            (flip(right), flip(left)),
            (flip(disparities[1]), flip(disparities[0])),
            (flip(masks[1]), flip(masks[0])),
        )


class RandomVerticalFlip(nn.Module):
    """With probability ``p``, flip both views upside down (rows stay epipolar lines; no swap needed)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _check_prob("vertical flip probability", p)

    def forward(self, images, disparities, masks) -> Sample:
        if not torch.rand(()) < self.p:
            return images, disparities, masks

        def flip(pair):
            return tuple(None if t is None else t.flip(-2) for t in pair)

        return flip(images), flip(disparities), flip(masks)


def _draw_box(px_range: tuple[int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """Random ``(y, x, h, w)`` box with sides in ``px_range`` (clipped to the image), fully inside it."""
    h = min(_randint(*px_range), height)
    w = min(_randint(*px_range), width)
    return _randint(0, height - h), _randint(0, width - w), h, w


def _check_px_range(name: str, px_range: Sequence[int]) -> tuple[int, int]:
    low, high = _check_range(name, px_range)
    return int(low), int(high)


class RandomOcclusion(nn.Module):
    """With probability ``p``, fill one box of the right view with its own mean colour.

    Placed after the horizontal flip so that only the (final) right view is occluded. Ground truth is kept:
    the left view still sees those points.
    """

    def __init__(self, p: float = 0.5, occlusion_px_range: Sequence[int] = (50, 100)) -> None:
        super().__init__()
        self.p = _check_prob("occlusion probability", p)
        self.occlusion_px_range = _check_px_range("occlusion_px_range", occlusion_px_range)

    def forward(self, images, disparities, masks) -> Sample:
        if not torch.rand(()) < self.p:
            return images, disparities, masks
        left, right = images
        y, x, h, w = _draw_box(self.occlusion_px_range, *right.shape[-2:])
        right = right.clone()
        patch = right[:, y : y + h, x : x + w]
        patch[:] = patch.float().mean(dim=(1, 2), keepdim=True).to(right.dtype)
        return (left, right), disparities, masks


class RandomErase(nn.Module):
    """With probability ``p``, erase 1 to ``max_erase`` boxes of the right view to ``value``.

    Like ``RandomOcclusion`` it perturbs only the second view, after the flip: the left view is the one
    that the ground truth describes, so it and its disparity and mask stay untouched. The erased pixels are
    marked invalid in the right-view mask (the right view no longer shows them).
    """

    def __init__(
        self, p: float = 0.5, erase_px_range: Sequence[int] = (50, 100), value: float = 0, max_erase: int = 2
    ) -> None:
        super().__init__()
        self.p = _check_prob("erase probability", p)
        self.erase_px_range = _check_px_range("erase_px_range", erase_px_range)
        if max_erase < 1:
            raise ValueError(f"max_erase (--erase-num-repeats) must be at least 1, got {max_erase}")
        self.value = value
        self.max_erase = max_erase

    def forward(self, images, disparities, masks) -> Sample:
        if not torch.rand(()) < self.p:
            return images, disparities, masks
        left, right = images
        right = right.clone()
        right_mask = None if masks[1] is None else masks[1].clone()
        for _ in range(_randint(1, self.max_erase)):
            y, x, h, w = _draw_box(self.erase_px_range, *right.shape[-2:])
            right[..., y : y + h, x : x + w] = self.value
            if right_mask is not None:
                right_mask[y : y + h, x : x + w] = False
        return (left, right), disparities, (masks[0], right_mask)


class Compose(nn.Module):
    """Apply transforms in sequence, without autograd (``no_grad``: the outputs stay usable in training)."""

    def __init__(self, transforms: Sequence[nn.Module]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    @torch.no_grad()
    def forward(self, images, disparities, masks) -> Sample:
        for t in self.transforms:
            images, disparities, masks = t(images, disparities, masks)
        return images, disparities, masks

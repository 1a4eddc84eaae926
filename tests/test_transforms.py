"""Joint stereo transforms: geometry, ground-truth resampling, probabilities and input checks."""

import math

import pytest
import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F

import transforms as T
from utils import resample

HEIGHT, WIDTH = 96, 128
# Slanted plane d = A + B x + C y (left view), so that disparity varies along both axes.
PLANE_A, PLANE_B, PLANE_C = 8.0, 0.08, 0.05


def _texture(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smooth RGB texture in [0, 1], wavelengths long enough for bilinear resampling at scale 0.6."""
    channels = [
        0.5 + 0.25 * torch.sin(2 * math.pi * (x / 29.0 + y / 41.0)) + 0.15 * torch.cos(2 * math.pi * x / 23.0),
        0.5 + 0.3 * torch.sin(2 * math.pi * (x / 37.0 - y / 31.0) + 1.0),
        0.5 + 0.2 * torch.cos(2 * math.pi * (x / 19.0 + y / 53.0)) + 0.1 * torch.sin(2 * math.pi * y / 27.0),
    ]
    return torch.stack(channels).clamp(0, 1)


def stereo_pair(height: int = HEIGHT, width: int = WIDTH, dtype: torch.dtype = torch.float32):
    """Sample whose right view is the left view warped by a known plane, with both view disparities."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    left = _texture(x, y)
    # Right pixel u sees the left point x with x - d(x) = u, i.e. x = (u + A + C y) / (1 - B).
    x_of_u = (x + PLANE_A + PLANE_C * y) / (1 - PLANE_B)
    right = _texture(x_of_u, y)
    disp_left = PLANE_A + PLANE_B * x + PLANE_C * y
    disp_right = PLANE_A + PLANE_B * x_of_u + PLANE_C * y
    images = tuple(img.float() if dtype == torch.float32 else (img * 255).round().to(dtype) for img in (left, right))
    disps = (disp_left.float()[None], disp_right.float()[None])
    masks = (torch.ones(height, width, dtype=torch.bool), torch.ones(height, width, dtype=torch.bool))
    return images, disps, masks


def warp_error(images, disparities, masks, min_fraction: float = 0.2) -> float:
    """Mean |left - right sampled at x - d| over valid pixels that land inside the right view."""
    left, right = (img.float() for img in images)
    disp, mask = disparities[0][0], masks[0]
    height, width = disp.shape
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    src_x = x - disp
    grid = torch.stack([(2 * src_x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)
    warped = nnf.grid_sample(right[None], grid[None], mode="bilinear", align_corners=False)[0]
    use = mask & (src_x >= 1) & (src_x <= width - 2) & (y >= 1) & (y <= height - 2)
    assert use.sum() > min_fraction * use.numel(), "too few pixels to check"
    return (left - warped).abs().mean(0)[use].mean().item()


def test_warp_error_detects_broken_geometry():
    images, disps, masks = stereo_pair()
    assert warp_error(images, disps, masks) < 0.01
    assert warp_error(images, (disps[0] * 1.15, None), masks) > 0.04
    mirrored = tuple(img.flip(-1) for img in images)
    assert warp_error(mirrored, tuple(d.flip(-1) for d in disps), masks) > 0.04


@pytest.mark.parametrize("size", [(60, 100), (150, 170), [72]])
def test_resize_keeps_geometry_and_scales_disparity(size):
    sample = stereo_pair()
    images, disps, masks = T.Resize(size)(*sample)
    new_h, new_w = images[0].shape[-2:]
    if len(size) == 1:
        assert (new_h, new_w) == (72, 96)
    else:
        assert (new_h, new_w) == tuple(size)
    assert disps[0].shape == (1, new_h, new_w) and masks[0].shape == (new_h, new_w)
    assert warp_error(images, disps, masks) < 0.02
    expected = F.resize(sample[1][0], [new_h, new_w], antialias=False) * new_w / WIDTH
    torch.testing.assert_close(disps[0], expected, atol=1e-4, rtol=0)


# A 40x56 window is small enough for the gather path of ``resize_window``, 48x64 takes the full-resize path.
@pytest.mark.parametrize("crop", [(48, 64), (40, 56)])
@pytest.mark.parametrize("scaling_type, scale_range", [("linear", (0.6, 1.0)), ("exponential", (-0.2, 0.5))])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_rescale_and_crop_keeps_geometry(scaling_type, scale_range, interpolation, crop):
    transform = T.RandomRescaleAndCrop(crop, scale_range, 1.0, scaling_type, interpolation)
    for seed in range(3):
        torch.manual_seed(seed)
        images, disps, masks = transform(*stereo_pair())
        assert images[0].shape == (3, *crop) and disps[1].shape == (1, *crop) and masks[1].shape == crop
        assert warp_error(images, disps, masks) < 0.02
        # The right view's disparity is consistent too: warp the swapped pair.
        mirrored = tuple(t.flip(-1) for t in images[::-1])
        assert warp_error(mirrored, tuple(d.flip(-1) for d in disps[::-1]), masks[::-1]) < 0.02


def _ramp_sample(height: int, width: int):
    """Images holding their own pixel coordinates (channel 0 = row, 1 = col), so resampling is measurable."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    img = torch.stack([y, x, torch.zeros_like(x)])
    disp, mask = torch.full((1, height, width), 10.0), torch.ones(height, width, dtype=torch.bool)
    return (img, img.clone()), (disp, None), (mask, None)


def _measured_scale(img: torch.Tensor) -> tuple[float, float]:
    """Output pixels per source pixel, from the coordinate ramp (interior, away from clamped borders)."""
    sy = 1.0 / (img[0, 2:-2, 5][1:] - img[0, 2:-2, 5][:-1]).mean().item()
    sx = 1.0 / (img[1, 5, 2:-2][1:] - img[1, 5, 2:-2][:-1]).mean().item()
    return sy, sx


@pytest.mark.parametrize("scaling_type, scale_range, low, high", [
    ("linear", (0.6, 1.0), 0.6, 1.0),
    ("exponential", (-0.2, 0.5), 2 ** -0.2, 2 ** 0.5),
])
def test_rescale_scale_range_semantics(scaling_type, scale_range, low, high):
    transform = T.RandomRescaleAndCrop((16, 16), scale_range, 1.0, scaling_type)
    sample = _ramp_sample(100, 120)
    scales = []
    for seed in range(40):
        torch.manual_seed(seed)
        images, disps, masks = transform(*sample)
        sy, sx = _measured_scale(images[0])
        assert sy == pytest.approx(sx, rel=0.02)  # sizes are rounded separately
        # Disparity is multiplied by the horizontal scale.
        torch.testing.assert_close(disps[0], torch.full_like(disps[0], 10.0 * sx), rtol=0.01, atol=0)
        scales.append(sx)
    assert low - 0.01 <= min(scales) < low + 0.1 * (high - low)
    assert high - 0.1 * (high - low) < max(scales) <= high + 0.01


def test_rescale_minimum_scale_fits_crop_and_offsets_are_inclusive():
    # Image equal to the crop: no crash, identity geometry when the drawn scale is below 1.
    transform = T.RandomRescaleAndCrop((40, 50), (0.5, 0.9), 1.0, "linear")
    images, disps, masks = transform(*_ramp_sample(40, 50))
    torch.testing.assert_close(images[0], _ramp_sample(40, 50)[0][0])
    # Image smaller than the crop and no rescale drawn: upscaled to fit.
    images, _, _ = T.RandomRescaleAndCrop((40, 50), (0.5, 0.9), 0.0, "linear")(*_ramp_sample(30, 30))
    assert images[0].shape == (3, 40, 50)
    # One pixel larger than the crop, no rescale: both offsets 0 and 1 occur on each axis.
    transform = T.RandomRescaleAndCrop((40, 50), (0.5, 0.9), 0.0, "linear")
    offsets = set()
    for seed in range(40):
        torch.manual_seed(seed)
        images, _, _ = transform(*_ramp_sample(41, 51))
        offsets.add((images[0][0, 0, 0].item(), images[0][1, 0, 0].item()))
    assert offsets == {(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)}


def test_dense_ground_truth_gains_no_holes_and_no_bleeding():
    images, disps, masks = stereo_pair()
    # Upscaling a fully valid map keeps it fully valid.
    transform = T.RandomRescaleAndCrop((64, 96), (1.3, 1.6), 1.0, "linear")
    for seed in range(5):
        torch.manual_seed(seed)
        _, out_d, out_m = transform(images, disps, masks)
        assert out_m[0].all() and out_m[1].all()
    # Invalid pixels (NaN, 0) must not leak into valid outputs: valid outputs stay within the valid range.
    disp = disps[0].clone()
    mask = torch.ones(HEIGHT, WIDTH, dtype=torch.bool)
    mask[30:50, 40:70] = False
    disp[0, 30:40, 40:70] = float("nan")
    disp[0, 40:50, 40:70] = 0.0
    for seed in range(5):
        torch.manual_seed(seed)
        _, out_d, out_m = transform(images, (disp, None), (mask, None))
        torch.manual_seed(seed)
        _, full_d, _ = transform(images, disps, masks)
        assert 0.7 < out_m[0].float().mean() < 1.0
        # Valid outputs hold exactly the values interpolated from valid pixels only.
        torch.testing.assert_close(out_d[0][0][out_m[0]], full_d[0][0][out_m[0]], rtol=1e-6, atol=1e-5)


def _naive_scatter(disp, mask, src_offset, src_size, dst_size, crop_offset, crop_size):
    out = torch.zeros(1, *crop_size)
    out_mask = torch.zeros(crop_size, dtype=torch.bool)
    sy, sx = dst_size[0] / src_size[0], dst_size[1] / src_size[1]
    for i in range(src_size[0]):
        for j in range(src_size[1]):
            if not mask[src_offset[0] + i, src_offset[1] + j]:
                continue
            ty = round((i + 0.5) * sy - 0.5) - crop_offset[0]
            tx = round((j + 0.5) * sx - 0.5) - crop_offset[1]
            if 0 <= ty < crop_size[0] and 0 <= tx < crop_size[1]:
                value = disp[0, src_offset[0] + i, src_offset[1] + j].item() * sx
                if not out_mask[ty, tx] or value > out[0, ty, tx]:
                    out[0, ty, tx] = value
                out_mask[ty, tx] = True
    return out, out_mask


@pytest.mark.parametrize("dst_size", [(37, 51), (14, 19)])
def test_sparse_scatter_matches_naive_loop(dst_size):
    g = torch.Generator().manual_seed(0)
    disp = torch.rand(1, 30, 40, generator=g) * 50 + 1
    mask = torch.rand(30, 40, generator=g) < 0.3
    args = (disp, mask, (3, 5), (22, 31), dst_size, (2, 3), (dst_size[0] - 4, dst_size[1] - 5))
    out, out_mask = T.scatter_sparse_disparity(*args)
    expected, expected_mask = _naive_scatter(*args)
    assert torch.equal(out_mask, expected_mask)
    torch.testing.assert_close(out[0][out_mask], expected[0][expected_mask], rtol=1e-6, atol=0)
    assert (out[0][~out_mask] == 0).all()


def test_sparse_rescale_keeps_exactly_the_points_that_land_in_the_crop():
    height, width = 80, 100
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(height, width, generator=g) < 0.25
    # A unique value per pixel identifies each point after scaling.
    disp = (1.0 + torch.arange(height * width, dtype=torch.float32) * 1e-2).view(1, height, width)
    (img, _), _, _ = _ramp_sample(height, width)
    transform = T.RandomRescaleAndCrop((40, 48), (1.2, 1.8), 1.0, "linear", sparse_gt=True)
    for seed in range(4):
        torch.manual_seed(seed)
        images, disps, masks = transform((img, img.clone()), (disp, None), (mask, None))
        sy, sx = _measured_scale(images[0])
        # Output pixel (5, 5) samples the source at (row5, col5): recover the affine map source -> crop.
        row5, col5 = images[0][0, 5, 5].item(), images[0][1, 5, 5].item()
        rows, cols = torch.nonzero(mask, as_tuple=True)
        ty = torch.round((rows - row5) * sy + 5).long()
        tx = torch.round((cols - col5) * sx + 5).long()
        inside = (ty >= 0) & (ty < 40) & (tx >= 0) & (tx < 48)
        expected = torch.zeros(40, 48, dtype=torch.bool)
        expected[ty[inside], tx[inside]] = True
        assert torch.equal(masks[0], expected)
        # Each kept value is its own source point's value times the horizontal scale.
        source_index = torch.round((disps[0][0][masks[0]] / sx - 1.0) / 1e-2).long()
        order = torch.argsort(ty[inside] * 48 + tx[inside])
        assert torch.equal(source_index, (rows[inside] * width + cols[inside])[order])


def test_horizontal_flip_swaps_views_and_keeps_geometry():
    sample = stereo_pair()
    images, disps, masks = T.RandomHorizontalFlip(1.0)(*sample)
    assert torch.equal(images[0], sample[0][1].flip(-1)) and torch.equal(images[1], sample[0][0].flip(-1))
    assert torch.equal(disps[0], sample[1][1].flip(-1))
    assert warp_error(images, disps, masks) < 0.01


def test_horizontal_flip_flips_each_mask_even_if_the_other_is_none():
    images, disps, _ = stereo_pair()
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[:, :10] = True
    _, _, masks = T.RandomHorizontalFlip(1.0)(images, disps, (mask, None))
    assert masks[0] is None and torch.equal(masks[1], mask.flip(-1))


def test_horizontal_flip_without_right_disparity_is_skipped():
    images, disps, masks = stereo_pair()
    out = T.RandomHorizontalFlip(1.0)(images, (disps[0], None), (masks[0], None))
    assert out[0][0] is images[0] and out[1][0] is disps[0]


def test_vertical_flip_keeps_geometry():
    sample = stereo_pair()
    images, disps, masks = T.RandomVerticalFlip(1.0)(*sample)
    assert torch.equal(images[0], sample[0][0].flip(-2)) and torch.equal(disps[1], sample[1][1].flip(-2))
    assert warp_error(images, disps, masks) < 0.01


SMALL = (40, 56)  # small enough that torch runs these ops on one thread: fast even on a loaded machine


def _identical_pair(dtype=torch.uint8):
    img = stereo_pair(*SMALL)[0][0]
    img = (img * 255).round().to(dtype) if dtype == torch.uint8 else img
    disp = torch.full((1, *SMALL), 5.0)
    mask = torch.ones(SMALL, dtype=torch.bool)
    return (img, img.clone()), (disp, disp.clone()), (mask, mask.clone())


DRAWS = 200


def _fires(transform, sample, fired) -> float:
    torch.manual_seed(1000)
    return sum(bool(fired(sample, transform(*sample))) for _ in range(DRAWS)) / DRAWS


def _changed(index):
    return lambda before, after: not torch.equal(before[0][index], after[0][index])


PROBABILITY_CASES = {
    "asymmetric jitter": (
        lambda p: T.AsymmetricColorJitter(0.3, 0.3, 0.3, 0.0, p=p),
        lambda before, after: not torch.equal(after[0][0], after[0][1]),
    ),
    "asymmetric gamma": (
        lambda p: T.AsymmetricGammaAdjust(p=p, gamma_range=(0.5, 2.0)),
        lambda before, after: not torch.equal(after[0][0], after[0][1]),
    ),
    "spatial shift": (lambda p: T.RandomSpatialShift(p, 0.5, 2.0, "mixed"), _changed(1)),
    "horizontal flip": (
        lambda p: T.RandomHorizontalFlip(p),
        lambda before, after: torch.equal(after[0][0], before[0][1].flip(-1)),
    ),
    "vertical flip": (lambda p: T.RandomVerticalFlip(p), _changed(0)),
    "occlusion": (lambda p: T.RandomOcclusion(p, (5, 10)), _changed(1)),
    "erase": (lambda p: T.RandomErase(p, (5, 10), max_erase=2), _changed(1)),
    "rescale": (
        lambda p: T.RandomRescaleAndCrop((24, 32), (1.2, 1.5), p, "linear"),
        lambda before, after: _measured_scale(after[0][0])[1] > 1.1,
    ),
}


@pytest.mark.parametrize("name", sorted(PROBABILITY_CASES))
def test_random_transforms_fire_at_their_rate(name):
    make, fired = PROBABILITY_CASES[name]
    sample = _ramp_sample(*SMALL) if name == "rescale" else _identical_pair()
    assert _fires(make(0.0), sample, fired) == 0.0
    assert _fires(make(1.0), sample, fired) == 1.0
    # 200 draws at p = 0.3: standard deviation 0.032, tolerance 3 of them.
    assert abs(_fires(make(0.3), sample, fired) - 0.3) < 0.1


def test_erase_count_and_masks():
    sample = _identical_pair()
    counts = set()
    for seed in range(60):
        torch.manual_seed(seed)
        images, _, masks = T.RandomErase(1.0, (5, 5), max_erase=3)(*sample)
        erased = (images[1] == 0).all(0)
        assert torch.equal(erased, ~masks[1]) and torch.equal(images[0], sample[0][0]) and masks[0] is sample[2][0]
        counts.add(round(erased.sum().item() / 25))
    assert {1, 3} <= counts and 0 not in counts


def test_occlusion_fills_right_view_with_patch_mean():
    sample = _identical_pair(torch.float32)
    torch.manual_seed(0)
    images, _, masks = T.RandomOcclusion(1.0, (12, 12))(*sample)
    assert torch.equal(images[0], sample[0][0]) and torch.equal(masks[0], sample[2][0])
    changed = (images[1] != sample[0][1]).any(0)
    ys, xs = torch.nonzero(changed, as_tuple=True)
    y, x = ys.min().item(), xs.min().item()
    patch = sample[0][1][:, y : y + 12, x : x + 12]
    torch.testing.assert_close(images[1][:, y : y + 12, x : x + 12], patch.mean((1, 2), keepdim=True).expand_as(patch))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_spatial_shift_is_a_vertical_shift_of_the_right_view(interpolation, dtype):
    (img, _), disps, masks = _ramp_sample(40, 50)
    img = img if dtype == torch.float32 else img.to(torch.uint8)
    torch.manual_seed(3)
    images, _, _ = T.RandomSpatialShift(1.0, 0.0, 2.0, interpolation)((img, img.clone()), disps, masks)
    assert images[1].dtype == dtype and torch.equal(images[0], img)
    delta = (images[1].float() - img.float())[:, 5:-5, 5:-5]
    shift = -delta[0].mean().item()
    assert 0.05 < abs(shift) <= 2.0
    tolerance = 0.6 if dtype == torch.uint8 else 1e-3
    assert (delta[0] + shift).abs().max() < tolerance and delta[1].abs().max() < tolerance


def test_make_valid_disparity_mask():
    disp = torch.tensor([[[1.0, 0.0, -2.0, float("nan"), float("inf"), 300.0, 5.0]]])
    mask = torch.tensor([[True, True, True, True, True, True, False]])
    images = (torch.zeros(3, 1, 7), torch.zeros(3, 1, 7))
    _, _, masks = T.MakeValidDisparityMask(256)(images, (disp, None), (mask, None))
    assert masks[0].tolist() == [[True, False, False, False, False, False, False]]
    assert masks[1] is None
    _, _, masks = T.MakeValidDisparityMask()(images, (disp, disp), (None, None))
    assert masks[0].tolist() == [[True, False, False, False, False, True, True]]


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="interpolation"):
        T.Resize((10, 10), "nearest-ish")
    with pytest.raises(ValueError, match="scaling type"):
        T.RandomRescaleAndCrop((10, 10), scaling_type="log")
    with pytest.raises(ValueError, match="probability"):
        T.RandomErase(p=1.5)
    with pytest.raises(ValueError, match="occlusion_px_range"):
        T.RandomOcclusion(0.5, (100, 50))
    with pytest.raises(ValueError, match="Resize size"):
        T.Resize((1, 2, 3))
    with pytest.raises(ValueError, match="disparity must have shape"):
        T.ValidateModelInput()(stereo_pair()[0], (torch.zeros(1, 5, 5), None), (None, None))


def test_bilinear_resize_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 57, 83), dtype=torch.uint8, generator=g)
    channels_last = img.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    for size in [(20, 30), (100, 130), (57, 83)]:
        expected = F.resize(img.float(), list(size), antialias=False)
        torch.testing.assert_close(resample.bilinear_resize(img, size), expected, atol=5e-3, rtol=0)
        torch.testing.assert_close(resample.bilinear_resize(channels_last, size), expected, atol=5e-3, rtol=0)


def test_nearest_resize_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    for height, width in [(75, 110), (13, 17)]:
        mask = torch.rand(height, width, generator=g) > 0.5
        for size in [(384, 512), (2 * height, 2 * width), (height, width), (7, 9), (height + 1, width - 1)]:
            expected = F.resize(mask[None], list(size), interpolation=F.InterpolationMode.NEAREST)[0]
            assert torch.equal(resample.nearest_resize(mask, size), expected)


@pytest.mark.parametrize("mode", [F.InterpolationMode.BILINEAR, F.InterpolationMode.BICUBIC])
def test_window_gather_equals_resize_then_crop(mode):
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (50, 70, 3), dtype=torch.uint8, generator=g).permute(2, 0, 1)
    disp = torch.rand(1, 50, 70, generator=g) * 10
    valid = torch.rand(50, 70, generator=g) > 0.3
    for size, offset, window in [((41, 57), (3, 5), (12, 16)), ((90, 120), (70, 96), (20, 24))]:
        rows = resample.resample_taps(50, window[0], size[0] / 50, offset[0], mode)
        cols = resample.resample_taps(70, window[1], size[1] / 70, offset[1], mode)
        crop = (..., slice(offset[0], offset[0] + window[0]), slice(offset[1], offset[1] + window[1]))
        expected = F.resize(img.float(), list(size), interpolation=mode, antialias=False)[crop]
        torch.testing.assert_close(resample.resample(img, rows, cols), expected, atol=2e-3, rtol=0)
        expected = F.resize(torch.where(valid, disp, 0), list(size), interpolation=mode, antialias=False)[crop]
        torch.testing.assert_close(resample.resample(disp, rows, cols, valid), expected, atol=1e-4, rtol=0)


def test_rescale_and_crop_records_its_draw():
    torch.manual_seed(0)
    crop = T.RandomRescaleAndCrop((32, 48), scale_range=(0.5, 0.5), scaling_type="linear")
    images = (torch.zeros(3, 40, 60), torch.zeros(3, 40, 60))
    crop(images, (None, None), (None, None))
    assert crop.last_draw == T.ScaleDraw(0.5, 0.8, (40, 60), (32, 48))  # raised to fit the crop

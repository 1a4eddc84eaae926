"""Invariants of the whole presets, with the transforms under test switched on.

- identity routing: with rescale and colour off and the crop equal to the image, the output left view is the
  input left view or the mirrored input right view, bit for bit, and the ground truth follows it, whatever the
  right-view perturbations (shift, occlusion, erase) do;
- geometry: images whose pixels hold their own source coordinates go through scale, crop and flips; every
  output pixel must decode to the source pixel that this scale, crop and flip put there, and every valid
  disparity must be the source disparity there times the horizontal scale (dense and sparse ground truth);
- resize protocol: every fixed-size resize of ground truth (evaluation, training ``--resize-size``) keeps the
  mean target over scored pixels within 1 % of the full-resolution mean, and every scored target within
  the min/max of the source pixels it was computed from.
"""

import math

import pytest
import torch
import torch.nn.functional as nnf

from presets import StereoMatchingEvalPreset, StereoMatchingTrainPreset

HEIGHT, WIDTH = 40, 56
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)
COLOUR_OFF = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, gamma_range=(1.0, 1.0))


def _random_sample(height: int = HEIGHT, width: int = WIDTH, seed: int = 0):
    """Distinct random uint8 views, positive disparities for both views, masks with masked-but-finite pixels."""
    g = torch.Generator().manual_seed(seed)
    images = tuple(torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g) for _ in range(2))
    disps = tuple(torch.rand(1, height, width, generator=g) * 20 + 1 for _ in range(2))
    masks = tuple(torch.rand(height, width, generator=g) > 0.2 for _ in range(2))
    return images, disps, masks


def _unnormalise(img: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN).view(-1, 1, 1), torch.tensor(STD).view(-1, 1, 1)
    return ((img * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def _routings(sample):
    """Every view the output left view may be: (name, image, disparity, mask, right image, right disparity)."""
    (left, right), (d_left, d_right), (m_left, m_right) = sample
    for vflip in (False, True):
        def v(t):
            return t.flip(-2) if vflip else t

        yield ("left", vflip), v(left), v(d_left), v(m_left), v(right), v(d_right), v(m_right)
        def hv(t):
            return v(t.flip(-1))

        yield ("mirrored right", vflip), hv(right), hv(d_right), hv(m_right), hv(left), hv(d_left), hv(m_left)


@pytest.mark.parametrize(
    "perturbation",
    [
        dict(spatial_shift_prob=1.0, occlusion_prob=1.0, erase_prob=1.0),
        dict(spatial_shift_prob=1.0, occlusion_prob=0.0, erase_prob=0.0),
        dict(spatial_shift_prob=0.0, occlusion_prob=1.0, erase_prob=0.0),
        dict(spatial_shift_prob=0.0, occlusion_prob=0.0, erase_prob=1.0),
    ],
    ids=["all", "shift", "occlusion", "erase"],
)
def test_left_view_and_its_ground_truth_are_routed_untouched(perturbation):
    sample = _random_sample()
    preset = StereoMatchingTrainPreset(
        crop_size=(HEIGHT, WIDTH), rescale_prob=0.0, scale_interpolation_type="mixed", mean=MEAN, std=STD,
        spatial_shift_max_angle=1.0, spatial_shift_max_displacement=2.0, spatial_shift_interpolation_type="mixed",
        asymmetric_jitter_prob=0.5, horizontal_flip_prob=0.5, vertical_flip_prob=0.5,
        occlusion_px_range=(8, 16), erase_px_range=(6, 12), erase_num_repeats=2, **COLOUR_OFF, **perturbation,
    )
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        (out_left, out_right), (out_d, out_rd), (out_m, out_rm) = preset(*sample)
        left = _unnormalise(out_left)
        matches = [r for r in _routings(sample) if torch.equal(left, r[1])]
        assert len(matches) == 1, f"seed {seed}: the left view is not an untouched input view"
        name, _, disp, mask, right, right_disp, right_mask = matches[0]
        seen.add(name[0])
        assert torch.equal(out_m, mask) and torch.equal(out_d[0][mask], disp[0][mask])
        # The right view carries the perturbations; its disparity is untouched, its mask may only lose pixels.
        assert not (out_rm & ~right_mask).any() and torch.equal(out_rd[0][out_rm], right_disp[0][out_rm])
        assert not torch.equal(_unnormalise(out_right), right)
    assert seen == {"left", "mirrored right"}


# ---------------------------------------------------------------------------------------------------------
# Geometry: coordinate-encoded images through RandomRescaleAndCrop and both flips.

SRC_H, SRC_W, CROP = 48, 64, (32, 48)
COORD_UNIT = 1 / 4096  # coordinates stored at 12-bit steps in [0, 1): exact in float32
VIEW_MARK = (0.25, 0.75)  # channel 2 tells which input view a pixel comes from
# Affine disparities per view: bilinear resampling reproduces them exactly away from invalid pixels.
PLANES = ((6.0, 0.05, 0.03), (7.0, 0.04, -0.02))
GARBAGE = 1000.0  # value of masked-but-finite pixels: it must never reach a valid output pixel


def _coordinate_sample():
    y, x = torch.meshgrid(torch.arange(SRC_H, dtype=torch.float32), torch.arange(SRC_W, dtype=torch.float32),
                          indexing="ij")
    images = tuple(torch.stack([y * COORD_UNIT, x * COORD_UNIT, torch.full_like(x, mark)]) for mark in VIEW_MARK)
    return images, y, x


def _fit_axis(decoded: torch.Tensor, size: int, crop: int, max_scale: float):
    """The (resized length, offset, flipped) whose resampling puts exactly ``decoded`` on this axis."""
    k = torch.arange(crop, dtype=torch.float64)
    fits = []
    for length in range(crop, math.ceil(size * max_scale) + 2):
        offsets = torch.arange(length - crop + 1, dtype=torch.float64)[:, None]
        for flipped in (False, True):
            position = (crop - 1 - k if flipped else k) + offsets
            expected = ((position + 0.5) * size / length - 0.5).clamp(0, size - 1)
            error = (expected - decoded.double()).abs().amax(dim=1)
            fits += [(length, int(o), flipped) for o in torch.nonzero(error < 1e-3).flatten()]
    assert len(fits) == 1, f"the output is not one scale, crop and flip of the input: fits {fits}"
    return fits[0]


def _decode(image: torch.Tensor):
    """Source rows, columns and view of an un-normalised coordinate image."""
    rows, cols = image[0] / COORD_UNIT, image[1] / COORD_UNIT
    view = int(round((image[2].mean().item() - VIEW_MARK[0]) / (VIEW_MARK[1] - VIEW_MARK[0])))
    return rows, cols, view


def _geometry_preset(sparse_gt: bool) -> StereoMatchingTrainPreset:
    return StereoMatchingTrainPreset(
        crop_size=CROP, scaling_type="linear", scale_range=(0.7, 1.5), mean=0.5, std=0.5,
        spatial_shift_prob=1.0, spatial_shift_max_angle=1.0, spatial_shift_max_displacement=2.0,
        horizontal_flip_prob=0.5, vertical_flip_prob=0.5, occlusion_prob=1.0, occlusion_px_range=(6, 10),
        erase_prob=1.0, erase_px_range=(4, 8), erase_num_repeats=2, sparse_gt=sparse_gt, **COLOUR_OFF,
    )


def _run_geometry(preset, disps, masks, density, check):
    images, _, _ = _coordinate_sample()
    seen = set()
    for seed in range(10):
        torch.manual_seed(seed)
        (left, _), (out_d, _), (out_m, _) = preset(images, disps, masks)
        rows, cols, view = _decode(left * 0.5 + 0.5)
        new_h, y0, vflip = _fit_axis(rows[:, 0], SRC_H, CROP[0], 1.5)
        new_w, x0, hflip = _fit_axis(cols[0, :], SRC_W, CROP[1], 1.5)
        assert view == int(hflip), "a horizontal flip must swap the views, and only a flip may"
        # One scale for both axes (each size rounded on its own), every pixel on the fitted grid.
        assert abs(new_h / SRC_H - new_w / SRC_W) <= 0.5 / SRC_H + 0.5 / SRC_W
        assert torch.allclose(rows, rows[:, :1].expand_as(rows), atol=1e-3)
        assert torch.allclose(cols, cols[:1, :].expand_as(cols), atol=1e-3)
        assert out_m.sum() > 0.3 * density * out_m.numel()  # upscaling by 1.5 spreads sparse points
        check(view, rows, cols, (new_h, y0, vflip), (new_w, x0, hflip), out_d[0], out_m)
        seen.add((hflip, vflip))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def test_dense_geometry_follows_scale_crop_and_flips():
    _, y, x = _coordinate_sample()
    g = torch.Generator().manual_seed(3)
    disps, masks = [], []
    for a, b, c in PLANES:
        # Occlusion-like blobs: masked, yet holding a finite value that must not bleed into valid pixels.
        mask = nnf.interpolate(torch.rand(1, 1, 6, 8, generator=g), size=(SRC_H, SRC_W), mode="bilinear")[0, 0] > 0.3
        disps.append(torch.where(mask, a + b * x + c * y, GARBAGE)[None])
        masks.append(mask)

    def check(view, rows, cols, _, axis_x, disp, mask):
        a, b, c = PLANES[view]
        scale_x = axis_x[0] / SRC_W
        expected = scale_x * (a + b * cols + c * rows)
        torch.testing.assert_close(disp[mask], expected[mask], rtol=1e-5, atol=1e-4)

    _run_geometry(_geometry_preset(sparse_gt=False), tuple(disps), tuple(masks), 0.5, check)


def test_sparse_geometry_moves_every_point_to_its_pixel():
    g = torch.Generator().manual_seed(4)
    index = torch.arange(SRC_H * SRC_W, dtype=torch.float32).view(SRC_H, SRC_W)
    masks = tuple(torch.rand(SRC_H, SRC_W, generator=g) < 0.3 for _ in range(2))
    # A unique value per pixel and view tells which source point an output value is.
    disps = tuple(torch.where(m, 2.0 + 0.01 * index + 100.0 * v, 0.0)[None] for v, m in enumerate(masks))

    def check(view, rows, cols, axis_y, axis_x, disp, mask):
        (new_h, y0, vflip), (new_w, x0, hflip) = axis_y, axis_x
        scale_y, scale_x = new_h / SRC_H, new_w / SRC_W
        # The points of this view that land in the crop, at their nearest output pixel.
        src_rows, src_cols = torch.nonzero(masks[view], as_tuple=True)
        ty = torch.round((src_rows.double() + 0.5) * scale_y - 0.5).long() - y0
        tx = torch.round((src_cols.double() + 0.5) * scale_x - 0.5).long() - x0
        inside = (ty >= 0) & (ty < CROP[0]) & (tx >= 0) & (tx < CROP[1])
        ty, tx = ty[inside], tx[inside]
        ty, tx = (CROP[0] - 1 - ty if vflip else ty), (CROP[1] - 1 - tx if hflip else tx)
        expected = torch.zeros(CROP, dtype=torch.bool)
        expected[ty, tx] = True
        assert torch.equal(mask, expected)
        # Each value is one source point of this view, never a blend, times the horizontal scale, and that
        # point lies within half an output pixel of where the image says the output pixel comes from.
        source = torch.round((disp[mask] / scale_x - 2.0 - 100.0 * view) / 0.01).long()
        assert (source >= 0).all() and masks[view].flatten()[source].all()
        torch.testing.assert_close(disp[mask], scale_x * disps[view].flatten()[source], rtol=1e-6, atol=0)
        assert ((source // SRC_W).double() - rows[mask].double()).abs().max() <= 0.5 / scale_y + 1e-3
        assert ((source % SRC_W).double() - cols[mask].double()).abs().max() <= 0.5 / scale_x + 1e-3

    _run_geometry(_geometry_preset(sparse_gt=True), disps, masks, 0.3, check)


# ---------------------------------------------------------------------------------------------------------
# Resize protocol: fixed-size resizes of ground truth, as evaluation and training --resize-size do them.


def _smooth(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    coarse = torch.rand(1, 1, 5, 8, generator=generator)
    return nnf.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0, 0].clamp(0, 1)


def _bilinear_taps(in_size: int, out_size: int) -> torch.Tensor:
    """(out, in) membership of PyTorch's bilinear taps (align_corners=False, clamped at the borders)."""
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * in_size / out_size - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    taps = torch.zeros(out_size, in_size, dtype=torch.bool)
    taps[torch.arange(out_size), i0] = True
    taps[torch.arange(out_size), (i0 + 1).clamp(max=in_size - 1)] = True
    return taps


def _nearest_points(in_size: int, out_size: int) -> torch.Tensor:
    """(out, in) membership of the source pixels whose centres fall within half an output pixel."""
    position = (torch.arange(in_size, dtype=torch.float64) + 0.5) * out_size / in_size - 0.5
    return (position[None, :] - torch.arange(out_size, dtype=torch.float64)[:, None]).abs() <= 0.5 + 1e-9


def _footprint_bounds(values, sources, rows, cols):
    """Per output pixel, min and max of ``values`` over the ``sources`` pixels in its rows x cols footprint."""
    bounds = []
    for fill, reduce in ((math.inf, torch.amin), (-math.inf, torch.amax)):
        v = torch.where(sources, values, fill).double()
        per_col = reduce(torch.where(cols[None], v[:, None, :], fill), dim=-1)  # (H, out_w)
        bounds.append(reduce(torch.where(rows[:, :, None], per_col[None], fill), dim=1))  # (out_h, out_w)
    return bounds


def _dense_map(height: int, width: int):
    """Occlusion-like masked blobs that keep their true disparity, and a small region without any (0)."""
    g = torch.Generator().manual_seed(5)
    disp = 15 + 25 * _smooth(height, width, g)
    mask = _smooth(height, width, g) < 0.7
    disp[10:14, 20:26] = 0.0  # no ground truth at all (stored as 0, e.g. Middlebury's inf)
    mask &= disp > 0
    return disp[None], mask


def _sparse_map(height: int, width: int, density: float):
    g = torch.Generator().manual_seed(6)
    disp = 15 + 25 * _smooth(height, width, g)
    mask = torch.rand(height, width, generator=g) < density
    return torch.where(mask, disp, 0.0)[None], mask


def _resize_with(pipeline: str, sparse: bool, size, disp, mask):
    """The left target and scored mask that a preset gives at fixed size ``size``."""
    height, width = disp.shape[-2:]
    images = tuple(torch.zeros(3, height, width, dtype=torch.uint8) for _ in range(2))
    if pipeline == "eval":
        preset = StereoMatchingEvalPreset(resize_size=size, **({"sparse_gt": True} if sparse else {}))
    else:
        preset = StereoMatchingTrainPreset(
            crop_size=size, resize_size=size, rescale_prob=0.0, horizontal_flip_prob=0.0, sparse_gt=sparse,
        )
    torch.manual_seed(0)
    _, (out_d, _), (out_m, _) = preset(images, (disp, None), (mask, None))
    return out_d[0], out_m


# KITTI-like aspect (375x1242 -> 384x512) for sparse maps, Sintel-like (436x1024 -> 384x512) for dense ones.
SPARSE_SRC, DENSE_SRC, OUT = (94, 310), (109, 256), (96, 128)


@pytest.mark.parametrize("pipeline", ["eval", "train --resize-size"])
@pytest.mark.parametrize("density", [0.1, 0.3, 1.0])
def test_sparse_resize_keeps_the_mean_and_only_moves_points(pipeline, density):
    disp, mask = _sparse_map(*SPARSE_SRC, density)
    out_d, out_m = _resize_with(pipeline.split()[0], True, OUT, disp, mask)
    scale_x = OUT[1] / SPARSE_SRC[1]
    assert out_m.float().mean() > 0.5 * min(1.0, density * SPARSE_SRC[0] * SPARSE_SRC[1] / (OUT[0] * OUT[1]))
    mean = out_d[out_m].double().mean() / scale_x
    assert abs(mean / disp[0][mask].double().mean() - 1) < 0.01
    # Pixels without ground truth never count: bounds over the valid points near each output pixel.
    low, high = _footprint_bounds(disp[0], mask, _nearest_points(SPARSE_SRC[0], OUT[0]),
                                  _nearest_points(SPARSE_SRC[1], OUT[1]))
    target = out_d[out_m].double() / scale_x
    assert (target >= low[out_m] - 1e-4).all() and (target <= high[out_m] + 1e-4).all()


@pytest.mark.parametrize("pipeline", ["eval", "train --resize-size"])
def test_dense_resize_with_masked_but_finite_pixels(pipeline):
    disp, mask = _dense_map(*DENSE_SRC)
    out_d, out_m = _resize_with(pipeline.split()[0], False, OUT, disp, mask)
    scale_x = OUT[1] / DENSE_SRC[1]
    assert out_m.float().mean() > 0.4
    mean = out_d[out_m].double().mean() / scale_x
    assert abs(mean / disp[0][mask].double().mean() - 1) < 0.01
    # Evaluation resamples the raw map as torchvision's protocol does: masked pixels with a true disparity
    # take part with their value, pixels without ground truth as 0. Training uses valid pixels only.
    sources = torch.ones_like(mask) if pipeline == "eval" else mask
    low, high = _footprint_bounds(disp[0], sources, _bilinear_taps(DENSE_SRC[0], OUT[0]),
                                  _bilinear_taps(DENSE_SRC[1], OUT[1]))
    target = out_d[out_m].double() / scale_x
    assert (target >= low[out_m] - 1e-4).all() and (target <= high[out_m] + 1e-4).all()


def test_eval_resize_is_the_published_protocol_on_masked_but_finite_pixels():
    # torchvision resizes the raw map: F.resize of the disparity, whatever the mask says.
    disp, mask = _dense_map(*DENSE_SRC)
    out_d, _ = _resize_with("eval", False, OUT, disp, mask)
    expected = nnf.interpolate(disp[None], size=OUT, mode="bilinear", align_corners=False)[0, 0] * OUT[1] / DENSE_SRC[1]
    torch.testing.assert_close(out_d, expected, rtol=1e-5, atol=1e-4)

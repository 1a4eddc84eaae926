"""Train and eval presets: the published evaluation protocol, native mode, geometry of the train pipeline."""

from types import SimpleNamespace

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from presets import StereoMatchingEvalPreset, StereoMatchingTrainPreset, eval_preset_from_weights
from tests.test_transforms import stereo_pair, warp_error

NO_PHOTOMETRIC = dict(
    brightness=0.0, contrast=0.0, gamma_range=(1.0, 1.0), spatial_shift_prob=0.0, occlusion_prob=0.0, erase_prob=0.0
)


def _decoded_like_sample(height=75, width=110):
    """uint8 images in the channels-last memory layout that torchvision.io decoding gives, GT with holes."""
    g = torch.Generator().manual_seed(0)
    images = tuple(
        torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=g).permute(2, 0, 1) for _ in range(2)
    )
    disp = torch.rand(1, height, width, generator=g) * 40 + 1
    mask = torch.rand(height, width, generator=g) > 0.2
    disp[0][~mask] = 0.0
    return images, (disp, None), (mask, None)


def test_eval_preset_reproduces_the_published_protocol():
    images, disps, masks = _decoded_like_sample()
    out_images, out_disps, out_masks = StereoMatchingEvalPreset()(images, disps, masks)

    size = [384, 512]
    for out, img in zip(out_images, images):
        expected = F.resize(F.to_dtype(img, torch.float32, scale=True), size, antialias=False)
        expected = F.normalize(expected, [0.5] * 3, [0.5] * 3)
        assert out.dtype == torch.float32 and out.shape == (3, 384, 512)
        torch.testing.assert_close(out, expected, atol=3e-5, rtol=0)
    expected_disp = F.resize(disps[0], size, antialias=False) * (512 / 110)
    torch.testing.assert_close(out_disps[0], expected_disp, atol=1e-4, rtol=1e-5)
    expected_mask = F.resize(masks[0][None], size, interpolation=InterpolationMode.NEAREST)[0] & (expected_disp[0] > 0)
    assert torch.equal(out_masks[0], expected_mask)
    assert out_disps[1] is None and out_masks[1] is None


def test_eval_preset_treats_non_finite_invalid_values_like_zeros():
    images, (disp, _), (mask, _) = _decoded_like_sample()
    with_nan = disp.clone()
    with_nan[0][~mask] = float("nan")
    preset = StereoMatchingEvalPreset(resize_size=(40, 60))
    _, zero_d, zero_m = preset(images, (disp, None), (mask, None))
    _, nan_d, nan_m = preset(images, (with_nan, None), (mask, None))
    assert torch.equal(zero_d[0], nan_d[0]) and torch.equal(zero_m[0], nan_m[0])


def test_eval_preset_native_resolution_only_normalises():
    images, disps, masks = _decoded_like_sample()
    preset = StereoMatchingEvalPreset(resize_size=None, max_disparity=30)
    out_images, out_disps, out_masks = preset(images, disps, masks)
    for out, img in zip(out_images, images):
        torch.testing.assert_close(out, (img.float() / 255 - 0.5) / 0.5, atol=1e-6, rtol=0)
    assert out_disps[0] is disps[0]
    assert torch.equal(out_masks[0], masks[0] & (disps[0][0] > 0) & (disps[0][0] < 30))


def test_eval_preset_grayscale():
    images, disps, masks = _decoded_like_sample()
    out_images, _, _ = StereoMatchingEvalPreset(use_grayscale=True, resize_size=(32, 48))(images, disps, masks)
    assert out_images[0].shape == (3, 32, 48)
    assert torch.equal(out_images[0][0], out_images[0][1]) and torch.equal(out_images[0][1], out_images[0][2])


def test_eval_preset_from_weights_meta():
    images, disps, masks = _decoded_like_sample()
    weights = SimpleNamespace(meta={"eval_preset": {
        "resize_size": (64, 96), "interpolation": "bilinear", "antialias": False, "mean": (0.5,) * 3, "std": (0.5,) * 3,
    }})
    assert eval_preset_from_weights(weights)(images, disps, masks)[0][0].shape == (3, 64, 96)
    assert eval_preset_from_weights(SimpleNamespace(meta={}))(images, disps, masks)[0][0].shape == (3, 384, 512)
    native = eval_preset_from_weights(weights, resize_size=None)(images, disps, masks)
    assert native[0][0].shape == (3, 75, 110)


def test_train_preset_keeps_geometry_with_and_without_flips():
    sample = stereo_pair(dtype=torch.uint8)
    for flip_prob in (0.0, 1.0):
        preset = StereoMatchingTrainPreset(
            crop_size=(48, 64), scaling_type="linear", scale_range=(0.6, 1.0), horizontal_flip_prob=flip_prob,
            scale_interpolation_type="mixed", **NO_PHOTOMETRIC,
        )
        for seed in range(3):
            torch.manual_seed(seed)
            images, disps, masks = preset(*sample)
            assert images[0].dtype == torch.float32 and images[0].shape == (3, 48, 64)
            assert disps[0].dtype == torch.float32 and disps[0].shape == (1, 48, 64)
            assert masks[0].dtype == torch.bool and masks[0].shape == (48, 64)
            # Images are normalised to [-1, 1], so errors are twice those in [0, 1].
            assert warp_error(images, disps, masks) < 0.04


def test_train_preset_flip_swaps_views():
    sample = stereo_pair(dtype=torch.uint8)
    kwargs = dict(crop_size=(96, 128), rescale_prob=0.0, **NO_PHOTOMETRIC)
    torch.manual_seed(0)
    plain = StereoMatchingTrainPreset(horizontal_flip_prob=0.0, **kwargs)(*sample)
    torch.manual_seed(0)
    flipped = StereoMatchingTrainPreset(horizontal_flip_prob=1.0, **kwargs)(*sample)
    assert torch.equal(flipped[0][0], plain[0][1].flip(-1)) and torch.equal(flipped[1][0], plain[1][1].flip(-1))


def test_train_preset_sparse_ground_truth():
    images, disps, _ = stereo_pair(dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(disps[0].shape[-2:], generator=g) < 0.3
    disp = torch.where(mask, disps[0], 0.0)
    preset = StereoMatchingTrainPreset(crop_size=(48, 64), sparse_gt=True, **NO_PHOTOMETRIC)
    for seed in range(3):
        torch.manual_seed(seed)
        out_images, out_disps, out_masks = preset(images, (disp, None), (mask, None))
        density = out_masks[0].float().mean().item()
        assert 0.1 < density < 0.4
        assert (out_disps[0][0][out_masks[0]] > 0).all() and (out_disps[0][0][~out_masks[0]] == 0).all()
        assert warp_error(out_images, out_disps, out_masks, min_fraction=0.05) < 0.04


def test_train_preset_every_option():
    images, disps, masks = stereo_pair(dtype=torch.uint8)
    preset = StereoMatchingTrainPreset(
        crop_size=(40, 56), resize_size=(80, 110), rescale_prob=1.0, scaling_type="linear", scale_range=(0.8, 1.1),
        scale_interpolation_type="mixed", use_grayscale=True, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4),
        max_disparity=18.0, spatial_shift_prob=1.0, spatial_shift_max_angle=0.2, spatial_shift_max_displacement=2.0,
        spatial_shift_interpolation_type="bicubic", gamma_range=(0.7, 1.3), brightness=0.3, contrast=(0.7, 1.3),
        saturation=0.2, hue=0.1, asymmetric_jitter_prob=0.5, horizontal_flip_prob=0.5, vertical_flip_prob=0.5,
        occlusion_prob=1.0, occlusion_px_range=(5, 10), erase_prob=1.0, erase_px_range=(4, 8), erase_num_repeats=2,
    )
    for seed in range(4):
        torch.manual_seed(seed)
        out_images, out_disps, out_masks = preset(images, disps, masks)
        assert out_images[0].shape == (3, 40, 56) and out_images[1].dtype == torch.float32
        assert out_masks[0].any() and (out_disps[0][0][out_masks[0]] < 18.0).all()
        assert not out_masks[1].all()  # the boxes erased in the right view are invalid there


def test_train_preset_is_reproducible_from_the_global_seed():
    sample = stereo_pair(dtype=torch.uint8)
    preset = StereoMatchingTrainPreset(crop_size=(48, 64), occlusion_prob=0.5, erase_prob=0.5)

    def draw(seed):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return preset(*sample)

    first, again, other = draw(5), draw(5), draw(6)
    assert torch.equal(first[0][0], again[0][0]) and torch.equal(first[1][0], again[1][0])
    assert not torch.equal(first[0][0], other[0][0])

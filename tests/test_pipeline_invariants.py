"""Invariants of the whole presets, with the transforms under test switched on.

- identity routing: with rescale and colour off and the crop equal to the image, the output left view is the
  input left view or the mirrored input right view, bit for bit, and the ground truth follows it, whatever the
  right-view perturbations (shift, occlusion, erase) do;
"""

import pytest
import torch

from presets import StereoMatchingTrainPreset

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

"""The one disparity colouriser (utils.visualization.colorize) gives what the three earlier ones drew, and
matplotlib's backend is set in one place."""

import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from predict import write_color
from utils.preprocessing import denormalize
from utils.visualization import colorize, plt

ROOT = Path(__file__).resolve().parents[1]


def test_colorize_maps_the_scale_onto_magma_with_invalid_pixels_filled():
    disparity = torch.tensor([[0.0, 2.0, 4.0], [6.0, 8.0, float("nan")]])
    invalid = torch.tensor([[False, False, False], [False, True, False]])
    rgb = colorize(disparity, 2.0, 6.0, invalid, invalid_color=(0.5, 0.25, 0.0))
    magma = matplotlib.colormaps["magma"]
    expected = [magma(0.0), magma(0.0), magma(0.5), magma(1.0)]  # below vmin clamps to it, above vmax to it
    assert rgb.shape == (3, 2, 3) and rgb.dtype == torch.float32
    for (y, x), colour in zip([(0, 0), (0, 1), (0, 2), (1, 0)], expected):
        assert rgb[:, y, x].tolist() == pytest.approx(colour[:3])
    assert rgb[:, 1, 1].tolist() == rgb[:, 1, 2].tolist() == [0.5, 0.25, 0.0]  # invalid and NaN


def test_colorize_equals_the_former_tensorboard_colouriser():
    # utils/logger.py's former _colorize: magma of the clamped scale, times the valid mask (invalid black).
    g = torch.Generator().manual_seed(0)
    disparity, valid = torch.rand(24, 32, generator=g) * 40, torch.rand(24, 32, generator=g) > 0.3
    x = ((disparity - 5.0) / 30.0).clamp(0, 1)
    former = torch.from_numpy(matplotlib.colormaps["magma"](x.numpy())[..., :3]).permute(2, 0, 1).float() * valid
    assert torch.equal(colorize(disparity, 5.0, 35.0, ~valid), former)


def former_write_color_map(disparity: np.ndarray, top: float, unreliable: np.ndarray) -> np.ndarray:
    """The map that predict.write_color drew before: matplotlib's own colour mapping of a masked array."""
    height, width = disparity.shape
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    shown = np.ma.masked_array(disparity, mask=unreliable)
    ax.imshow(shown, cmap=plt.get_cmap("magma").with_extremes(bad="0.5"), vmin=0.0, vmax=top, interpolation="nearest")
    ax.set_axis_off()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def test_predict_colour_output_draws_the_colouriser_and_matches_the_former_drawing(tmp_path):
    g = torch.Generator().manual_seed(1)
    disparity = (torch.rand(300, 40, generator=g) * 30).numpy()  # 300 px high: drawn 1:1, no enlargement
    unreliable = (torch.rand(300, 40, generator=g) > 0.8).numpy()
    write_color(tmp_path / "c.png", disparity, 25.0, unreliable=unreliable)
    drawn = np.asarray(Image.open(tmp_path / "c.png").convert("RGB"))[:, :40].astype(int)
    expected = (colorize(disparity, 0.0, 25.0, unreliable, (0.5, 0.5, 0.5)) * 255).permute(1, 2, 0).numpy()
    assert np.abs(drawn - expected).max() <= 1  # rounding to 8 bits
    assert (drawn[unreliable] == 128).all() or (drawn[unreliable] == 127).all()
    assert np.abs(drawn - former_write_color_map(disparity, 25.0, unreliable).astype(int)).max() <= 1


def test_denormalize_undoes_the_normalisation_for_the_losses_and_the_figures():
    images = torch.rand(2, 3, 4, 5)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    normalised = (images - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(denormalize(normalised, mean, std), images, atol=1e-6)
    assert denormalize(normalised.double(), mean, std).dtype == torch.float64
    assert denormalize(torch.full((3, 1, 1), 2.0)).max() == 1.0  # clamped to [0, 1]


def test_only_utils_visualization_sets_the_matplotlib_backend():
    setters = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")
               if ".venv" not in p.parts and re.search(r"matplotlib\.use\(", p.read_text())}
    assert setters == {"utils/visualization.py"}

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import make_assets  # noqa: E402
from models import get_model  # noqa: E402

FIGURES = ("lr_schedules.png", "disparity_eda.png", "disparity_scale.png", "prediction_grid.png",
           "training_curves.png")


@pytest.fixture
def run_dir(tmp_path):
    """A finished run as train.py leaves it: {name}.pth and tensorboard/{name} with its scalar tags."""
    torch.manual_seed(0)
    torch.save({"model": get_model("crestereo_base").state_dict(), "step": 4, "args": {"model": "crestereo_base"}},
               tmp_path / "quick.pth")
    writer = SummaryWriter(tmp_path / "tensorboard" / "quick")
    for step in range(1, 5):
        writer.add_scalar("train/loss", 40.0 / step, step)
        writer.add_scalar("train/mae", 10.0 / step, step)
        writer.add_scalar("train/lr", 4e-4 * (1 - step / 5), step)
    for step in (0, 4):
        writer.add_scalar("valid/synthetic-val/mae", 5.0 - step / 2, step)
    writer.close()
    return tmp_path


def test_tiny_run_writes_every_figure(tmp_path, run_dir):
    output = tmp_path / "assets"
    make_assets.main(make_assets.get_args_parser().parse_args(
        ["--tiny", "--output-dir", str(output), "--checkpoint-dir", str(run_dir), "--run-name", "quick"]
    ))
    for name in FIGURES:
        width, height = Image.open(output / name).size
        assert width > 300 and height > 200, name
    eda = json.loads((output / "disparity_eda.json").read_text())
    assert set(eda["results"]) == {"synthetic", "synthetic-val", "mixture"}


def test_training_scalars_are_read_from_the_tensorboard_log(run_dir):
    scalars = make_assets.read_scalars(run_dir / "tensorboard" / "quick")
    assert scalars["train/loss"] == ([1, 2, 3, 4], pytest.approx([40.0, 20.0, 40 / 3, 10.0]))
    assert scalars["valid/synthetic-val/mae"] == ([0, 4], [5.0, 3.0])


def test_recipe_schedules_match_the_readme_commands():
    recipe1, recipe2 = make_assets.RECIPES.values()
    assert recipe1.lr_at(6000) == pytest.approx(4e-4) == recipe1.lr_at(29_999)
    assert recipe1.lr_at(299_999) == pytest.approx(2e-5) == recipe2.lr_at(107_999)
    assert recipe2.lr_at(0) == pytest.approx(4e-4)


def test_missing_run_names_the_command_to_make_it(tmp_path):
    args = make_assets.get_args_parser().parse_args(["--tiny", "--checkpoint-dir", str(tmp_path), "--run-name", "x"])
    with pytest.raises(SystemExit, match="run the quickstart training with --tensorboard-summaries"):
        make_assets.main(args)

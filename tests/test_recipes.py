"""The recipes in recipes/ are train.py argument files: they parse, they pass train.py's flag checks, and the
quickstart file is exactly the README's quickstart command."""

import shlex
from pathlib import Path

import pytest

import train

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.txt"))


def recipe(name: str, *extra: str):
    return train.get_args_parser().parse_args([f"@{ROOT / 'recipes' / name}", *extra])


def test_every_recipe_parses_and_passes_the_flag_checks():
    assert [p.name for p in RECIPES] == ["crestereo_stage1.txt", "crestereo_stage2.txt", "quickstart.txt"]
    for path in RECIPES:
        args = recipe(path.name, "--dataset-root", "/data")
        train.check_args(args)
        assert args.dataset_root == "/data"


def test_published_recipes():
    stage1, stage2 = recipe("crestereo_stage1.txt"), recipe("crestereo_stage2.txt")
    assert stage1.train_datasets == ["crestereo", "eth3d-train", "middlebury2014-other"]
    assert (sum(stage1.dataset_steps), stage1.warmup_steps, stage1.decay_after_steps) == (300_000, 6000, 30_000)
    assert (stage1.lr, stage1.min_lr, stage1.lr_decay_method, stage1.clip_grad_norm) == (4e-4, 2e-5, "cosine", 1.0)
    assert stage2.dataset_steps == [12_000] * 9 and stage2.scale_range == [0.2, 0.8]
    assert stage2.resume_path == f"{stage1.checkpoint_dir}/{stage1.name}.pth" and not stage2.resume_schedule
    assert recipe("crestereo_stage1.txt", "--name", "other").name == "other"  # later flags win


def test_quickstart_file_is_the_readme_command():
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "train.py --device auto --name quickstart" in line)
    command = shlex.split(line.split("&&")[-1])
    assert command[:2] == [".venv/bin/python", "train.py"]
    assert vars(recipe("quickstart.txt")) == vars(train.get_args_parser().parse_args(command[2:]))


def test_comment_lines_and_several_values_per_line(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("# a comment --lr 1\n--lr 0.5  --min-lr 0.1\n\n--train-datasets synthetic\n--dataset-steps 3\n")
    args = train.get_args_parser().parse_args([f"@{path}"])
    assert (args.lr, args.min_lr, args.train_datasets, args.dataset_steps) == (0.5, 0.1, ["synthetic"], [3])
    with pytest.raises(SystemExit):
        train.get_args_parser().parse_args([f"@{tmp_path / 'missing.txt'}"])

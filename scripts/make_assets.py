"""Regenerate the figures in assets/ from the project's own code and its quickstart training run.

    python scripts/make_assets.py --checkpoint-dir checkpoints --run-name crestereo   # after the quickstart run
    python scripts/make_assets.py --tiny --output-dir /tmp/assets ...                 # seconds, for the tests

Figures:
- ``lr_schedules.png``: learning rate of both README recipes (``utils/lr_schedule.py``), with recipe 1's
  decay start of 30,000 steps against the 180,000 of torchvision's reference train.py ("learning is decided
  early");
- ``disparity_eda.png`` / ``.json``: ``disparity_eda.py`` on a mixture of the two synthetic sets, which
  differ in size and aspect ratio;
- ``disparity_scale.png``: the same large scenes cropped to 384x512 with recipe 1's scale range (0.6-1.0)
  and recipe 2's (0.2-0.8): how the scale range moves the disparities the model is trained on;
- ``prediction_grid.png``: left, right, valid mask, masked ground truth, prediction and error of the run's
  checkpoint on a ``synthetic-val`` scene;
- ``training_curves.png``: loss, learning rate and validation metrics of the run, read from its TensorBoard
  log (``{checkpoint_dir}/tensorboard/{run_name}``, written with ``--tensorboard-summaries``).
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import disparity_eda as eda  # noqa: E402
import train  # noqa: E402
from data.registry import make_dataset  # noqa: E402
from predict import predict_disparity  # noqa: E402
from presets import StereoMatchingTrainPreset  # noqa: E402
from utils.checkpoint import load_checkpoint, model_state_from_checkpoint  # noqa: E402
from utils.lr_schedule import LRSchedule  # noqa: E402
from utils.visualization import plt, save_disparity_figure  # noqa: E402



def recipe_schedule(name: str) -> LRSchedule:
    """The learning-rate schedule of train.py argument file recipes/{name}.txt."""
    args = train.get_args_parser().parse_args([f"@{ROOT / 'recipes' / f'{name}.txt'}"])
    return LRSchedule.from_args(args, total_steps=sum(args.dataset_steps))


# The two published training recipes of the README; stage 2 runs 9 x 12,000 steps.
RECIPES = {
    "recipe 1: CREStereo base from scratch": recipe_schedule("crestereo_stage1"),
    "recipe 2: multi-set fine-tuning": recipe_schedule("crestereo_stage2"),
}
REFERENCE_DECAY_AFTER = 180_000  # torchvision's default --decay-after-steps


def lr_figure(path: Path, points: int) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, (title, recipe) in zip(axes, RECIPES.items()):
        steps = torch.linspace(0, recipe.total_steps - 1, points).round().long().tolist()
        start = recipe.decay_after_steps
        ax.plot(steps, [recipe.lr_at(t) for t in steps],
                label=f"decay after {start:,}" if start else "cosine decay from the first step")
        if recipe.decay_after_steps:
            late = replace(recipe, decay_after_steps=REFERENCE_DECAY_AFTER)
            ax.plot(steps, [late.lr_at(t) for t in steps], linestyle="--", color="gray",
                    label=f"decay after {REFERENCE_DECAY_AFTER:,} (reference default)")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def eda_figures(output: Path, tiny: bool) -> None:
    """The mixture EDA through disparity_eda's command line, and the scale-range comparison."""
    crop = ["64", "96"] if tiny else ["256", "320"]
    eda.main(eda.get_args_parser().parse_args([
        "--train-datasets", "synthetic", "synthetic-val", "--dataset-steps", "88", "12", "--crop-size", *crop,
        "--num-samples", "4" if tiny else "200", "--workers", "0" if tiny else "2", "--threshold", "48",
        "--output-dir", str(output), "--name", "disparity_eda",
    ]))
    size, crop_size, samples = ((128, 192), (64, 96), 3) if tiny else ((960, 1280), (384, 512), 100)
    scenes = {"large scenes": make_dataset("synthetic", None, size=size, max_disparity=size[1] / 4, length=1000)}
    results = {}
    for low, high in ((0.6, 1.0), (0.2, 0.8)):
        preset = StereoMatchingTrainPreset(crop_size=crop_size, scaling_type="linear", scale_range=(low, high))
        stats = eda.analyse(scenes, {"large scenes": preset}, num_samples=samples, workers=0 if tiny else 2)
        results[f"scale {low:g}-{high:g}"] = stats["large scenes"]
    eda.plot(results, output / "disparity_scale.png", threshold=192.0,
             title=f"{size[0]}x{size[1]} scenes (disparity up to {size[1] // 4} px), "
                   f"crop {crop_size[0]}x{crop_size[1]}")


def load_run_model(checkpoint: Path) -> torch.nn.Module:
    from models import get_model

    state, name = model_state_from_checkpoint(load_checkpoint(checkpoint))
    model = get_model(name or "crestereo_base")
    model.load_state_dict(state)
    return model.eval()


def prediction_grid(path: Path, checkpoint: Path, tiny: bool, size: tuple[int, int] | None) -> None:
    """The run's prediction on synthetic-val #0, the model run at ``size`` (default native) and scaled back."""
    model = load_run_model(checkpoint)
    options = {"size": (64, 96), "max_disparity": 24.0, "length": 1} if tiny else {}
    images, disparities, masks = make_dataset("synthetic-val", None, **options)[0]
    iterations = 2 if tiny else 10
    prediction = predict_disparity(model, images[0], images[1], num_iters=iterations, size=size)
    at = f", model run at {size[0]}x{size[1]}" if size else ""
    save_disparity_figure(path, images[0], images[1], prediction, disparities[0], masks[0],
                          title=f"{checkpoint.name} on synthetic-val #0, {iterations} iterations{at}")


def read_scalars(log_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {}
    for tag in events.Tags()["scalars"]:
        points = events.Scalars(tag)
        scalars[tag] = ([p.step for p in points], [p.value for p in points])
    return scalars


def training_curves(path: Path, log_dir: Path, run_name: str) -> None:
    scalars = read_scalars(log_dir)
    if "train/loss" not in scalars:
        raise SystemExit(
            f"error: {log_dir} has no train/loss scalars; was the run started with --tensorboard-summaries?"
        )
    validation = sorted(tag for tag in scalars if tag.startswith("valid/") and tag.endswith("/mae"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    steps, loss = scalars["train/loss"]
    axes[0].plot(steps, loss, label="loss")
    if "train/mae" in scalars:
        axes[0].plot(*scalars["train/mae"], label="mae of the last prediction [px]")
    axes[0].set_yscale("log")
    axes[0].set_title("training (window means)", fontsize=9)
    if "train/lr" in scalars:
        axes[1].plot(*scalars["train/lr"], color="tab:green")
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    axes[1].set_title("learning rate", fontsize=9)
    for tag in validation:
        axes[2].plot(*scalars[tag], marker="o", markersize=3, label=tag.split("/")[1])
    axes[2].set_title("validation mae [px]", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"run {run_name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Regenerate assets/", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--output-dir", default=str(Path(__file__).resolve().parents[1] / "assets"))
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="--checkpoint-dir of the quickstart run")
    parser.add_argument("--run-name", default="quickstart", help="--name of the quickstart run")
    parser.add_argument("--inference-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="run the model at this size for the prediction grid (e.g. the run's --eval-size)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and sample counts (seconds; for tests)")
    return parser


def main(args: argparse.Namespace) -> None:
    output = Path(args.output_dir)
    checkpoint = Path(args.checkpoint_dir) / f"{args.run_name}.pth"
    log_dir = Path(args.checkpoint_dir) / "tensorboard" / args.run_name
    missing = [str(p) for p in (checkpoint, log_dir) if not p.exists()]
    if missing:
        raise SystemExit(
            f"error: {' and '.join(missing)} not found: run the quickstart training with --tensorboard-summaries "
            "first, or point --checkpoint-dir / --run-name at a finished run"
        )
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    lr_figure(output / "lr_schedules.png", points=50 if args.tiny else 1000)
    eda_figures(output, args.tiny)
    prediction_grid(output / "prediction_grid.png", checkpoint, args.tiny, args.inference_size)
    training_curves(output / "training_curves.png", log_dir, args.run_name)
    print(f"Wrote the figures to {output}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())

"""Evaluate a stereo model over a sweep of cascades x recurrent iterations and write the published log.

    python cascade_evaluation.py --dataset middlebury2014-train --dataset-root $root \
        --weights CREStereo_Base_Weights.CRESTEREO_ETH_MBL_V1 --device cpu
    torchrun --nproc_per_node 4 cascade_evaluation.py ... --checkpoint checkpoints/run.pth

Writes ``{name}_{dataset}_{size}_eval.log`` (published layout, reference aggregation, 3 decimals) and the same
numbers, unrounded and with the pooled aggregation too, as ``..._eval.json`` into ``--output-dir``, once,
from rank 0. ``{name}`` is the stem of the checkpoint or weights file (``run`` for ``/ckpts/run.pt``) or the
weights name.
"""

import argparse
import json
import os
from pathlib import Path

import torch

from utils import cli
from utils.cli import load_model_from_args
from utils.distributed import cleanup, init_distributed, is_main_process
from utils.evaluation import evaluate, make_eval_loader, size_divisor
from utils.legacy_flags import add_ignored, warn_ignored
from utils.metrics import AVAILABLE_METRICS
from utils.padder import PADDER_MODES
from utils.preprocessing import denormalize
from utils.visualization import save_disparity_figure

DEFAULT_LOG_METRICS = ["mae", "rmse", "1px", "3px", "5px", "relepe"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="PyTorch Stereo Matching Evaluation")
    parser.add_argument("--dataset", default="middlebury2014-train", help="dataset registry name (with ground truth)")
    parser.add_argument("--dataset-root", default="", help="root folder of the datasets")
    cli.add_model_arguments(parser)
    protocol = cli.add_eval_protocol_arguments(parser)
    protocol.add_argument("--workers", default=0, type=int, help="data-loading worker processes")
    cli.add_iteration_arguments(protocol, iterations=[2, 5, 10, 20], cascades=[1, 2])
    protocol.add_argument(
        "--metrics", default=DEFAULT_LOG_METRICS, nargs="+", choices=AVAILABLE_METRICS,
        help="metrics of the log, in order; fl-all is always added",
    )
    protocol.add_argument(
        "--padder-type", default="kitti", choices=list(PADDER_MODES) + ["none"],
        help="where padding to the model's size multiple goes; 'none' requires sizes that are multiples already",
    )
    cli.add_runtime_arguments(parser)
    parser.add_argument("--output-dir", default=".", help="folder for the log, the JSON and --save-images figures")
    parser.add_argument("--save-images", action="store_true", help="save a figure per sample and configuration")
    parser.add_argument(
        "--lr-check", action="store_true",
        help="also score on left-right consistent pixels only (runs each configuration on the mirrored, swapped "
        "pair too) and report the fraction of scored pixels dropped",
    )
    parser.add_argument("--lr-threshold", default=1.0, type=float, help="left-right consistency threshold in px")
    parser.add_argument("--img-folder", default=None,
                        help="folder of the --save-images figures (default: {output-dir}/{name}_images)")
    add_ignored(parser, "--world-size", "the world size comes from torchrun or srun", type=int)
    add_ignored(parser, "--dist-url", "the process group starts from torchrun's or srun's environment")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject bad flag combinations with one clear message each (ValueError), before anything is loaded."""
    cli.check_model_source(args)
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.lr_threshold <= 0:
        raise ValueError(f"--lr-threshold must be positive, got {args.lr_threshold}")
    args.eval_size = cli.parse_eval_size(args.eval_size, args.batch_size)
    cli.check_iterations(args.n_iterations, args.n_cascades)
    args.n_cascades, args.n_iterations = list(dict.fromkeys(args.n_cascades)), list(dict.fromkeys(args.n_iterations))
    if len(args.norm_mean) != 3 or len(args.norm_std) != 3:
        raise ValueError("--norm-mean and --norm-std take three values (R G B)")
    if "fl-all" not in args.metrics:
        args.metrics = list(args.metrics) + ["fl-all"]


def run_name(args: argparse.Namespace) -> str:
    """``{source}_{dataset}_{size}``: the stem of every output file, a plain file name inside ``--output-dir``.

    ``{source}`` is the checkpoint's (or weights file's) stem, whatever its folder and suffix, or the weights name.
    """
    from data.registry import dataset_tag

    source = args.checkpoint or args.weights
    weights_file = args.checkpoint is None and (
        os.sep in source or Path(source).suffix in (".pth", ".pt") or Path(source).is_file()
    )
    name = Path(source).stem if args.checkpoint is not None or weights_file else source
    size = "native" if args.eval_size is None else "x".join(map(str, args.eval_size))
    return f"{name}_{dataset_tag(args.dataset)}_{size}"


def format_log(dataset: str, eval_size: list[int] | None, results: dict, cascades: list[int], iterations: list[int],
               metrics: list[str]) -> str:
    """The published log: one brace block per cascade count, one line per iteration count (3 decimals)."""
    lines = [f"Dataset: {dataset} @size: {eval_size if eval_size is not None else 'native'}:"]
    for c in cascades:
        lines += ["{", f"\t{c}: {{"]
        for i in iterations:
            values = results[(c, i)]["reference"]
            lines.append(f"\t\t{i}: {({m: float(f'{values[m]:.3f}') for m in metrics})}")
        lines += ["\t},", "}"]
    return "\n".join(lines) + "\n"


def make_dataset_for_eval(args: argparse.Namespace):
    """``--dataset`` with the evaluation preset of the protocol flags; raises ValueError naming the fix."""
    from data.registry import make_dataset, require_ground_truth
    from presets import eval_preset_from_args

    spec = require_ground_truth(args.dataset, "evaluation")
    preset = eval_preset_from_args(args, sparse_gt=spec.sparse_gt)
    try:
        dataset = make_dataset(args.dataset, args.dataset_root, transforms=preset, for_eval=True)
    except (FileNotFoundError, OSError) as e:
        raise ValueError(str(e)) from None
    if len(dataset) == 0:
        raise ValueError(f"dataset {args.dataset} under {args.dataset_root!r} is empty; check --dataset-root")
    return dataset


def image_saver(args: argparse.Namespace, folder: Path):
    """An ``on_prediction`` callback writing one figure per sample and configuration."""

    def save(config, indices, left, right, disp, valid, pred):
        c, i = config
        for j in range(pred.shape[0]):
            index = indices[j] if indices is not None else j
            save_disparity_figure(
                folder / f"{c}c_{i}i" / f"{index:05d}.png",
                denormalize(left[j], args.norm_mean, args.norm_std),
                denormalize(right[j], args.norm_mean, args.norm_std),
                pred[j], disp[j], valid[j] if valid is not None else None,
                title=f"{args.dataset} #{index}: {c} cascade(s), {i} iterations",
            )

    return save


def main(args: argparse.Namespace) -> None:
    """Evaluate and write the log; bad input raises ValueError (`cli.run` reports it)."""
    state = init_distributed(args.device)
    if is_main_process():
        warn_ignored(args, "cascade_evaluation.py")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    try:  # fail now rather than after hours of evaluation
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create --output-dir {output_dir}: {e}") from None
    dataset = make_dataset_for_eval(args)
    model, model_name = load_model_from_args(args)
    model.to(state.device)
    if args.padder_type == "none" and args.eval_size is not None:
        divisor = size_divisor(model, max(args.n_cascades))
        if any(s % divisor for s in args.eval_size):
            raise ValueError(
                f"--eval-size {args.eval_size} is not divisible by {divisor}, which {max(args.n_cascades)} cascade(s) "
                "need; pick a multiple or use --padder-type kitti/sintel"
            )

    name = run_name(args)
    images = Path(args.img_folder) if args.img_folder is not None else output_dir / f"{name}_images"
    loader = make_eval_loader(dataset, args.batch_size, args.workers, pin_memory=state.device.type == "cuda")
    try:
        results = evaluate(
            model, loader, args.n_cascades, args.n_iterations, device=state.device, metrics=args.metrics,
            padder_type=args.padder_type, autocast_dtype=cli.autocast_dtype(args.dtype, state.device),
            on_prediction=image_saver(args, images) if args.save_images else None,
            desc=f"{args.dataset} evaluation", lr_threshold=args.lr_threshold if args.lr_check else None,
        )
    except ValueError as e:  # inputs the model rejects (size, iterations), found on the first batch
        raise ValueError(f"evaluation stopped: {e}") from None

    if is_main_process():
        size = args.eval_size if args.eval_size is not None else "native"
        for (c, i), values in results.items():
            summary = ", ".join(f"{m} {v:.4f}" for m, v in values["reference"].items())
            print(f"{args.dataset} @ {size}  cascades {c}  iterations {i}: {summary}")
            if "lr_consistent" in values:
                consistent = values["lr_consistent"]
                summary = ", ".join(f"{m} {v:.4f}" for m, v in consistent["reference"].items())
                print(f"    left-right consistent pixels ({consistent['dropped']:.1%} dropped): {summary}")
        log_path = output_dir / f"{name}_eval.log"
        log = format_log(args.dataset, args.eval_size, results, args.n_cascades, args.n_iterations, args.metrics)
        log_path.write_text(log)
        record = {
            "dataset": args.dataset,
            "eval_size": size,
            "source": args.checkpoint or args.weights,
            "model": model_name,
            "num_samples": len(dataset),
            "batch_size": args.batch_size,
            "padder_type": args.padder_type,
            "log_aggregation": "reference",
            "results": [
                {"cascades": c, "iterations": i, **values} for (c, i), values in results.items()
            ],
        }
        (output_dir / f"{name}_eval.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"Saved the evaluation log to {log_path} and {log_path.with_suffix('.json')}")
    cleanup()


if __name__ == "__main__":
    cli.run(main, get_args_parser(), check_args)

"""Disparity for your own stereo pairs: one pair, two globs or two folders.

Writes, per pair, the raw positive left-view disparity in pixels of the input image (PFM, 16-bit PNG x256 in
the KITTI convention, and/or .npy), a coloured PNG with a colour bar, and metric depth given --focal and
--baseline. The output always has the input's size: inputs are padded for the model and cropped back, and an
optional --inference-size / --scale runs the model at another size and rescales the disparity to the input.

    python predict.py --left left/ --right right/ --weights CREStereo_Base_Weights.MEGVII_V1 --output-dir out
    python predict.py --left left/ --right right/ --backend onnxruntime --onnx crestereo.onnx --output-dir out
"""

import argparse
import glob
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from data.io import read_image, write_pfm
from data.submission import SubmissionWriter, check_submission_dataset
from presets import StereoMatchingEvalPreset
from utils import cli
from utils.cli import load_model_from_args
from utils.distributed import resolve_device
from utils.evaluation import cascade_inference
from utils.deploy import ExportedStereo, load_exported, require_onnx
from utils.lr_consistency import lr_error, right_view_disparity, unreliable_mask
from utils.padder import InputPadder
from utils.visualization import colorbar_mappable, colorize, plt

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
FORMATS = ("pfm", "png16", "npy", "color")
PNG16_SCALE = 256.0


class PairError(Exception):
    """A problem with one input pair; a folder run reports it and goes on with the other pairs."""


@dataclass
class Pair:
    left: Path
    right: Path
    name: str


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Stereo disparity for your own image pairs", add_help=add_help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--left", help="left image, glob pattern (quote it) or folder")
    parser.add_argument("--right", help="right image, glob pattern or folder, paired in sorted order")
    parser.add_argument("--dataset", help="instead of --left/--right: a registry split (e.g. kitti2015-test) or "
                        "folder:ROOT")
    parser.add_argument("--dataset-root", default="", help="root folder of the datasets, for --dataset")
    parser.add_argument("--output-dir", help="where the outputs go (created if needed)")
    parser.add_argument("--submission", metavar="OUT",
                        help="write the upload layout of --dataset's benchmark into OUT instead of --output-dir")
    parser.add_argument("--method-name", default="CREStereo", help="method name in Middlebury's file names")
    parser.add_argument("--lr-check", action="store_true",
                        help="also predict the right view (mirrored swapped pair) and write the left-right error "
                        "(NAME_lr_error.pfm) and unreliable pixels (NAME_occlusion.png, 255); greys them in colour")
    parser.add_argument("--lr-threshold", type=float, default=1.0, help="left-right error (px) above which a "
                        "pixel is unreliable")
    parser.add_argument("--zip", action="store_true", help="with --submission: also write OUT.zip")
    model = cli.add_model_arguments(parser)
    cli.add_iteration_arguments(model, iterations=10, cascades=1)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--inference-size", "--eval-size", dest="inference_size", type=int, nargs=2,
                      metavar=("H", "W"), help="run the model at this size")
    size.add_argument("--scale", type=float, help="run the model at this fraction of the input size (e.g. 0.5)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=["pfm", "png16", "color"],
                        help="outputs per pair: raw PFM, 16-bit PNG (disparity x256, 0 = invalid), .npy, coloured PNG")
    parser.add_argument("--color-max", type=float, default=None,
                        help="disparity at the top of the colour scale; fix it to compare frames (default: per image)")
    parser.add_argument("--focal", type=float, default=None, help="focal length in pixels of the input images")
    parser.add_argument("--baseline", type=float, default=None, help="baseline; depth comes out in the same unit")
    cli.add_runtime_arguments(parser)
    parser.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                        help="onnxruntime: run the --onnx graph of export.py (its iterations and cascades, CPU)")
    parser.add_argument("--onnx", default=None, help="the .onnx file of export.py for --backend onnxruntime")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject bad flags with one message naming the fix (ValueError), before any file or model is touched."""
    if args.backend == "onnxruntime":
        if args.onnx is None or not Path(args.onnx).is_file():
            raise ValueError(f"--backend onnxruntime needs --onnx PATH, an existing export.py graph (got {args.onnx})")
        if args.weights is not None or args.checkpoint is not None:
            raise ValueError("--backend onnxruntime runs the weights inside --onnx; drop --weights/--checkpoint")
        try:
            require_onnx()
        except ImportError as e:
            raise ValueError(f"--backend onnxruntime: {e}") from None
    else:
        cli.check_model_source(args)
    cli.check_iterations(args.n_iterations, args.n_cascades)
    if (args.dataset is None) == (args.left is None and args.right is None):
        raise ValueError("give either --left and --right, or --dataset (with --dataset-root), not both")
    if args.dataset is None and (args.left is None or args.right is None):
        raise ValueError("give both --left and --right")
    if (args.output_dir is None) == (args.submission is None):
        raise ValueError("give exactly one of --output-dir (files per pair) and --submission (a benchmark layout)")
    if args.submission is not None:
        if args.dataset is None:
            raise ValueError("--submission needs --dataset, the benchmark's test split (e.g. kitti2015-test)")
        check_submission_dataset(args.dataset)
        SubmissionWriter(args.submission, args.dataset, args.method_name)
    if args.lr_threshold <= 0:
        raise ValueError("--lr-threshold must be positive (pixels), e.g. 1")
    if args.lr_check and args.submission is not None:
        raise ValueError("--lr-check writes files per pair; use it with --output-dir, not --submission")
    if args.zip and args.submission is None:
        raise ValueError("--zip zips a --submission folder; add --submission OUT")
    if (args.focal is None) != (args.baseline is None):
        raise ValueError("metric depth needs both --focal (pixels) and --baseline; give both or neither")
    if args.focal is not None and (args.focal <= 0 or args.baseline <= 0):
        raise ValueError("--focal and --baseline must be positive")
    if args.inference_size is not None and min(args.inference_size) < 1:
        raise ValueError("--inference-size needs two positive integers H W")
    if args.scale is not None and args.scale <= 0:
        raise ValueError("--scale must be positive, e.g. 0.5 to halve both sides")
    if args.color_max is not None and args.color_max <= 0:
        raise ValueError("--color-max must be positive")


def expand_inputs(spec: str) -> list[Path]:
    """Files named by a path, a glob pattern or a folder (its images, not recursive), sorted."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if glob.has_magic(spec):
        return sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    return [path] if path.is_file() else []


def output_names(lefts: list[Path]) -> list[str]:
    """Distinct output names: each left path relative to the inputs' common folder, without its suffix.

    Pairs in different sub-folders (scene_a/im0.png, scene_b/im0.png) keep their folders, so they never
    overwrite each other; two inputs that differ only by suffix (a.png, a.jpg) keep it in the name.
    """
    resolved = [p.resolve() for p in lefts]
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    relative = [p.relative_to(root) for p in resolved]
    names = [r.with_suffix("").as_posix() for r in relative]
    duplicated = {n for n in names if names.count(n) > 1}
    return [
        r.with_name(r.name.replace(".", "_")).as_posix() if n in duplicated else n for n, r in zip(names, relative)
    ]


def collect_pairs(left: str, right: str) -> list[Pair]:
    lefts, rights = expand_inputs(left), expand_inputs(right)
    if not lefts or not rights:
        missing = left if not lefts else right
        raise ValueError(
            f"no images found for {missing!r}; give an existing image, a folder of images "
            f"({', '.join(IMAGE_EXTENSIONS)}) or a quoted glob pattern"
        )
    if len(lefts) != len(rights):
        raise ValueError(
            f"found {len(lefts)} left and {len(rights)} right images; pairs are matched in sorted order, "
            "so both sides need the same number of files"
        )
    return [Pair(lp, rp, name) for lp, rp, name in zip(lefts, rights, output_names(lefts))]


def dataset_pairs(name: str, root: str) -> list[Pair]:
    """The image pairs of a registry split or folder dataset, named as the left images' relative paths."""
    from data.registry import image_pairs, make_dataset

    try:
        paths = image_pairs(make_dataset(name, root or None))
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    lefts = [Path(left) for left, _ in paths]
    return [Pair(lp, Path(rp), n) for (_, rp), lp, n in zip(paths, lefts, output_names(lefts))]


def check_output_dir(path: Path) -> None:
    """Fail now, not after the first forward pass, if the output folder cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"cannot write to --output-dir {path} ({e.strerror}); pick a writable folder") from None


def load_image(path: Path) -> torch.Tensor:
    """RGB uint8 (3, H, W) (grey and RGBA inputs are converted); a bad file is a PairError."""
    try:
        return read_image(path)
    except (OSError, ValueError) as e:
        raise PairError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def model_size(height: int, width: int, args: argparse.Namespace, static: tuple[int, int] | None = None
               ) -> tuple[int, int]:
    """The size the model runs at for an input of ``height`` x ``width``, before padding: a static exported
    graph's own size ``static``, else --inference-size, --scale or the input size."""
    if static is not None:
        return static
    if args.inference_size is not None:
        return tuple(args.inference_size)
    if args.scale is not None:
        return max(1, round(height * args.scale)), max(1, round(width * args.scale))
    return height, width


@torch.inference_mode()
def predict_disparity(
    model: torch.nn.Module,
    left: torch.Tensor,
    right: torch.Tensor,
    *,
    num_iters: int,
    num_cascades: int = 1,
    size: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Disparity (H, W), float32 on the CPU, in pixels of the input, for uint8 images (3, H, W) of equal size.

    The model runs at ``size`` (default: the input size), padded to the multiple it needs; the prediction is
    cropped back, resized to the input size and multiplied by ``W / size[1]``.
    """
    exported = isinstance(model, ExportedStereo)
    device = torch.device("cpu") if exported else next(model.parameters()).device
    height, width = left.shape[-2:]
    size = (height, width) if size is None else tuple(size)
    preset = StereoMatchingEvalPreset(resize_size=None if size == (height, width) else size)
    (left_t, right_t), _, _ = preset((left, right), (None, None), (None, None))
    divisor = model.metadata["size_divisor"] if exported else model.size_divisor * 2 ** (num_cascades - 1)
    padder = InputPadder(left_t.shape, divisor=divisor)
    left_t, right_t = padder.pad(left_t[None].to(device), right_t[None].to(device))
    if exported:
        if model.input_dtype == torch.uint8:  # the graph normalises: give it the (resized) images back as uint8
            left_t, right_t = ((x * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8) for x in (left_t, right_t))
        prediction = model(left_t, right_t)
    else:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            prediction = cascade_inference(model, left_t, right_t, num_iters, num_cascades)
    disparity = padder.unpad(prediction[:, :1].float())
    if size != (height, width):
        disparity = F.interpolate(disparity, size=(height, width), mode="bilinear", align_corners=False)
        disparity = disparity * (width / size[1])
    return disparity[0, 0].cpu()


def write_png16(path: Path, disparity: np.ndarray) -> None:
    """KITTI convention: uint16 = round(disparity * 256), 0 = invalid; non-positive values become 0."""
    encoded = np.clip(np.round(np.nan_to_num(disparity, nan=0.0) * PNG16_SCALE), 0, np.iinfo(np.uint16).max)
    Image.fromarray(encoded.astype(np.uint16)).save(path)


def write_color(path: Path, disparity: np.ndarray, vmax: float | None, label: str = "disparity [px]",
                unreliable: np.ndarray | None = None) -> None:
    """The map at its own resolution (small maps enlarged to 300 px high) with a colour bar on the right.

    Darker = smaller disparity = farther; the scale runs from 0 to ``vmax`` (default: the 99th percentile).
    Pixels marked ``unreliable`` (left-right check) are grey.
    """
    height, width = disparity.shape
    top = vmax if vmax is not None else float(np.percentile(disparity, 99))
    zoom, margin, dpi = max(1.0, 300 / height), 110, 100
    shown_w, shown_h = width * zoom, height * zoom
    fig = plt.figure(figsize=((shown_w + margin) / dpi, shown_h / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, shown_w / (shown_w + margin), 1.0))
    rgb = colorize(disparity, 0.0, top, unreliable, invalid_color=(0.5, 0.5, 0.5))
    ax.imshow(rgb.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    bar_ax = fig.add_axes(((shown_w + 12) / (shown_w + margin), 0.05, 18 / (shown_w + margin), 0.9))
    fig.colorbar(colorbar_mappable(0.0, top), cax=bar_ax, label=label)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def depth_from_disparity(disparity: np.ndarray, focal: float, baseline: float) -> np.ndarray:
    """depth = focal * baseline / disparity, in the unit of the baseline; 0 where disparity <= 0."""
    depth = np.zeros_like(disparity)
    positive = disparity > 0
    depth[positive] = focal * baseline / disparity[positive]
    return depth


def write_outputs(stem: Path, disparity: np.ndarray, args: argparse.Namespace,
                  error: np.ndarray | None = None) -> None:
    """The files of one pair; with the left-right ``error``, also ``_lr_error.pfm`` and ``_occlusion.png``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    unreliable = None
    if error is not None:
        unreliable = unreliable_mask(torch.from_numpy(error), args.lr_threshold).numpy()
        write_pfm(stem.with_name(stem.name + "_lr_error.pfm"), error)
        Image.fromarray(unreliable.astype(np.uint8) * 255).save(stem.with_name(stem.name + "_occlusion.png"))
    if "pfm" in args.formats:
        write_pfm(stem.with_name(stem.name + ".pfm"), disparity)
    if "png16" in args.formats:
        write_png16(stem.with_name(stem.name + ".png"), disparity)
    if "npy" in args.formats:
        np.save(stem.with_name(stem.name + ".npy"), disparity)
    if "color" in args.formats:
        write_color(stem.with_name(stem.name + "_color.png"), disparity, args.color_max, unreliable=unreliable)
    if args.focal is not None:
        depth = depth_from_disparity(disparity, args.focal, args.baseline)
        if "pfm" in args.formats:
            write_pfm(stem.with_name(stem.name + "_depth.pfm"), depth)
        if "npy" in args.formats or "pfm" not in args.formats:
            np.save(stem.with_name(stem.name + "_depth.npy"), depth)


def process_pair(model: torch.nn.Module, pair: Pair, args: argparse.Namespace, device: torch.device,
                 writer: SubmissionWriter | None = None) -> float:
    """Predict one pair and write its outputs (or its submission files); returns the inference seconds.

    Problems with this pair raise PairError.
    """
    left, right = load_image(pair.left), load_image(pair.right)
    if left.shape != right.shape:
        raise PairError(
            f"{pair.left} is {left.shape[1]}x{left.shape[2]} but {pair.right} is {right.shape[1]}x{right.shape[2]}; "
            "a rectified pair has equal sizes"
        )
    start = time.perf_counter()
    try:
        def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return predict_disparity(
                model, a, b, num_iters=args.n_iterations, num_cascades=args.n_cascades,
                size=model_size(left.shape[1], left.shape[2], args, getattr(model, "static_size", None)),
                dtype=cli.autocast_dtype(args.dtype, device) or torch.float32,
            )

        disparity_t = run(left, right)
        seconds = time.perf_counter() - start  # the result is on the CPU, so the device has finished
        disparity, error = disparity_t.numpy(), None
        if args.lr_check:
            error = lr_error(disparity_t, right_view_disparity(run, left, right)).numpy()
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise PairError(
            f"out of memory on {pair.left} ({left.shape[1]}x{left.shape[2]}); run at a smaller size with --scale 0.5 "
            "or --inference-size H W"
        ) from None
    try:
        if writer is not None:
            writer.write(pair.left, disparity, seconds)
        else:
            write_outputs(Path(args.output_dir) / pair.name, disparity, args, error)
    except OSError as e:
        raise PairError(f"cannot write the outputs of {pair.left}: {e}") from None
    return seconds


def main(args: argparse.Namespace) -> int:
    """Predict every pair; 1 if any pair failed. Bad input raises ValueError (`cli.run` reports it)."""
    pairs = dataset_pairs(args.dataset, args.dataset_root) if args.dataset else collect_pairs(args.left, args.right)
    destination = Path(args.submission or args.output_dir)
    check_output_dir(destination)
    writer = SubmissionWriter(args.submission, args.dataset, args.method_name) if args.submission else None
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.backend == "onnxruntime":
        model = load_exported(args.onnx, args.threads)
        if model.static_size is not None and (args.inference_size is not None or args.scale is not None):
            raise ValueError(f"{args.onnx} is a static {model.static_size[0]}x{model.static_size[1]} graph: every "
                             "pair runs at that size, so drop --inference-size/--scale (or export with --dynamic)")
        print(f"onnxruntime: {args.onnx}, {model.metadata.get('iterations')} iterations and "
              f"{model.metadata.get('cascades')} cascade(s) fixed in the graph")
    else:
        model = load_model_from_args(args)[0].to(device).eval()
    failures = []
    for pair in tqdm(pairs, desc="predict", unit="pair", disable=len(pairs) == 1):
        try:
            seconds = process_pair(model, pair, args, device, writer)
            tqdm.write(f"{pair.name}: {seconds:.3f} s")
        except PairError as e:
            failures.append(str(e))
            tqdm.write(f"failed: {e}", file=sys.stderr)
    print(f"Wrote {len(pairs) - len(failures)} of {len(pairs)} pairs to {destination}")
    if writer is not None and not failures:
        print(f"Submission ready: {writer.finish(args.zip)}")
    if failures:
        print(f"{len(failures)} pair(s) failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, get_args_parser(), check_args))

"""Export a stereo model to ONNX or torch.export (.pt2), then check the export against the eager model.

The graph takes ``left`` and ``right`` float32 (B, 3, H, W) images normalised to [-1, 1] as the eval preset does,
and returns ``disparity`` float32 (B, 1, H, W), positive, in input pixels, for a fixed number of iterations and
cascades. After writing, the exported model runs (ONNX Runtime, or the loaded program) on a real stereo pair and
on random inputs; the command prints the max absolute difference to the eager model and both runtimes, and exits
with 1 when a difference exceeds --atol.

    python export.py --model crestereo_base --weights CREStereo_Base_Weights.MEGVII_V1 --format onnx \
        --height 384 --width 512 --iterations 10 --output crestereo.onnx
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from models import get_model, list_models
from utils.cpu_memory import keep_freed_memory
from utils.deploy import (
    FORMATS,
    MEAN,
    ONNX_OPSET,
    STD,
    DeployableStereo,
    compare,
    constraint,
    export_program,
    load_exported,
    require_onnx,
    save_onnx,
    save_pt2,
)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a stereo model to ONNX or torch.export and check it against the eager model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="crestereo_base", help=f"registry name: {', '.join(list_models())}")
    parser.add_argument("--weights", default=None,
                        help="weights enum name, .pth state dict or training checkpoint (default: random init)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="onnx, or pt2 (torch.export.save)")
    parser.add_argument("--output", required=True, help="file to write (.onnx or .pt2); its folder must exist")
    parser.add_argument("--height", type=int, default=384, help="input height (example height when --dynamic)")
    parser.add_argument("--width", type=int, default=512, help="input width (example width when --dynamic)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of a static graph")
    parser.add_argument("--iterations", type=int, default=10, help="recurrent iterations per cascade, fixed")
    parser.add_argument("--cascades", type=int, default=1, help="coarse-to-fine cascades, fixed (2: one graph)")
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic batch, height and width (multiples of the model's size divisor)")
    parser.add_argument("--with-preprocessing", action="store_true",
                        help="also write <output stem>_uint8<suffix>, taking uint8 images and normalising inside")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset (at least 17)")
    parser.add_argument("--atol", type=float, default=1e-3, help="max absolute difference to eager, in pixels")
    parser.add_argument("--runs", type=int, default=1, help="timed runs per check (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of eager and exported runs")
    return parser


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Reject bad flags with one message naming the fix, before the model is built."""
    if args.model not in list_models():
        parser.error(f"unknown --model {args.model!r}; choose from {', '.join(list_models())}")
    output = Path(args.output)
    if output.suffix != f".{args.format}":
        parser.error(f"--output {output} must end in .{args.format} for --format {args.format}")
    if not output.parent.is_dir():
        parser.error(f"the folder of --output {output} does not exist; create {output.parent} first")
    if min(args.height, args.width, args.batch, args.iterations, args.cascades, args.runs) < 1:
        parser.error("--height, --width, --batch, --iterations, --cascades and --runs must be at least 1")
    if args.format == "onnx" and args.opset < 17:
        parser.error(f"--opset {args.opset} is too old: give 17 or newer")
    if args.atol < 0:
        parser.error("--atol must be non-negative")
    if args.format == "onnx":
        try:
            require_onnx()
        except ImportError as e:
            parser.error(f"--format onnx: {e}")


def build(args: argparse.Namespace, parser: argparse.ArgumentParser) -> torch.nn.Module:
    """The eager model with --weights; a size that the model cannot take is rejected here."""
    try:
        model = get_model(args.model, weights=args.weights).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        parser.error(f"cannot load --weights {args.weights}: {str(e).splitlines()[0]}")
    divisor = DeployableStereo(model, args.iterations, args.cascades).size_divisor
    if args.height % divisor or args.width % divisor:
        parser.error(
            f"--height {args.height} and --width {args.width} must be multiples of {divisor} for {args.model} with "
            f"{args.cascades} cascade(s); e.g. --height {-(-args.height // divisor) * divisor} "
            f"--width {-(-args.width // divisor) * divisor}"
        )
    return model


def real_pair(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A real stereo pair as uint8 (1, 3, H, W): scikit-image's Middlebury motorcycle when scikit-image is
    installed, else a synthetic scene; resized (bilinear, no antialiasing) as the eval preset resizes."""
    try:
        from skimage.data import stereo_motorcycle

        left, right, _ = stereo_motorcycle()
        pair = [torch.from_numpy(x).permute(2, 0, 1) for x in (left, right)]
        name = "motorcycle"
    except ImportError:
        from data import make_dataset

        (left, right), _, _ = make_dataset("synthetic-val", None)[0]
        pair, name = [left, right], "synthetic scene"
    resized = [
        F.interpolate(x[None].float(), size=(height, width), mode="bilinear", align_corners=False, antialias=False)
        for x in pair
    ]
    return *(x.round().clamp(0, 255).to(torch.uint8) for x in resized), name


def check_inputs(args: argparse.Namespace, divisor: int, uint8: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The real pair and random inputs at the export size; with --dynamic also batch 2 at a larger size."""
    left, right, name = real_pair(args.height, args.width)
    generator = torch.Generator().manual_seed(0)
    sizes = [(args.batch, args.height, args.width)]
    if args.dynamic:
        sizes.append((2, args.height + divisor, args.width + divisor))
    inputs = {f"{name} {args.height}x{args.width}": (left.expand(args.batch, -1, -1, -1),
                                                    right.expand(args.batch, -1, -1, -1))}
    for b, h, w in sizes:
        inputs[f"random {b}x3x{h}x{w}"] = tuple(
            torch.randint(0, 256, (b, 3, h, w), generator=generator, dtype=torch.uint8) for _ in range(2)
        )
    if uint8:
        return inputs
    return {k: tuple((x.float() / 255 - MEAN) / STD for x in pair) for k, pair in inputs.items()}


def variant_path(output: Path, uint8: bool) -> Path:
    return output.with_name(f"{output.stem}_uint8{output.suffix}") if uint8 else output


def export_and_check(model: torch.nn.Module, args: argparse.Namespace, uint8: bool) -> bool:
    """Write one variant (float or uint8 input) and check it; True when every difference is within --atol."""
    module = DeployableStereo(model, args.iterations, args.cascades, uint8_input=uint8).eval()
    divisor = module.size_divisor
    inputs = check_inputs(args, divisor, uint8)
    example = next(iter(inputs.values()))
    if args.dynamic and example[0].shape[0] < 2:
        example = tuple(x.expand(2, -1, -1, -1).contiguous() for x in example)  # a batch of 1 would be fixed
    path = variant_path(Path(args.output), uint8)
    metadata = {
        "model": args.model,
        "weights": str(args.weights),
        "iterations": args.iterations,
        "cascades": args.cascades,
        "input": "uint8 (B, 3, H, W) in [0, 255]" if uint8 else "float32 (B, 3, H, W), (x / 255 - 0.5) / 0.5",
        "output": "disparity float32 (B, 1, H, W), positive, input pixels",
        "size_divisor": divisor,
        "shape": constraint(divisor) if args.dynamic else f"static {args.batch}x3x{args.height}x{args.width}",
        "torch": torch.__version__,
    }
    try:
        program = export_program(module, example, args.dynamic)
    except ValueError as e:  # the model's own input checks (too small, too few iterations)
        raise SystemExit(f"error: {args.model} rejects these settings: {str(e).splitlines()[0]}") from None
    if args.format == "onnx":
        save_onnx(program, path, metadata | {"opset": args.opset}, args.opset)
    else:
        save_pt2(program, path, metadata)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {metadata['input']} -> {metadata['output']}; "
          f"{metadata['shape']}", flush=True)
    rows = compare(load_exported(path, args.threads), module, inputs, args.atol, args.runs)
    backend = "onnxruntime" if args.format == "onnx" else "torch.export"
    for row in rows:
        verdict = "ok" if row["ok"] else f"FAILED (above --atol {args.atol:g})"
        print(f"  {row['input']:<32} max abs diff {row['max_abs_diff']:.2e} px  eager {row['eager_s']:.3f} s  "
              f"{backend} {row['exported_s']:.3f} s  {verdict}", flush=True)
    return all(row["ok"] for row in rows)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build(args, parser)
    ok = True
    for uint8 in (False, True) if args.with_preprocessing else (False,):
        ok = export_and_check(model, args, uint8) and ok
    if not ok:
        print(f"error: the export differs from the eager model by more than --atol {args.atol:g} px", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = get_args_parser()
    arguments = parser.parse_args()
    check_args(arguments, parser)
    keep_freed_memory()
    sys.exit(main(arguments, parser))

"""The command-line layer shared by the entry scripts: argument groups, shared value parsing, model loading.

One name per idea; the spellings of torchvision's reference scripts and of earlier versions of this repository
stay accepted as aliases (same destination):

    --n-iterations   --n_iterations --recurrent-updates --iters
    --n-cascades     --n_cascades
    --batch-size     --batch
    --dtype          --mixed-precision   (given without a value: each script's old meaning)

One error rule: library code and each script's ``check_args(args)`` raise ``ValueError`` with a message that
names the fix; ``run`` turns it into ``parser.error`` (one line on stderr, exit status 2), before any expensive
work where the check allows.
"""

import argparse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.cpu_memory import keep_freed_memory

ITERATIONS_FLAGS = ("--n-iterations", "--n_iterations", "--recurrent-updates", "--iters")
CASCADES_FLAGS = ("--n-cascades", "--n_cascades")
BATCH_SIZE_FLAGS = ("--batch-size", "--batch")
DTYPE_FLAGS = ("--dtype", "--mixed-precision")
DTYPES = ("float32", "bfloat16", "float16", "auto")
INTERPOLATION_STRATEGIES = ("bilinear", "bicubic", "mixed")


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that also reads arguments from files named ``@path`` (the recipes in
    recipes/): whitespace-separated, several per line, ``#`` starts a comment line. Later flags win."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fromfile_prefix_chars", "@")
        super().__init__(*args, **kwargs)

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        return [] if arg_line.lstrip().startswith("#") else arg_line.split()


def add_model_arguments(parser: argparse.ArgumentParser, *, checkpoint: bool = True) -> argparse._ArgumentGroup:
    """``--model`` and its weights: ``--weights`` (published enum name or a .pth) or ``--checkpoint``; see
    `check_model_source`. Without ``checkpoint`` only ``--weights`` (optional: training may start from scratch)."""
    group = parser.add_argument_group("model and weights")
    group.add_argument("--model", default="crestereo_base",
                       help="model registry name" + (" (a training checkpoint names its own)" if checkpoint else ""))
    group.add_argument("--weights", default=None,
                       help="published weights (e.g. CREStereo_Base_Weights.MEGVII_V1) or a .pth file")
    if checkpoint:
        group.add_argument("--checkpoint", default=None, help="a training checkpoint of train.py, or a raw state dict")
    return group


def check_model_source(args: argparse.Namespace) -> None:
    """Exactly one of ``--weights`` and ``--checkpoint``, and the file it names exists."""
    if (args.weights is None) == (args.checkpoint is None):
        raise ValueError(
            "give exactly one of --weights (published weights or a .pth) and --checkpoint (a training checkpoint)"
        )
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise ValueError(f"--checkpoint {args.checkpoint} does not exist")
    if args.weights is not None and args.weights.endswith((".pth", ".pt")) and not Path(args.weights).is_file():
        raise ValueError(f"--weights {args.weights} does not exist; give an existing .pth file or a weights enum name")


def add_iteration_arguments(
    group: argparse._ActionsContainer, *, iterations: int | list[int], cascades: int | list[int] | None = None
) -> None:
    """``--n-iterations`` (recurrent refinement updates per cascade level) and, with ``cascades``,
    ``--n-cascades``; list defaults make them sweeps (several values)."""
    sweep = isinstance(iterations, list)
    nargs = "+" if sweep else None
    group.add_argument(*ITERATIONS_FLAGS, dest="n_iterations", default=iterations, type=int, nargs=nargs,
                       help="recurrent refinement updates per cascade level")
    if cascades is not None:
        group.add_argument(*CASCADES_FLAGS, dest="n_cascades", default=cascades, type=int, nargs=nargs,
                           help="coarse-to-fine cascade levels")


def add_eval_protocol_arguments(parser: argparse.ArgumentParser, *, batch_size: bool = True) -> argparse._ArgumentGroup:
    """How evaluation samples are preprocessed: resize (``--eval-size``), normalisation, grayscale, threshold."""
    group = parser.add_argument_group("evaluation protocol")
    group.add_argument("--eval-size", default=["384", "512"], nargs="+",
                       help="H W to resize every sample to (published protocol: 384 512), or 'native'")
    group.add_argument("--norm-mean", default=[0.5, 0.5, 0.5], type=float, nargs="+", help="input normalisation mean")
    group.add_argument("--norm-std", default=[0.5, 0.5, 0.5], type=float, nargs="+", help="input normalisation std")
    group.add_argument("--use-grayscale", action="store_true", help="grayscale inputs (3 identical channels)")
    group.add_argument("--interpolation-strategy", default="bilinear", choices=INTERPOLATION_STRATEGIES,
                       help="image interpolation of the --eval-size resize")
    group.add_argument("--max-disparity", default=None, type=float,
                       help="ignore ground truth at or above this disparity")
    if batch_size:
        group.add_argument(*BATCH_SIZE_FLAGS, dest="batch_size", default=1, type=int,
                           help="1 gives the published per-image averages")
    return group


def add_training_data_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """train.py's dataset, mixture and augmentation flags, also taken by the scripts that must draw samples as
    train.py does (disparity_eda.py, ``benchmark.py data``). ``presets.train_preset_from_args`` and
    ``presets.make_training_mixture`` build the preset and the mixture from them."""
    group = parser.add_argument_group("training data and augmentation")
    group.add_argument("--dataset-root", default="", help="folder holding every dataset's directory")
    group.add_argument("--train-datasets", default=["crestereo"], nargs="+", help="registry names of the mixture")
    group.add_argument("--dataset-steps", default=[300000], type=int, nargs="+",
                       help="steps (or epochs with --steps-is-epochs) per training dataset, one per name")
    group.add_argument("--steps-is-epochs", action="store_true", help="read --dataset-steps as epochs per dataset")
    group.add_argument(*BATCH_SIZE_FLAGS, dest="batch_size", default=2, type=int, help="samples per process and step")
    group.add_argument("--seed", default=42, type=int, help="seeds the mixture order, augmentation and model init")
    group.add_argument("--crop-size", default=[384, 512], type=int, nargs=2, help="training crop H W")
    group.add_argument("--resize-size", default=None, type=int, nargs=2,
                       help="optional fixed resize H W before cropping")
    group.add_argument("--scale-range", default=[0.6, 1.0], type=float, nargs=2, help="random rescale range")
    group.add_argument("--rescale-prob", default=1.0, type=float, help="probability of the random rescale")
    group.add_argument("--scaling-type", default="linear", choices=["linear", "exponential"],
                       help="scale = a uniform draw from --scale-range (linear) or 2 ** that draw (exponential)")
    group.add_argument("--flip-prob", default=0.5, type=float, help="horizontal flip (with view swap) probability")
    group.add_argument("--vertical-flip-prob", default=0.0, type=float, help="vertical flip probability (both views)")
    group.add_argument("--norm-mean", default=[0.5, 0.5, 0.5], type=float, nargs="+", help="input normalisation mean")
    group.add_argument("--norm-std", default=[0.5, 0.5, 0.5], type=float, nargs="+", help="input normalisation std")
    group.add_argument("--use-grayscale", action="store_true", help="grey images (3 equal channels)")
    group.add_argument("--max-disparity", default=None, type=float, help="ground truth at or above it is invalid")
    group.add_argument("--interpolation-strategy", default="bilinear", choices=INTERPOLATION_STRATEGIES,
                       help="image resampling (mixed: bilinear or bicubic at random)")
    group.add_argument("--spatial-shift-prob", default=1.0, type=float,
                       help="probability of the small rotation and shift of the right view")
    group.add_argument("--spatial-shift-max-angle", default=0.1, type=float, help="degrees")
    group.add_argument("--spatial-shift-max-displacement", default=2.0, type=float, help="pixels")
    group.add_argument("--gamma-range", default=[0.8, 1.2], type=float, nargs=2, help="gamma adjustment range")
    group.add_argument("--brightness-range", default=[0.8, 1.2], type=float, nargs="+", help="colour jitter")
    group.add_argument("--contrast-range", default=[0.8, 1.2], type=float, nargs="+", help="colour jitter: contrast")
    group.add_argument("--saturation-range", default=[0.0], type=float, nargs="+", help="colour jitter: saturation")
    group.add_argument("--hue-range", default=[0.0], type=float, nargs="+", help="colour jitter: hue")
    group.add_argument("--asymmetric-jitter-prob", default=1.0, type=float,
                       help="probability of different colour changes per view")
    group.add_argument("--occlusion-prob", default=0.5, type=float, help="right-image occlusion probability")
    group.add_argument("--occlusion-px-range", default=[50, 100], type=int, nargs=2, help="occlusion side, px")
    group.add_argument("--erase-prob", default=0.0, type=float, help="random erasing probability (right view)")
    group.add_argument("--erase-px-range", default=[50, 100], type=int, nargs=2, help="erased box side, pixels")
    group.add_argument("--erase-num-repeats", default=1, type=int, help="boxes erased per sample")
    return group


def add_runtime_arguments(
    parser: argparse.ArgumentParser,
    *,
    device: str = "auto",
    dtype: str = "float32",
    mixed_precision: str = "auto",
    threads: int | None = None,
) -> argparse._ArgumentGroup:
    """``--device``, ``--dtype`` and ``--threads``.

    ``--dtype`` is the autocast dtype (``auto``: float16 on CUDA, bfloat16 on CPU); given without a value (the
    ``--mixed-precision`` spelling) it means ``mixed_precision``."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default=device, help="auto, cpu, cuda or cuda:N (auto: cuda when available)")
    group.add_argument(*DTYPE_FLAGS, dest="dtype", nargs="?", const=mixed_precision, default=dtype, choices=DTYPES,
                       help=f"autocast dtype (auto: float16 on CUDA, bfloat16 on CPU; without a value: "
                            f"{mixed_precision})")
    group.add_argument("--threads", default=threads, type=int,
                       help="torch CPU threads (default: torch's choice)" if threads is None else "torch CPU threads")
    return group


def parse_eval_size(values: Sequence[str] | None, batch_size: int = 1, batch_flag: str = "--batch-size"
                    ) -> list[int] | None:
    """``--eval-size`` as ``[H, W]``, or ``None`` for ``native`` (each image's own size, so batches of one)."""
    if values is None:
        return None
    values = [str(v) for v in values]
    if values == ["native"]:
        if batch_size != 1:
            raise ValueError(f"--eval-size native keeps each image's own size, so it needs {batch_flag} 1.")
        return None
    try:
        size = [int(v) for v in values]
    except ValueError:
        size = []
    if len(size) != 2 or min(size) < 1:
        raise ValueError("--eval-size takes two positive integers H W (e.g. 384 512) or the word 'native'.")
    return size


def check_iterations(n_iterations: int | Sequence[int], n_cascades: int | Sequence[int] = 1) -> None:
    """``--n-iterations`` and ``--n-cascades`` are positive."""
    values = [*_as_list(n_iterations), *_as_list(n_cascades)]
    if min(values) < 1:
        raise ValueError("--n-cascades and --n-iterations take integers of at least 1.")


def _as_list(value: int | Sequence[int]) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The torch dtype of ``--dtype`` on ``device``; ``None`` for float32 (no autocast)."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    return None if dtype == "float32" else getattr(torch, dtype)


def load_model_from_args(args: argparse.Namespace, **kwargs: Any) -> tuple[nn.Module, str]:
    """The model of ``--weights`` or ``--checkpoint`` and its name (a training checkpoint names its own model,
    otherwise ``--model``); ``kwargs`` go to the model builder. Raises ValueError naming what to change."""
    from models import check_architecture, get_model, load_checked
    from utils.checkpoint import load_checkpoint, model_state_from_checkpoint

    source = getattr(args, "checkpoint", None) or args.weights or f"--model {args.model}"
    try:
        if getattr(args, "checkpoint", None) is not None:
            state, name = model_state_from_checkpoint(load_checkpoint(args.checkpoint))
            name = name or args.model
            check_architecture(name, state, f"--checkpoint {args.checkpoint}")
            model = get_model(name, **kwargs)
            load_checked(model, state, f"--checkpoint {args.checkpoint}")
            return model, name
        return get_model(args.model, weights=args.weights, **kwargs), args.model
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        # OSError covers a missing file and a failed download (no network: pass a local .pth instead).
        raise ValueError(f"cannot load the model from {source}: {e}") from None


@contextmanager
def reported_by(parser: argparse.ArgumentParser) -> Iterator[None]:
    """Turn a ValueError inside the block into ``parser.error`` (its message on one line, exit status 2)."""
    try:
        yield
    except ValueError as e:
        parser.error(str(e))


def parse_args(
    parser: argparse.ArgumentParser,
    check: Callable[[argparse.Namespace], None] | None = None,
    argv: Sequence[str] | None = None,
) -> argparse.Namespace:
    """``parser.parse_args(argv)``, then ``check(args)`` (which may normalise values), errors reported by the
    parser."""
    args = parser.parse_args(argv)
    if check is not None:
        with reported_by(parser):
            check(args)
    return args


def run(
    main: Callable[[argparse.Namespace], Any],
    parser: argparse.ArgumentParser,
    check: Callable[[argparse.Namespace], None] | None = None,
    argv: Sequence[str] | None = None,
) -> Any:
    """Parse and check the arguments and call ``main(args)``; a ValueError anywhere becomes ``parser.error``.
    Freed CPU memory is kept for reuse from here on (``utils.cpu_memory``)."""
    args = parse_args(parser, check, argv)
    keep_freed_memory()
    with reported_by(parser):
        return main(args)

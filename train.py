"""Train a stereo model on a mixture of datasets: plain python, torchrun (one or many nodes) or SLURM srun.

    python train.py --device cpu ...                       # one process
    torchrun --nproc_per_node 8 train.py ...               # DDP, nccl on GPUs, gloo on CPU
    srun python train.py ...                               # rank and world size from SLURM

Checkpoints `{checkpoint_dir}/{name}_{step}.pth` and `{name}.pth` (the latest) are written atomically by
rank 0. `--resume-path` alone starts a new schedule from those weights; with `--resume-schedule` the run
continues exactly where the checkpoint stopped. A run restarted by `torchrun --max-restarts` (or requeued
by SLURM) resumes from its latest checkpoint by itself.
"""

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from data.collate import stereo_collate
from data.mixture import MixtureSampler, TrainingMixture, check_dataset_steps
from models.weights import compact_state_dict, load_checked
from presets import eval_preset_from_args, make_training_mixture
from utils import cli
from utils.checkpoint import check_writable, link_checkpoint, load_checkpoint, model_state_from_checkpoint
from utils.checkpoint import plain_args, prune_step_checkpoints, rng_state, save_checkpoint, set_rng_state
from utils.distributed import DistState, all_reduce_sum, cleanup, init_distributed, is_main_process
from utils.evaluation import evaluate, make_eval_loader
from utils.logger import TrainingLogger, write_training_images
from utils.legacy_flags import add_ignored, parse_bool, warn_ignored
from utils.losses import LOSS_AVERAGES, LossConfig, training_loss
from utils.lr_schedule import DECAY_METHODS, WARMUP_METHODS, LRSchedule, make_lr_schedule
from utils.preemption import StopRequest, checkpoint_group, ignore_stop_signals, wait_for_checkpoint
from utils.metrics import AVAILABLE_METRICS, DEFAULT_METRICS, is_improvement

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

# Flags that fix the sample stream: a run can only be continued exactly when they are unchanged.
DATA_FLAGS = ("train_datasets", "dataset_steps", "steps_is_epochs", "batch_size", "seed")


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description="PyTorch Stereo Matching Training")
    run = parser.add_argument_group("run")
    run.add_argument("--name", default="crestereo", help="run name: checkpoint files and TensorBoard folder")
    run.add_argument("--checkpoint-dir", default="checkpoints", help="where checkpoints and tensorboard/ go")
    cli.add_training_data_arguments(parser)
    run.add_argument("--workers", default=4, type=int, help="data-loading processes per training process")

    validation = parser.add_argument_group("validation")
    validation.add_argument("--test-datasets", default=["middlebury2014-train"], nargs="+",
                            help="registry datasets with ground truth to validate on")
    validation.add_argument("--valid-frequency", default=1000, type=int,
                            help="validate every N steps, at the start of a new run and at the end (0: never)")
    validation.add_argument("--eval-size", default=["384", "512"], nargs="+",
                            help="validation resize H W, or 'native' to validate at each image's own size")
    validation.add_argument("--eval-batch-size", default=1, type=int,
                            help="validation batch size (1: per-image averages)")
    validation.add_argument("--padder-type", default="kitti", choices=["kitti", "sintel"],
                            help="where padding to the size divisor goes (kitti: bottom, centred horizontally)")
    validation.add_argument("--metrics", default=list(DEFAULT_METRICS), nargs="+", choices=AVAILABLE_METRICS,
                            help="validation metrics, in order")

    model = cli.add_model_arguments(parser, checkpoint=False)
    model.add_argument(*cli.ITERATIONS_FLAGS, dest="n_iterations", default=10, type=int,
                       help="refinement iterations (num_iters) in training and validation")
    model.add_argument("--freeze-batch-norm", action="store_true", help="keep BatchNorm layers in eval mode")
    model.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    model.add_argument("--activation-checkpointing", action="store_true",
                       help="recompute refinement iterations in the backward pass (less memory, more time)")

    loss = parser.add_argument_group("loss")
    loss.add_argument("--gamma", default=None, type=float, help="sequence-loss weight decay over predictions "
                      "(default: the model's own, model.loss_gamma: 0.8 for CREStereo, 0.9 for RAFT-Stereo)")
    loss.add_argument("--loss-average", default=LossConfig.average, choices=LOSS_AVERAGES,
                      help="average the L1 over valid pixels, or over all pixels like torchvision's reference "
                      "train.py")
    loss.add_argument("--flow-loss-weight", default=LossConfig.flow_loss_weight, type=float,
                      help="weight of the sequence loss")
    loss.add_argument("--flow-loss-exclude-large", action="store_true",
                      help="exclude ground truth >= --max-disparity from the sequence loss")
    loss.add_argument("--consistency-weight", default=LossConfig.consistency_weight, type=float,
                      help="weight of the consistency term between successive predictions (0: off)")
    loss.add_argument("--consistency-resize-factor", default=LossConfig.consistency_resize_factor, type=float,
                      help="resolution factor the consistency term is computed at")
    loss.add_argument("--psnr-weight", default=LossConfig.psnr_weight, type=float,
                      help="weight of the PSNR term of the right image warped to the left (0: off)")
    loss.add_argument("--smoothness-weight", default=LossConfig.smoothness_weight, type=float,
                      help="weight of the edge-aware smoothness term (0: off)")
    loss.add_argument("--photometric-weight", default=LossConfig.photometric_weight, type=float,
                      help="weight of the photometric (SSIM + L1) term of the warped right image (0: off)")
    loss.add_argument("--photometric-max-displacement-ratio", default=LossConfig.photometric_max_displacement_ratio,
                      type=float, help="pixels whose disparity exceeds this fraction of the width are left out")
    loss.add_argument("--photometric-ssim-weight", default=LossConfig.photometric_ssim_weight, type=float,
                      help="share of SSIM in the photometric term (the rest is L1)")

    optimization = parser.add_argument_group("optimizer and learning-rate schedule")
    optimization.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"],
                              help="sgd uses momentum 0.9")
    optimization.add_argument("--lr", default=LRSchedule.lr, type=float, help="learning rate after warmup")
    optimization.add_argument("--weight-decay", default=0.0, type=float, help="optimizer weight decay")
    optimization.add_argument("--clip-grad-norm", default=0.0, type=float, help="max gradient norm (0: no clipping)")
    optimization.add_argument("--min-lr", default=LRSchedule.min_lr, type=float, help="learning rate of the last step")
    optimization.add_argument("--warmup-steps", default=LRSchedule.warmup_steps, type=int, help="length of the warmup")
    optimization.add_argument("--decay-after-steps", default=LRSchedule.decay_after_steps, type=int,
                              help="step where the decay starts")
    optimization.add_argument("--lr-warmup-method", default=LRSchedule.warmup_method, choices=WARMUP_METHODS,
                              help="warmup shape")
    optimization.add_argument("--lr-warmup-factor", default=LRSchedule.warmup_factor, type=float,
                              help="warmup start (linear) or level (constant), times --lr")
    optimization.add_argument("--lr-decay-method", default=LRSchedule.decay_method, choices=DECAY_METHODS,
                              help="decay shape, from --lr at --decay-after-steps to --min-lr at the last step")
    optimization.add_argument("--max-nonfinite-steps", default=20, type=int,
                              help="stop (with a checkpoint) after this many consecutive non-finite steps")

    output = parser.add_argument_group("logging, checkpoints and resuming")
    output.add_argument("--tensorboard-summaries", action="store_true", help="write TensorBoard scalars and images")
    output.add_argument("--tensorboard-log-frequency", default=100, type=int, help="image grids every N steps")
    output.add_argument("--print-frequency", default=10, type=int, help="console line (and scalars) every N steps")
    output.add_argument("--save-frequency", default=1000, type=int, help="checkpoint every N steps (and at the end)")
    output.add_argument("--save-timeout", default=600.0, type=float,
                        help="seconds the other ranks wait for rank 0's checkpoint when a signal stops the run")
    output.add_argument("--keep-last", default=None, type=int, metavar="N",
                        help="keep only the N newest {name}_{step}.pth files (default: all)")
    output.add_argument("--best-metric", default=None, choices=AVAILABLE_METRICS,
                        help="keep {name}_best.pth, the checkpoint with the best validation value of this metric on "
                        "the first --test-datasets (lower is better; higher for 1px, 3px, 5px, fl-all)")
    cli.add_runtime_arguments(parser, device="auto", dtype="float32", mixed_precision="float16")
    output.add_argument("--resume-path", "--resume", default=None,
                        help="checkpoint or state dict to start from (--resume: torchvision's spelling)")
    output.add_argument("--resume-schedule", action="store_true",
                        help="with --resume-path: also restore optimizer, schedule, step and data position")

    not_shuffled = "the mixture is always shuffled (by --seed); an unshuffled one is not available"
    add_ignored(parser, "--world-size", "the world size comes from torchrun or srun", type=int)
    add_ignored(parser, "--dist-url", "the process group starts from torchrun's or srun's environment")
    add_ignored(parser, "--lr-decay-gamma", "the exponential decay ends at --min-lr, which sets its rate", type=float)
    add_ignored(parser, "--gpu-transforms", "augmentation runs in the loader workers", type=None)
    for flag in ("--dataset-shuffle", "--dataset-order-shuffle"):
        add_ignored(parser, flag, "the mixture is always shuffled, by --seed", type=parse_bool,
                    refuse=lambda value: None if value else not_shuffled)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Flag-level checks that need no file and no model; each raises ValueError naming the fix."""
    from data.registry import require_ground_truth

    for name in args.train_datasets:
        require_ground_truth(name, f"--train-datasets {name}")
    for name in args.test_datasets:
        require_ground_truth(name, f"--test-datasets {name}")
    check_dataset_steps(args.train_datasets, args.dataset_steps)
    args.eval_size = cli.parse_eval_size(args.eval_size, args.eval_batch_size, "--eval-batch-size")
    for flag in ("batch_size", "eval_batch_size", "n_iterations", "save_frequency", "print_frequency",
                 "tensorboard_log_frequency", "max_nonfinite_steps"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}.")
    if args.workers < 0 or args.valid_frequency < 0:
        raise ValueError("--workers and --valid-frequency must be >= 0.")
    if len(args.norm_mean) != 3 or len(args.norm_std) != 3:
        raise ValueError("--norm-mean and --norm-std take three values (R G B).")
    if args.flow_loss_exclude_large and args.max_disparity is None:
        raise ValueError("--flow-loss-exclude-large needs --max-disparity (the threshold).")
    if args.resume_schedule and args.resume_path is None:
        raise ValueError("--resume-schedule needs --resume-path (the checkpoint to continue).")
    LossConfig.from_args(args, model_gamma=LossConfig.gamma)  # the loss flags (the model's own gamma is in range)
    if args.save_timeout <= 0:
        raise ValueError(f"--save-timeout must be positive (seconds), got {args.save_timeout}.")
    if args.keep_last is not None and args.keep_last < 1:
        raise ValueError(f"--keep-last {args.keep_last} would delete every checkpoint; pass 1 or more, or leave it "
                         "out to keep all.")
    if args.best_metric is not None:
        if args.valid_frequency == 0:
            raise ValueError("--best-metric needs validation; set --valid-frequency above 0.")
        if args.best_metric not in args.metrics:
            raise ValueError(f"--best-metric {args.best_metric} is not among --metrics {' '.join(args.metrics)}; "
                             "add it there.")


def restart_checkpoint(args: argparse.Namespace) -> Path | None:
    """After a torchrun (TORCHELASTIC_RESTART_COUNT) or SLURM (SLURM_RESTART_COUNT) restart: the latest checkpoint."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) + int(os.environ.get("SLURM_RESTART_COUNT", 0))
    latest = Path(args.checkpoint_dir) / f"{args.name}.pth"
    return latest if restarts > 0 and latest.is_file() else None


def load_resume(args: argparse.Namespace) -> dict | None:
    """Read --resume-path and check that it belongs to --model and, with --resume-schedule, to this run."""
    if args.resume_path is None:
        return None
    ckpt = load_checkpoint(args.resume_path)
    from models import canonical_name

    _, model_name = model_state_from_checkpoint(ckpt)
    if model_name is not None and canonical_name(model_name) != canonical_name(args.model):
        raise ValueError(
            f"--resume-path {args.resume_path} holds a {model_name} model, but --model is {args.model}; "
            f"pass --model {model_name} or another checkpoint."
        )
    if args.resume_schedule:
        missing = [k for k in ("optimizer", "scheduler", "step", "args") if k not in ckpt]
        if missing:
            raise ValueError(
                f"--resume-schedule needs a training checkpoint, but {args.resume_path} lacks {missing}; "
                "drop --resume-schedule to start a new schedule from its weights."
            )
        if "data_position" not in ckpt:
            raise ValueError(
                f"{args.resume_path} was written by torchvision's reference train.py, whose schedule and sample "
                "order this script does not reproduce; drop --resume-schedule to start a new schedule from its weights."
            )
        changed = [f"--{k.replace('_', '-')} {ckpt['args'].get(k)} -> {getattr(args, k)}"
                   for k in DATA_FLAGS if ckpt["args"].get(k) != plain_args({k: getattr(args, k)})[k]]
        if changed:
            raise ValueError(
                f"Cannot continue {args.resume_path} exactly: {', '.join(changed)}. Use the original flags, or drop "
                "--resume-schedule to start a new schedule from its weights."
            )
    return ckpt


def make_optimizer(args: argparse.Namespace, params) -> torch.optim.Optimizer:
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    optimizer = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    return optimizer(params, lr=args.lr, weight_decay=args.weight_decay)


def freeze_batch_norm(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


@dataclass
class Run:
    """Everything `train` needs, built and checked by `setup` before any training work."""

    args: argparse.Namespace
    dist: DistState
    mixture: TrainingMixture
    model: torch.nn.Module  # what the step calls (DDP and/or compiled)
    core: torch.nn.Module  # the plain model: state dicts, validation
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    val_loaders: dict[str, DataLoader]
    start_step: int
    loss: LossConfig
    writer: "SummaryWriter | None" = None
    losses: list[float] = field(default_factory=list)  # the loss of every step that updated the weights
    validations: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)  # dataset -> step -> metrics
    stop_group: torch.distributed.ProcessGroup | None = None  # gloo group of the stop barrier (None: one process)
    best: dict[str, Any] = field(default_factory=dict)  # --best-metric: metric, dataset, value, step of {name}_best.pth


@dataclass
class StepResult:
    """What one training step did (the same `skipped` and `stop_requested` on every rank)."""

    loss: Tensor  # the total loss (detached)
    terms: dict[str, Tensor]  # its terms (detached), for the log
    grad_norm: Tensor  # gradient norm before clipping
    predictions: list[Tensor]  # the model's outputs, for the log and the image grids
    lr: float  # learning rate the step used
    skipped: bool  # a non-finite loss or gradient on some rank: the weights were not updated
    stop_requested: bool  # a signal asked some rank to stop after this step


Batch = tuple[Tensor, Tensor, Tensor, Tensor]  # left, right, disparity, valid (stereo_collate), on the device


def validation_preset(args: argparse.Namespace, name: str):
    """The eval preset of validation dataset `name`: the flags' protocol, `--max-disparity`, and scattering of
    sparse ground truth where the registry says the dataset has it (KITTI)."""
    from data.registry import dataset_spec

    return eval_preset_from_args(args, sparse_gt=dataset_spec(name).sparse_gt)


def setup(args: argparse.Namespace) -> Run:
    """Check every input and build the run; raises ValueError/FileNotFoundError with the fix."""
    from data.registry import make_dataset

    check_args(args)
    check_writable(args.checkpoint_dir)
    restart = restart_checkpoint(args)
    if restart is not None:
        args.resume_path, args.resume_schedule = str(restart), True
    try:
        dist = init_distributed(args.device)
    except RuntimeError as e:
        raise ValueError(str(e)) from None
    if is_main_process():
        warn_ignored(args, "train.py")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    latest = Path(args.checkpoint_dir) / f"{args.name}.pth"
    if latest.exists() and not args.resume_schedule:
        raise ValueError(
            f"{latest} exists from an earlier run; continue it with --resume-path {latest} --resume-schedule, "
            "pick another --name, or move the old checkpoints away."
        )
    ckpt = load_resume(args)

    mixture = make_training_mixture(args, dist.world_size)
    schedule = LRSchedule.from_args(args, mixture.total_steps)
    start_step = 0
    if args.resume_schedule:
        start_step = int(ckpt["step"])
        if start_step >= mixture.total_steps:
            raise ValueError(f"{args.resume_path} already finished its {mixture.total_steps} steps.")
        saved = (ckpt.get("data_position") or {}).get("samples_per_step", mixture.samples_per_step)
        if saved != mixture.samples_per_step:
            raise ValueError(
                f"{args.resume_path} was trained with {saved} samples per step (processes x --batch-size), this "
                f"run has {mixture.samples_per_step}; resume on as many processes, or drop --resume-schedule."
            )

    val_loaders = {}
    if args.valid_frequency > 0:
        for name in args.test_datasets:
            dataset = make_dataset(name, args.dataset_root, transforms=validation_preset(args, name), for_eval=True)
            val_loaders[name] = make_eval_loader(dataset, args.eval_batch_size, min(args.workers, 2),
                                                 pin_memory=dist.device.type == "cuda")

    torch.manual_seed(args.seed)
    core, _ = cli.load_model_from_args(args, activation_checkpointing=args.activation_checkpointing)
    loss = LossConfig.from_args(args, model_gamma=core.loss_gamma)
    args.gamma = loss.gamma
    divisor = getattr(core, "size_divisor", 1)
    if any(s % divisor for s in args.crop_size):
        raise ValueError(f"--crop-size {args.crop_size} must be multiples of {divisor} for {args.model}.")
    if ckpt is not None:
        state, _ = model_state_from_checkpoint(ckpt)
        load_checked(core, state, f"--resume-path {args.resume_path}")
    core.to(dist.device)

    optimizer = make_optimizer(args, [p for p in core.parameters() if p.requires_grad])
    scheduler = make_lr_schedule(optimizer, schedule)
    autocast_dtype = cli.autocast_dtype(args.dtype, dist.device)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=autocast_dtype == torch.float16)
    if args.resume_schedule:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") is not None and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("rng") is not None:
            set_rng_state(ckpt["rng"])

    model = core
    if dist.distributed:
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(core, device_ids=device_ids)
    if args.compile:
        model = torch.compile(model)
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    writer = None
    if args.tensorboard_summaries and is_main_process():
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(Path(args.checkpoint_dir) / "tensorboard" / args.name)
    run = Run(args, dist, mixture, model, core, optimizer, scheduler, scaler, autocast_dtype, val_loaders,
              start_step, loss, writer, stop_group=checkpoint_group(args.save_timeout))
    if args.best_metric is not None and args.resume_schedule and best_path(args).is_file():
        best = load_checkpoint(best_path(args)).get("best") or {}
        if best.get("metric") == args.best_metric and best.get("dataset") == args.test_datasets[0]:
            run.best = best  # a restarted run keeps comparing against what it already kept
    return run


def checkpoint_state(run: Run, step: int) -> dict:
    """Everything needed to continue after `step`, as plain data (no positional-encoding table)."""
    return {
        "model": compact_state_dict(run.core),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "step": step,
        "args": plain_args(run.args),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "rng": rng_state(),
        "data_position": {
            "samples": step * run.mixture.samples_per_step,
            "samples_per_step": run.mixture.samples_per_step,
            "seed": run.args.seed,
        },
    }


def save(run: Run, step: int) -> Path | None:
    """Rank 0 writes `{name}_{step}.pth` (serialised once, atomically) and makes `{name}.pth` (the latest) a hard
    link to it, then deletes step files beyond `--keep-last`; returns the latest's path."""
    if not is_main_process():
        return None
    args = run.args
    folder = Path(args.checkpoint_dir)
    step_path, latest = folder / f"{args.name}_{step}.pth", folder / f"{args.name}.pth"
    save_checkpoint(checkpoint_state(run, step), step_path)
    link_checkpoint(step_path, latest)
    if args.keep_last is not None:
        prune_step_checkpoints(folder, args.name, args.keep_last)
    return latest


def best_path(args: argparse.Namespace) -> Path:
    return Path(args.checkpoint_dir) / f"{args.name}_best.pth"


def update_best(run: Run, step: int) -> None:
    """After the validation of `step`: rank 0 writes `{name}_best.pth` if `--best-metric` improved."""
    args = run.args
    dataset = args.test_datasets[0]
    value = run.validations[dataset][step][args.best_metric]
    if not is_improvement(args.best_metric, value, run.best.get("value")):
        return
    run.best = {"metric": args.best_metric, "dataset": dataset, "value": value, "step": step}
    if is_main_process():
        save_checkpoint({**checkpoint_state(run, step), "best": run.best}, best_path(args))
        print(f"[{step}/{run.mixture.total_steps}] best {args.best_metric} on {dataset} so far: {value:.4f}; saved "
              f"{best_path(args)}", flush=True)


def validate(run: Run, step: int) -> None:
    """Run the evaluation loop on every --test-datasets loader; print and log on rank 0."""
    args = run.args
    for name, loader in run.val_loaders.items():
        results = evaluate(
            run.core, loader, cascades=[1], iterations=[args.n_iterations], device=run.dist.device,
            metrics=args.metrics, padder_type=args.padder_type, autocast_dtype=run.autocast_dtype,
            progress=False, desc=f"{name} validation",
        )
        values = results[(1, args.n_iterations)]["reference"]
        run.validations.setdefault(name, {})[step] = values
        if is_main_process():
            text = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
            print(f"[{step}/{run.mixture.total_steps}] validation {name} ({args.n_iterations} iterations): {text}",
                  flush=True)
            if run.writer is not None:
                for k, v in values.items():
                    run.writer.add_scalar(f"valid/{name}/{k}", v, step)
    if args.freeze_batch_norm:
        freeze_batch_norm(run.core)


def train_step(run: Run, batch: Batch, stop: StopRequest | None = None) -> StepResult:
    """One optimizer step: forward, loss, backward, clipping, and the cross-rank decision to update or skip.

    A step whose loss or gradient is not finite on any rank changes no weight on any rank (with float16 the grad
    scaler's own overflow check stands in for the gradient test); the schedule advances either way. `stop` is read
    in the same collective, so every rank learns of a stop after the same step."""
    left, right, disparity, valid = batch
    lr = run.optimizer.param_groups[0]["lr"]
    with torch.autocast(left.device.type, dtype=run.autocast_dtype, enabled=run.autocast_dtype is not None):
        predictions = run.model(left, right, flow_init=None, num_iters=run.args.n_iterations)
    loss, terms = training_loss(predictions, left, right, disparity, valid, run.loss)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    params = [p for p in run.core.parameters() if p.requires_grad]
    max_norm = run.args.clip_grad_norm if run.args.clip_grad_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    bad = ~torch.isfinite(loss.detach())
    if not run.scaler.is_enabled():  # with float16 the scaler itself skips steps whose gradients overflow
        bad = bad | ~torch.isfinite(grad_norm)
    requested = stop is not None and stop.requested
    flags = torch.stack([bad.float(), torch.tensor(float(requested), device=bad.device)])
    skipped, stop_requested = (all_reduce_sum(flags) > 0).tolist()  # every rank takes the same decisions
    if skipped:
        run.optimizer.zero_grad(set_to_none=True)
    else:
        run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return StepResult(loss.detach(), terms, grad_norm.detach(), predictions, lr, skipped, stop_requested)


def log_step(run: Run, logger: TrainingLogger, step: int, batch: Batch, result: StepResult, data_time: float) -> None:
    """Record the step: its loss in `run.losses`, the console line and scalars, the TensorBoard image grids."""
    left, right, disparity, valid = batch
    if not result.skipped:
        run.losses.append(result.loss.item())
    logger.update(result.terms, result.predictions[-1], disparity, valid, None if result.skipped else result.grad_norm,
                  data_time, result.skipped)
    if logger.should_log(step):
        logger.log(step, result.lr)
    if run.writer is not None and step % run.args.tensorboard_log_frequency == 0:
        write_training_images(run.writer, step, left, right, disparity, valid, result.predictions, run.args.norm_mean,
                              run.args.norm_std)


def stop_after_nonfinite_steps(run: Run, step: int, count: int) -> None:
    """Save and stop (exit status 1) after `count` steps in a row changed no weight."""
    path = save(run, step)
    raise SystemExit(
        f"train.py: stopped at step {step}: {count} steps in a row had a non-finite loss or gradient (weights "
        f"unchanged since step {step - count}). Checkpoint: {path}. Lower --lr, set --clip-grad-norm, or use "
        f"--dtype bfloat16 instead of float16, then continue with --resume-path {path} --resume-schedule."
    )


def stop_after_signal(run: Run, step: int, exit_code: int) -> None:
    """Save, wait until rank 0 has written the checkpoint, and exit with `exit_code` (128 + the signal)."""
    path = save(run, step)
    wait_for_checkpoint(run.stop_group, run.args.save_timeout)
    if is_main_process():
        print(f"train.py: stopped by a signal after step {step}; checkpoint {path}. Continue with --resume-path "
              f"{path} --resume-schedule (torchrun and SLURM restarts do it by themselves).", file=sys.stderr,
              flush=True)
    raise SystemExit(exit_code)


def maybe_save(run: Run, step: int) -> None:
    """Every --save-frequency steps and at the last step."""
    if step % run.args.save_frequency == 0 or step == run.mixture.total_steps:
        save(run, step)


def maybe_validate(run: Run, step: int) -> None:
    """Every --valid-frequency steps and at the last step (with validation datasets), then --best-metric."""
    if run.val_loaders and (step % run.args.valid_frequency == 0 or step == run.mixture.total_steps):
        validate(run, step)
        if run.args.best_metric is not None:
            update_best(run, step)


def train(run: Run) -> Run:
    """The training loop from `run.start_step` to the end of the mixture: step -> log -> maybe save -> maybe
    validate, with the stops (non-finite steps, a signal) between log and save."""
    args, device, mixture = run.args, run.dist.device, run.mixture
    loader = DataLoader(
        mixture, batch_size=args.batch_size, sampler=MixtureSampler(mixture, run.dist.rank, run.start_step),
        num_workers=args.workers, collate_fn=stereo_collate, pin_memory=device.type == "cuda",
        worker_init_fn=ignore_stop_signals,
    )
    run.model.train()
    if args.freeze_batch_norm:
        freeze_batch_norm(run.core)
    logger = TrainingLogger(mixture.total_steps, mixture.samples_per_step, device, args.print_frequency,
                            run.writer, run.start_step)
    if is_main_process():
        counts = ", ".join(f"{k} {v}" for k, v in mixture.per_dataset_counts().items())
        print(f"Training {args.model} for {mixture.total_steps} steps from step {run.start_step}, "
              f"{mixture.samples_per_step} samples per step ({counts})", flush=True)
    if run.start_step == 0 and run.val_loaders:
        validate(run, 0)
    consecutive_skipped = 0
    stop = StopRequest()
    batches = iter(loader)
    try:
        for step in range(run.start_step + 1, mixture.total_steps + 1):
            tic = time.perf_counter()
            batch = next(batches)
            data_time = time.perf_counter() - tic
            batch = tuple(x.to(device, non_blocking=True) for x in batch)
            result = train_step(run, batch, stop)
            log_step(run, logger, step, batch, result, data_time)
            consecutive_skipped = consecutive_skipped + 1 if result.skipped else 0
            if consecutive_skipped >= args.max_nonfinite_steps:
                stop_after_nonfinite_steps(run, step, consecutive_skipped)
            if result.stop_requested:
                stop_after_signal(run, step, stop.exit_code)
            maybe_save(run, step)
            maybe_validate(run, step)
    finally:
        stop.restore()
        if run.writer is not None:
            run.writer.close()
    return run


def main(args: argparse.Namespace) -> Run:
    """Check the input, build the run and train; bad input raises ValueError naming the fix (`cli.run` turns it
    into one parser error, exit status 2)."""
    try:
        run = setup(args)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    return train(run)


if __name__ == "__main__":
    cli.run(main, get_args_parser())
    cleanup()

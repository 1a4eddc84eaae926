"""Speed and memory benchmarks.

`model` mode times the network's eval forward (`return_all=False`, what evaluation runs) and a training step
(train-mode forward, sequence loss over all predictions, backward), and reports with every time the yardstick
of the README (Models, Speed and memory): FLOPs of the call, achieved GFLOP/s, and the peak of a (1, 5)
convolution (the recurrent block's dominant kernel) measured in the same run, so that numbers compare across
machines.

    python benchmark.py model --threads 2 --json bench_model.json
    python benchmark.py model --dtype bfloat16 --compile --device cuda --batch 2
    python benchmark.py model --tasks eval --device cpu --backend eager onnxruntime torch.export
    python benchmark.py data --train-datasets synthetic synthetic-val --dataset-steps 88 12 --crop-size 256 320
"""

import argparse
import ctypes
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from models import get_model
from utils.deploy import DeployableStereo, export_program, load_exported, require_onnx, save_onnx, save_pt2
from utils import cli
from utils.distributed import resolve_device
from utils.losses import sequence_loss

BACKENDS = ("eager", "onnxruntime", "torch.export")

# torchvision's reference implementations on a CPU of this kind, 2 threads, float32, 1x3x384x512, 10 iterations:
# work per call and the fraction of the (1, 5)-conv peak it reached. CREStereo: shared/reference/performance.md.
# RAFT-Stereo: FLOPs and times of shared/reference/raft_stereo/README.md (base 3.73 s / 12.31 s, realtime
# 0.87 s / 2.40 s), over the 313 GFLOP/s float32 peak of performance.md's machine -- an assumption: the RAFT-Stereo
# README does not give its machine's peak (realtime training then ran above the (1, 5) peak: 3x3 convolutions
# of 128 channels run faster than the yardstick).
_CRESTEREO = {"eval": {"gflop": 925.0, "efficiency": 0.72}, "train": {"gflop": 2769.0, "efficiency": 0.78}}
_RAFT_STEREO_BASE = {"eval": {"gflop": 999.5, "efficiency": 0.856}, "train": {"gflop": 2985.9, "efficiency": 0.775}}
REFERENCE = {
    "crestereo_base": _CRESTEREO,
    "raft_stereo_base": _RAFT_STEREO_BASE,
    "raft_stereo": _RAFT_STEREO_BASE,
    "raft_stereo_realtime": {
        "eval": {"gflop": 266.3, "efficiency": 0.978},
        "train": {"gflop": 795.7, "efficiency": 1.059},
    },
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        # Hand freed heap memory back first, so that an earlier task's freed memory does not count.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:  # "5" resets the peak resident set size (VmHWM)
            f.write("5")


def peak_memory_gb(device: torch.device) -> float:
    """CUDA: max allocated; CPU: peak resident set size of the process since the last reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return kb * 1024 / 1e9


def measure(
    fn: Callable[[], object], device: torch.device, runs: int, warm_up: Callable[[], object] | None = None
) -> dict:
    """Median and spread of `runs` timed calls after one warm-up call (`warm_up`, default `fn`), with the peak
    memory of the timed calls."""
    (warm_up or fn)()
    synchronize(device)
    reset_peak_memory(device)
    times, cpu_times = [], []
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "cpu_median_s": statistics.median(cpu_times),
        "peak_memory_gb": peak_memory_gb(device),
    }


def conv_peak(device: torch.device, dtype: torch.dtype, runs: int) -> tuple[float, float]:
    """GFLOP/s of a (1, 5) convolution 384 -> 128 channels on 1x384x96x128, the recurrent block's 1/4 shape,
    per second of wall-clock time and per second of process CPU time."""
    x = torch.randn(1, 384, 96, 128, device=device, dtype=dtype)
    w = torch.randn(128, 384, 1, 5, device=device, dtype=dtype)
    gflop = 2 * 128 * 384 * 5 * 96 * 128 / 1e9
    with torch.no_grad():
        result = measure(lambda: F.conv2d(x, w, padding=(0, 2)), device, max(runs, 5))
    return gflop / result["median_s"], gflop / result["cpu_median_s"]


def model_mode(args: argparse.Namespace) -> list[dict]:
    device = resolve_device(args.device)
    dtype = cli.autocast_dtype(args.dtype, device) or torch.float32
    deployed = [b for b in args.backend if b != "eager"]
    if deployed and (args.tasks != ["eval"] or device.type != "cpu" or dtype != torch.float32 or args.compile):
        raise ValueError(f"--backend {' '.join(deployed)} times the float32 eval forward on the CPU: add --tasks eval "
                         "--device cpu, without --dtype or --compile")
    if "onnxruntime" in deployed:
        require_onnx()
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    torch.manual_seed(0)
    h, w = args.size
    left, right = (torch.rand(2, args.batch_size, 3, h, w, device=device) * 2 - 1).unbind(0)
    disparity = torch.rand(args.batch_size, 1, h, w, device=device) * 32
    rows = []
    for task in args.tasks:
        for checkpointing in ([False, True] if task == "train" else [False]):
            model = get_model(args.model, activation_checkpointing=checkpointing).to(device)
            forward = torch.compile(model) if args.compile else model
            if task == "eval":
                model.eval()

                def call():
                    with torch.no_grad(), autocast:
                        return forward(left, right, num_iters=args.n_iterations, return_all=False)
            else:
                model.train()

                def call():
                    model.zero_grad(set_to_none=True)
                    with autocast:
                        predictions = forward(left, right, num_iters=args.n_iterations)
                    sequence_loss(predictions, disparity, None, model.loss_gamma, average="all").backward()

            # The warm-up call counts the work (convolutions and matrix products); a compiled model is counted
            # uncompiled, in float32, since the counter does not see inside compiled graphs.
            counter = FlopCounterMode(display=False)

            def warm_up():
                if not args.compile:
                    with counter:
                        call()
                    return
                with counter:
                    model_call(model, task, left, right, disparity, args.n_iterations)
                call()

            peak, cpu_peak = conv_peak(device, dtype, args.runs)  # next to each task: the machine may be shared
            result = measure(call, device, args.runs, warm_up)
            gflop = counter.get_total_flops() / 1e9
            row = {
                "task": task,
                "checkpointing": checkpointing,
                "dtype": str(dtype).removeprefix("torch."),
                "compile": args.compile,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "batch": args.batch_size,
                "size": [h, w],
                "iters": args.n_iterations,
                **result,
                "gflop": gflop,
                "gflop_per_s": gflop / result["median_s"],
                "conv_peak_gflop_per_s": peak,
                "fraction_of_peak": gflop / result["median_s"] / peak,
            }
            if device.type == "cpu":
                # CPU time is robust to other processes on a shared machine (with one thread: no spinning).
                row["cpu_gflop_per_s"] = gflop / result["cpu_median_s"]
                row["cpu_conv_peak_gflop_per_s"] = cpu_peak
                row["cpu_fraction_of_peak"] = row["cpu_gflop_per_s"] / cpu_peak
            at_reference_size = args.batch_size == 1 and (h, w) == (384, 512) and args.n_iterations == 10
            if device.type == "cpu" and at_reference_size and args.model in REFERENCE:
                ref = REFERENCE[args.model][task]
                row["reference_s_here"] = ref["gflop"] / (ref["efficiency"] * peak)
                row["speedup_vs_reference"] = row["reference_s_here"] / result["median_s"]
                row["cpu_reference_s_here"] = ref["gflop"] / (ref["efficiency"] * cpu_peak)
                row["cpu_speedup_vs_reference"] = row["cpu_reference_s_here"] / result["cpu_median_s"]
            rows.append(row)
            print_row(row)
            if task == "eval":
                for backend in deployed:
                    rows.append(deployed_row(backend, model, left, right, args, row))
                    print_deployed_row(rows[-1])
    return rows


def deployed_row(backend: str, model: torch.nn.Module, left, right, args: argparse.Namespace, eager: dict) -> dict:
    """Time the eval forward exported to ``backend`` (onnxruntime or torch.export; static shape, float32, the
    same iterations) in this process, next to the eager row: median time, ratio to eager, max abs difference."""
    module = DeployableStereo(model, args.n_iterations).eval()
    program = export_program(module, (left, right), dynamic=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("model.onnx" if backend == "onnxruntime" else "model.pt2")
        (save_onnx if backend == "onnxruntime" else save_pt2)(program, path, {"model": args.model})
        exported = load_exported(path, torch.get_num_threads())
    result = measure(lambda: exported(left, right), torch.device("cpu"), args.runs)
    with torch.no_grad():
        diff = (exported(left, right) - module(left, right)).abs().max().item()
    return {"task": "eval", "backend": backend, "threads": torch.get_num_threads(), "batch": args.batch_size,
            "size": eager["size"], "iters": args.n_iterations, **result, "max_abs_diff_px": diff,
            "eager_median_s": eager["median_s"], "speedup_vs_eager": eager["median_s"] / result["median_s"],
            "cpu_speedup_vs_eager": eager["cpu_median_s"] / result["cpu_median_s"]}


def print_deployed_row(row: dict) -> None:
    print(f"eval {row['backend']:<13} {row['median_s']:7.3f} s [{row['min_s']:.3f}-{row['max_s']:.3f}]  "
          f"{row['speedup_vs_eager']:.2f}x eager (cpu time {row['cpu_speedup_vs_eager']:.2f}x)  "
          f"max abs diff {row['max_abs_diff_px']:.1e} px  mem {row['peak_memory_gb']:5.2f} GB", flush=True)


def model_call(model: torch.nn.Module, task: str, left, right, disparity, iters: int) -> None:
    """One uncompiled float32 call, for counting FLOPs."""
    if task == "eval":
        with torch.no_grad():
            model(left, right, num_iters=iters, return_all=False)
    else:
        predictions = model(left, right, num_iters=iters)
        sequence_loss(predictions, disparity, None, model.loss_gamma, average="all").backward()
        model.zero_grad(set_to_none=True)


def print_row(row: dict) -> None:
    task = row["task"] + (" +ckpt" if row["checkpointing"] else "")
    options = row["dtype"] + (" compile" if row["compile"] else "")
    line = (
        f"{task:<11} {options:<17} {row['median_s']:7.3f} s [{row['min_s']:.3f}-{row['max_s']:.3f}]  "
        f"{row['gflop']:7.1f} GFLOP  {row['gflop_per_s']:6.1f} GFLOP/s  peak {row['conv_peak_gflop_per_s']:6.1f} "
        f"({100 * row['fraction_of_peak']:3.0f} %)  mem {row['peak_memory_gb']:5.2f} GB"
    )
    if "speedup_vs_reference" in row:
        line += f"  reference here {row['reference_s_here']:.2f} s -> {row['speedup_vs_reference']:.2f}x"
    if "cpu_fraction_of_peak" in row:
        line += f"\n{'':<30}cpu time {row['cpu_median_s']:7.3f} s  {row['cpu_gflop_per_s']:6.1f} GFLOP/s  peak "
        line += f"{row['cpu_conv_peak_gflop_per_s']:6.1f} ({100 * row['cpu_fraction_of_peak']:3.0f} %)"
    if "cpu_speedup_vs_reference" in row:
        line += f"  reference here {row['cpu_reference_s_here']:.2f} s -> {row['cpu_speedup_vs_reference']:.2f}x"
    print(line, flush=True)


# Data-pipeline mode (maintained with disparity_eda.py): samples/s of each training dataset as train.py reads it.


def data_mode(args: argparse.Namespace) -> list[dict]:
    """Samples per second of each training dataset (read + its train preset) and of the mixture, on the CPU.

    In process: median and spread of ``--samples`` single-sample reads after one warm-up, at ``--threads``.
    Through a DataLoader (``stereo_collate``, ``--batch-size``) for each ``--workers`` count: samples/s over
    ``--batches`` batches after the first one (worker start-up excluded). The mixture row reads
    ``MixtureSampler`` positions, exactly as train.py does on one process.
    """
    from torch.utils.data import DataLoader

    from data.collate import stereo_collate
    from data.mixture import MixtureSampler, make_training_mixture

    if args.samples < 1 or args.batches < 1 or min(args.workers) < 0:
        raise ValueError("--samples and --batches must be at least 1 and --workers at least 0")
    try:
        mixture = make_training_mixture(args, world_size=1)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    generator = torch.Generator().manual_seed(args.seed)
    cpu = torch.device("cpu")
    rows = []
    sources = [(name, dataset, None) for name, dataset in zip(mixture.names, mixture.datasets)]
    if len(sources) > 1:
        sources.append(("mixture", mixture, MixtureSampler(mixture)))
    for name, dataset, sampler in sources:
        if sampler is None:
            indices = torch.randint(len(dataset), (args.samples + 1,), generator=generator).tolist()
            positions = iter(indices)
            result = measure(lambda: dataset[next(positions)], cpu, args.samples)
            rows.append({"mode": "data", "dataset": name, "workers": "in process", "threads": torch.get_num_threads(),
                         **result, "samples_per_s": 1.0 / result["median_s"]})
            print_data_row(rows[-1])
        needed = (args.batches + 1) * args.batch_size
        for workers in args.workers:
            if sampler is not None:
                order = sampler
            else:
                order = torch.randint(len(dataset), (needed,), generator=generator).tolist()
            loader = DataLoader(dataset, batch_size=args.batch_size, sampler=order, num_workers=workers,
                                collate_fn=stereo_collate, drop_last=True)
            batches = iter(loader)
            next(batches)
            start = time.perf_counter()
            count = sum(len(batch[0]) for _, batch in zip(range(args.batches), batches))
            elapsed = time.perf_counter() - start
            del batches
            rows.append({"mode": "data", "dataset": name, "workers": workers, "batch_size": args.batch_size,
                         "batches": args.batches, "seconds": elapsed, "samples_per_s": count / elapsed})
            print_data_row(rows[-1])
    return rows


def print_data_row(row: dict) -> None:
    where = row["workers"] if isinstance(row["workers"], str) else f"{row['workers']} workers"
    line = f"{row['dataset']:<24} {where:<12} {row['samples_per_s']:8.2f} samples/s"
    if "median_s" in row:
        spread = f"{1000 * row['min_s']:.1f}-{1000 * row['max_s']:.1f}"
        line += f"  ({1000 * row['median_s']:.1f} ms [{spread}] per sample, {row['threads']} thread(s))"
    print(line, flush=True)


def add_data_parser(modes) -> None:
    from data.mixture import add_mixture_arguments

    data = modes.add_parser("data", help="data pipeline: samples/s per training dataset and for the mixture")
    add_mixture_arguments(data)
    data.add_argument("--samples", type=int, default=20, help="timed single-sample reads per dataset")
    data.add_argument("--batches", type=int, default=10, help="timed DataLoader batches per dataset and worker count")
    data.add_argument("--workers", type=int, nargs="+", default=[4], help="DataLoader worker counts to time")
    data.add_argument("--threads", type=int, default=1, help="CPU threads of the in-process reads (1 = per core)")
    data.add_argument("--json", default=None, help="write the results to this JSON file")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Stereo toolkit benchmarks")
    modes = parser.add_subparsers(dest="mode", required=True)
    model = modes.add_parser("model", help="network eval forward and training step")
    model.add_argument("--model", default="crestereo_base")
    model.add_argument("--tasks", nargs="+", choices=["eval", "train"], default=["eval", "train"])
    model.add_argument("--size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"))
    model.add_argument(*cli.BATCH_SIZE_FLAGS, dest="batch_size", type=int, default=1)
    cli.add_iteration_arguments(model, iterations=10)
    model.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (median reported)")
    model.add_argument("--compile", action="store_true", help="torch.compile the model")
    model.add_argument("--backend", nargs="+", choices=BACKENDS, default=["eager"],
                       help="also time the eval forward exported to ONNX Runtime / torch.export, in the same process")
    cli.add_runtime_arguments(model)
    model.add_argument("--json", default=None, help="write the results to this JSON file")
    add_data_parser(modes)
    return parser


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "model":
        rows = model_mode(args)
    if args.mode == "data":
        rows = data_mode(args)
    if args.json:
        with open(args.json, "w") as f:
            summary = {"mode": args.mode, "torch": torch.__version__, "cpu_count": os.cpu_count(), "results": rows}
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    cli.run(main, get_args_parser())

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
    python benchmark.py data synthetic --samples 10 --threads 1
    python benchmark.py data decode --samples 10
    python benchmark.py pipeline --runs 9 --reference-order

`data` times the data pipeline: each training dataset and the mixture as train.py reads them, the synthetic
scenes' generation, or one Middlebury sample's decoding against torchvision's reader. `pipeline` times decoding
and each preset on the decoded sample in the same iterations, per CPU core.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import presets
import transforms as T
from models import get_model
from utils.deploy import (
    DeployableStereo, export_program, load_exported, onnx_operator_times, require_onnx, save_onnx, save_pt2,
)
from utils import cli
from utils.distributed import resolve_device
from utils.losses import sequence_loss
from utils.timing import conv_peak_meter, measure, operator_times

BACKENDS = ("eager", "onnxruntime", "torch.export")
# Training steps timed per --checkpointing choice: without and with activation checkpointing.
CHECKPOINTING = {"both": [False, True], "off": [False], "only": [True]}

# torchvision's prototype CREStereo and RAFT-Stereo on a 2-vCPU AMD EPYC machine of the kind of the development
# machine, 2 threads, float32, 1x3x384x512, 10 iterations: their measured seconds per call, as the README's
# "Speed and memory" (CREStereo) and "RAFT-Stereo" sections give them with their work. Their efficiency (work /
# time / REFERENCE_PEAK) is read over the (1, 5)-conv float32 peak of performance.md's machine (CREStereo: 72 %
# eval, 78 % training); for RAFT-Stereo an assumption, no peak was measured next to its times (its realtime
# training step then ran at 106 % of the (1, 5) peak: 3x3 convolutions of 128 channels run faster than the
# yardstick). The reference's time here is then its time times REFERENCE_PEAK over the peak read here.
REFERENCE_PEAK = 313.0
_RAFT_STEREO_BASE_S = {"eval": 3.73, "train": 12.31}
REFERENCE_S = {
    "crestereo_base": {"eval": 4.09, "train": 11.3},
    "raft_stereo_base": _RAFT_STEREO_BASE_S,
    "raft_stereo": _RAFT_STEREO_BASE_S,
    "raft_stereo_realtime": {"eval": 0.87, "train": 2.40},
}


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
        for checkpointing in (CHECKPOINTING[args.checkpointing] if task == "train" else [False]):
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

            # The reading of the yardstick right before every timed call, and each time read against its own
            # reading: the machine's speed drifts by tens of percent within minutes when it is shared.
            yardstick = conv_peak_meter(device, dtype)
            result = measure(call, device, args.runs, yardstick=yardstick)
            # The work (convolutions and matrix products) is counted after the timed calls, on one uncompiled
            # float32 call (the counter does not see inside compiled graphs), since the counter keeps a
            # checkpointed step's activations: counted in the warm-up, it would raise the resident memory the
            # timed calls start from.
            counter = FlopCounterMode(display=False)
            with counter:
                model_call(model, task, left, right, disparity, args.n_iterations)
            gflop = counter.get_total_flops() / 1e9
            times, peaks = result.pop("times"), result.pop("peaks")
            cpu_times, cpu_peaks = result.pop("cpu_times"), result.pop("cpu_peaks")
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
                "conv_peak_gflop_per_s": statistics.median(peaks),
                "fraction_of_peak": statistics.median(gflop / t / p for t, p in zip(times, peaks)),
            }
            if device.type == "cpu":
                # CPU time is robust to other processes on a shared machine (with one thread: no spinning).
                row["cpu_gflop_per_s"] = gflop / result["cpu_median_s"]
                row["cpu_conv_peak_gflop_per_s"] = statistics.median(cpu_peaks)
                row["cpu_fraction_of_peak"] = statistics.median(gflop / t / p for t, p in zip(cpu_times, cpu_peaks))
            at_reference_size = args.batch_size == 1 and (h, w) == (384, 512) and args.n_iterations == 10
            if device.type == "cpu" and at_reference_size and args.model in REFERENCE_S:
                reference_s = REFERENCE_S[args.model][task]
                here = [reference_s * REFERENCE_PEAK / p for p in peaks]
                row["reference_s"] = reference_s
                row["reference_s_here"] = statistics.median(here)
                row["speedup_vs_reference"] = statistics.median(r / t for r, t in zip(here, times))
                cpu_here = [reference_s * REFERENCE_PEAK / p for p in cpu_peaks]
                row["cpu_reference_s_here"] = statistics.median(cpu_here)
                row["cpu_speedup_vs_reference"] = statistics.median(r / t for r, t in zip(cpu_here, cpu_times))
            if args.profile:
                row["operators"] = operator_times(call)
            rows.append(row)
            print_row(row)
            if args.profile:
                print_operators("eager", row["operators"], args.profile)
            if task == "eval":
                for backend in deployed:
                    rows.append(deployed_row(backend, model, left, right, args, row))
                    print_deployed_row(rows[-1])
                    if "operators" in rows[-1]:
                        print_operators(backend, rows[-1]["operators"], args.profile)
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
        operators = None
        if args.profile and backend == "onnxruntime":
            operators = onnx_operator_times(path, left, right, torch.get_num_threads())
    result = measure(lambda: exported(left, right), torch.device("cpu"), args.runs)
    with torch.no_grad():
        diff = (exported(left, right) - module(left, right)).abs().max().item()
    return {"task": "eval", "backend": backend, "threads": torch.get_num_threads(), "batch": args.batch_size,
            "size": eager["size"], "iters": args.n_iterations, **result, "max_abs_diff_px": diff,
            "eager_median_s": eager["median_s"], "speedup_vs_eager": eager["median_s"] / result["median_s"],
            "cpu_speedup_vs_eager": eager["cpu_median_s"] / result["cpu_median_s"],
            **({"operators": operators} if operators is not None else {})}


def print_operators(name: str, operators: list[dict], top: int) -> None:
    """The ``top`` operators of a profile, one line each."""
    for row in operators[:top]:
        print(f"    {name} {row['op']:<32} {row['seconds']:8.3f} s {100 * row['share']:5.1f} %  x{row['count']}")


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
        line += (f"  reference here {row['reference_s_here']:.2f} s -> {row['speedup_vs_reference']:.2f}x; "
                 f"{row['median_s'] / row['reference_s']:.2f}x the reference's {row['reference_s']:.2f} s")
    if "cpu_fraction_of_peak" in row:
        line += f"\n{'':<30}cpu time {row['cpu_median_s']:7.3f} s  {row['cpu_gflop_per_s']:6.1f} GFLOP/s  peak "
        line += f"{row['cpu_conv_peak_gflop_per_s']:6.1f} ({100 * row['cpu_fraction_of_peak']:3.0f} %)"
    if "cpu_speedup_vs_reference" in row:
        line += f"  reference here {row['cpu_reference_s_here']:.2f} s -> {row['cpu_speedup_vs_reference']:.2f}x"
    print(line, flush=True)


# Data-pipeline mode (maintained with disparity_eda.py): samples/s of each training dataset as train.py reads it.


def data_mode(args: argparse.Namespace) -> list[dict]:
    """Samples per second of each training dataset (read + its train preset) and of the mixture, on the CPU;
    ``synthetic``: generation time of synthetic scenes per size; ``decode``: a Middlebury 2014 read against
    torchvision's reader.

    In process: median and spread of ``--samples`` single-sample reads after one warm-up, at ``--threads``.
    Through a DataLoader (``stereo_collate``, ``--batch-size``) for each ``--workers`` count: samples/s over
    ``--batches`` batches after the first one (worker start-up excluded). The mixture row reads
    ``MixtureSampler`` positions, exactly as train.py does on one process.
    """
    from torch.utils.data import DataLoader

    from data.collate import stereo_collate
    from data.mixture import MixtureSampler

    if args.samples < 1 or args.batches < 1 or min(args.workers) < 0:
        raise ValueError("--samples and --batches must be at least 1 and --workers at least 0")
    if args.what == "synthetic":
        return synthetic_rows(args.sizes or [(384, 512), (1024, 1536)], args.samples)
    if args.what == "decode":
        return decode_rows(args.sizes or [(1988, 2964)], args.samples)
    try:
        mixture = presets.make_training_mixture(args, world_size=1)
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


def synthetic_rows(sizes: list[tuple[int, int]], samples: int) -> list[dict]:
    """Median milliseconds (wall and process CPU) to generate one ``SyntheticStereo`` sample of each size, with
    ``max_disparity`` = width / 8, at the current thread count."""
    from data.synthetic import SyntheticStereo

    rows = []
    for height, width in sizes:
        dataset = SyntheticStereo(size=(height, width), max_disparity=width / 8, length=samples + 1)
        positions = iter(range(samples + 1))
        result = measure(lambda: dataset[next(positions)], torch.device("cpu"), samples)
        rows.append({"mode": "data", "what": "synthetic", "size": [height, width], "max_disparity": width / 8,
                     "threads": torch.get_num_threads(), **result})
        print(f"synthetic {height}x{width} (max_disparity {width / 8:g}), {rows[-1]['threads']} thread(s): "
              f"{1000 * result['median_s']:.1f} ms/sample wall, {1000 * result['cpu_median_s']:.1f} ms CPU", flush=True)
    return rows


def write_middlebury_scene(root: Path, size: tuple[int, int]) -> None:
    """skimage's Middlebury Motorcycle pair resized to ``size`` (H, W) as a Middlebury 2014 training scene:
    PNG images and both PFM disparities (scaled with the width)."""
    import torch.nn.functional as F
    from skimage.data import stereo_motorcycle
    from torchvision.io import write_png

    from data.io import write_pfm

    left, right, disparity = stereo_motorcycle()
    scene = root / "Middlebury2014" / "train" / "Motorcycle-perfect"
    scene.mkdir(parents=True)
    for name, image in (("im0.png", left), ("im1.png", right)):
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        resized = F.interpolate(tensor, size=size, mode="bicubic", antialias=True).clamp(0, 255).round()
        write_png(resized[0].to(torch.uint8), str(scene / name))
    scale = size[1] / disparity.shape[1]
    resized = F.interpolate(torch.from_numpy(disparity)[None, None], size=size, mode="nearest")[0, 0] * scale
    write_pfm(scene / "disp0.pfm", resized)
    write_pfm(scene / "disp1.pfm", resized)


def decode_rows(sizes: list[tuple[int, int]], samples: int) -> list[dict]:
    """Milliseconds to read one Middlebury 2014 sample (pair, both disparities and masks) of each size through
    ``data.datasets.Middlebury2014Stereo`` and through torchvision's reader (PIL + numpy, converted to
    tensors), at the current thread count: the time budget that the transforms are measured against."""
    import torchvision.datasets as tvd
    from torchvision.transforms.functional import pil_to_tensor

    from data.datasets import Middlebury2014Stereo

    rows = []
    for height, width in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_middlebury_scene(Path(tmp), (height, width))
            ours = Middlebury2014Stereo(tmp)
            theirs = tvd.Middlebury2014Stereo(tmp)

            def torchvision_sample() -> tuple:
                left, right, disparity, valid = theirs[0]
                return pil_to_tensor(left), pil_to_tensor(right), torch.from_numpy(disparity), torch.from_numpy(valid)

            files = sorted((Path(tmp) / "Middlebury2014" / "train").rglob("*.*"))
            mib = {p.name: p.stat().st_size / 2**20 for p in files}
            print("files (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in mib.items()))
            for reader, fn in (("data.datasets (torchvision.io)", lambda: ours[0]),
                               ("torchvision (PIL + numpy, to tensors)", torchvision_sample)):
                result = measure(fn, torch.device("cpu"), samples)
                rows.append({"mode": "data", "what": "decode", "size": [height, width], "reader": reader,
                             "threads": torch.get_num_threads(), "files_mib": mib, **result})
                print(f"Middlebury {height}x{width} sample, {reader}: {1000 * result['median_s']:.0f} ms wall, "
                      f"{1000 * result['cpu_median_s']:.0f} ms CPU ({rows[-1]['threads']} thread(s))", flush=True)
    return rows


# Pipeline mode: decoding, then the train or eval preset on the decoded sample, per CPU core.

PIPELINE_SAMPLES = {"middlebury": ((1988, 2964), True), "sceneflow": ((540, 960), False)}  # size, invalid pixels


def smooth_field(height: int, width: int, cells: int, generator: torch.Generator) -> torch.Tensor:
    """Low-frequency random field in [0, 1] of shape (1, H, W)."""
    import torch.nn.functional as F

    coarse = torch.rand(1, 1, cells, max(2, cells * width // height), generator=generator)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def write_textured_sample(folder: Path, height: int, width: int, with_invalid: bool) -> None:
    """Photo-like textured pair, right view = left shifted by the disparity, and PFM disparities (with holes of
    infinite disparity, as Middlebury's, when ``with_invalid``)."""
    from torchvision.io import write_png

    from data.io import write_pfm

    g = torch.Generator().manual_seed(0)
    texture = torch.cat([smooth_field(height, width, 24, g) for _ in range(3)])
    texture = texture * 200 + torch.randn(3, height, width, generator=g) * 6 + 20
    disparity = smooth_field(height, width, 6, g) * (0.08 * width) + 0.01 * width
    xs = torch.arange(width).view(1, -1) - disparity[0].round().long()
    right = texture.gather(2, xs.clamp(0, width - 1).unsqueeze(0).expand(3, -1, -1))
    write_png(texture.clamp(0, 255).to(torch.uint8), str(folder / "im0.png"))
    write_png(right.clamp(0, 255).to(torch.uint8), str(folder / "im1.png"))
    for name in ("disp0.pfm", "disp1.pfm"):
        disp = disparity.clone()
        if with_invalid:
            holes = smooth_field(height, width, 12, g) > 0.8
            disp[holes] = float("inf")
        write_pfm(folder / name, disp)


def decode_sample(folder: Path) -> tuple:
    """Read a sample exactly as the datasets do: uint8 images, zeroed invalid disparity and bool masks."""
    from data.io import read_image, read_pfm, valid_disparity

    images = (read_image(folder / "im0.png"), read_image(folder / "im1.png"))
    d0, m0 = valid_disparity(read_pfm(folder / "disp0.pfm"))
    d1, m1 = valid_disparity(read_pfm(folder / "disp1.pfm"))
    return images, (d0, d1), (m0, m1)


def photometric_first_preset(crop_size: tuple[int, int]) -> T.Compose:
    """The order of torchvision's reference scripts at train.py's defaults: colour, gamma and the right-view
    shift on the full image, before the crop (built from our transforms, so only the order differs)."""
    return T.Compose(
        [
            T.AsymmetricColorJitter((0.8, 1.2), (0.8, 1.2), 0.0, 0.0, p=1.0),
            T.AsymmetricGammaAdjust(p=1.0, gamma_range=(0.8, 1.2)),
            T.RandomSpatialShift(1.0, 0.1, 2.0),
            T.ConvertImageDtype(torch.float32),
            T.RandomRescaleAndCrop(crop_size, (0.6, 1.0), 1.0, "linear"),
            T.RandomHorizontalFlip(0.5),
            T.RandomOcclusion(1.0),
            T.Normalize(0.5, 0.5),
            T.MakeValidDisparityMask(),
        ]
    )


def time_pipeline(folder: Path, transform: Callable, runs: int) -> tuple[float, float]:
    """Median seconds per sample of decoding and of ``transform`` on the decoded sample, timed in the same
    iterations so that load on the machine affects both alike (one warm-up iteration dropped)."""
    decode_times, transform_times = [], []
    for i in range(runs + 1):
        torch.manual_seed(i)
        start = time.perf_counter()
        sample = decode_sample(folder)
        middle = time.perf_counter()
        transform(*sample)
        end = time.perf_counter()
        decode_times.append(middle - start)
        transform_times.append(end - middle)
    return statistics.median(decode_times[1:]), statistics.median(transform_times[1:])


def pipeline_mode(args: argparse.Namespace) -> list[dict]:
    """Decode + preset throughput per CPU core on a Middlebury-sized and a SceneFlow-sized written sample (sizes
    divided by ``--downscale``); "x decode" is (decode + preset) / decode."""
    if args.runs < 1 or args.downscale < 1:
        raise ValueError("--runs and --downscale must be at least 1")
    crop = tuple(args.crop_size)
    pipelines = {
        f"train (crop {crop[0]}x{crop[1]}, linear 0.6-1.0)": presets.StereoMatchingTrainPreset(
            crop_size=crop, scaling_type="linear", scale_range=(0.6, 1.0), spatial_shift_prob=1.0,
            spatial_shift_max_angle=0.1, spatial_shift_max_displacement=2.0, occlusion_prob=0.5,
        ),
        "eval 384x512 (published protocol)": presets.StereoMatchingEvalPreset(),
        "eval native resolution": presets.StereoMatchingEvalPreset(resize_size=None),
    }
    if args.reference_order:
        pipelines["train, reference order (photometric ops before the crop)"] = photometric_first_preset(crop)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {args.runs} runs\n")
    print("| sample | pipeline | decode s | preset s | samples/s | x decode | decode share |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, ((height, width), with_invalid) in PIPELINE_SAMPLES.items():
            height, width = height // args.downscale, width // args.downscale
            folder = Path(tmp) / name
            folder.mkdir()
            write_textured_sample(folder, height, width, with_invalid)
            for pipeline, transform in pipelines.items():
                decode_s, preset_s = time_pipeline(folder, transform, args.runs)
                total = decode_s + preset_s
                rows.append({"mode": "pipeline", "sample": name, "size": [height, width], "pipeline": pipeline,
                             "threads": torch.get_num_threads(), "decode_s": decode_s, "preset_s": preset_s,
                             "samples_per_s": 1 / total, "x_decode": total / decode_s})
                print(f"| {name} {height}x{width} | {pipeline} | {decode_s:.3f} | {preset_s:.3f} | {1 / total:.2f} "
                      f"| {total / decode_s:.2f} | {100 * decode_s / total:.0f}% |", flush=True)
    return rows


def add_data_parser(modes) -> None:
    data = modes.add_parser("data", help="data pipeline: samples/s per training dataset and for the mixture "
                            "(datasets), synthetic-scene generation (synthetic), Middlebury decoding (decode)")
    data.add_argument("what", nargs="?", choices=["datasets", "synthetic", "decode"], default="datasets",
                      help="datasets: train.py's datasets and mixture (default); synthetic: generation time per "
                      "--sizes; decode: one Middlebury 2014 sample of each --sizes, ours against torchvision's reader")
    cli.add_training_data_arguments(data)
    data.add_argument("--samples", type=int, default=20, help="timed single-sample reads per dataset (or size)")
    data.add_argument("--sizes", type=image_size, nargs="+", default=None, metavar="HxW",
                      help="synthetic: scene sizes (default 384x512 1024x1536); decode: Middlebury sample sizes "
                      "(default 1988x2964, the full 2014 size)")
    data.add_argument("--batches", type=int, default=10, help="timed DataLoader batches per dataset and worker count")
    data.add_argument("--workers", type=int, nargs="+", default=[4], help="DataLoader worker counts to time")
    data.add_argument("--threads", type=int, default=1, help="CPU threads of the in-process reads (1 = per core)")
    data.add_argument("--json", default=None, help="write the results to this JSON file")


def image_size(text: str) -> tuple[int, int]:
    """``HxW`` -> (H, W)."""
    try:
        height, width = (int(v) for v in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW, e.g. 384x512") from None
    return height, width


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Stereo toolkit benchmarks")
    modes = parser.add_subparsers(dest="mode", required=True)
    model = modes.add_parser("model", help="network eval forward and training step")
    model.add_argument("--model", default="crestereo_base")
    model.add_argument("--tasks", nargs="+", choices=["eval", "train"], default=["eval", "train"])
    model.add_argument("--checkpointing", choices=list(CHECKPOINTING), default="both",
                       help="training steps without and with activation checkpointing (both), or one of them; "
                       "'only' gives the checkpointed step's peak memory in a process of its own")
    model.add_argument("--size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"))
    model.add_argument(*cli.BATCH_SIZE_FLAGS, dest="batch_size", type=int, default=1)
    cli.add_iteration_arguments(model, iterations=10)
    model.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (median reported)")
    model.add_argument("--compile", action="store_true", help="torch.compile the model")
    model.add_argument("--backend", nargs="+", choices=BACKENDS, default=["eager"],
                       help="also time the eval forward exported to ONNX Runtime / torch.export, in the same process")
    model.add_argument("--profile", type=int, default=0, metavar="N",
                       help="also print the N costliest operators of one call: torch.profiler for eager, ONNX "
                       "Runtime's profiler for --backend onnxruntime (0: off)")
    cli.add_runtime_arguments(model)
    model.add_argument("--json", default=None, help="write the results to this JSON file")
    add_data_parser(modes)
    pipeline = modes.add_parser("pipeline", help="decoding + train/eval preset per CPU core")
    pipeline.add_argument("--runs", type=int, default=7, help="timed runs per figure (median reported)")
    pipeline.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = per core)")
    pipeline.add_argument("--reference-order", action="store_true",
                          help="also time the train preset in the order of torchvision's reference scripts "
                          "(photometric ops before the crop)")
    pipeline.add_argument("--crop-size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"),
                          help="the train preset's crop")
    pipeline.add_argument("--downscale", type=int, default=1,
                          help="divide the sample sizes (1988x2964, 540x960) by this factor")
    pipeline.add_argument("--json", default=None, help="write the results to this JSON file")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "model":
        rows = model_mode(args)
    if args.mode == "data":
        rows = data_mode(args)
    if args.mode == "pipeline":
        rows = pipeline_mode(args)
    if args.json:
        with open(args.json, "w") as f:
            summary = {"mode": args.mode, "torch": torch.__version__, "cpu_count": os.cpu_count(), "results": rows}
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    cli.run(main, get_args_parser())

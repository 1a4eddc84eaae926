"""Timing helpers of ``benchmark.py``: median wall-clock and process-CPU time of repeated calls, peak memory,
and the (1, 5)-convolution peak that the model figures are read against."""

import ctypes
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA allocator peak, or the process's peak resident set size)."""
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


def timed_call(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process-CPU seconds of one call of `fn`, its queued device work included."""
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def measure(
    fn: Callable[[], object],
    device: torch.device,
    runs: int,
    yardstick: Callable[[], tuple[float, float]] | None = None,
) -> dict:
    """Median and spread of `runs` timed calls after one warm-up call, with the peak memory of the timed calls.
    With a `yardstick` (e.g. `conv_peak_meter`), it is read right before every timed call, and the per-call
    times and readings are returned (``times``, ``cpu_times``, ``peaks``, ``cpu_peaks``) so that each time can
    be read against the machine's speed of that moment."""
    fn()
    synchronize(device)
    reset_peak_memory(device)
    peaks, calls = [], []
    for _ in range(runs):
        if yardstick is not None:
            peaks.append(yardstick())
        calls.append(timed_call(fn, device))
    times, cpu_times = (list(column) for column in zip(*calls))
    result = {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "cpu_median_s": statistics.median(cpu_times),
        "peak_memory_gb": peak_memory_gb(device),
    }
    if yardstick is not None:
        result.update(times=times, cpu_times=cpu_times, peaks=[p for p, _ in peaks], cpu_peaks=[c for _, c in peaks])
    return result


def conv_peak_meter(device: torch.device, dtype: torch.dtype, calls: int = 5) -> Callable[[], tuple[float, float]]:
    """A reading of the machine's speed: GFLOP/s of a (1, 5) convolution 384 -> 128 channels on 1x384x96x128,
    the recurrent block's 1/4 shape, per second of wall-clock and of process CPU time (median of `calls` after
    one untimed call)."""
    x = torch.randn(1, 384, 96, 128, device=device, dtype=dtype)
    w = torch.randn(128, 384, 1, 5, device=device, dtype=dtype)
    gflop = 2 * 128 * 384 * 5 * 96 * 128 / 1e9

    def conv() -> None:
        with torch.no_grad():
            F.conv2d(x, w, padding=(0, 2))

    def read() -> tuple[float, float]:
        conv()
        synchronize(device)
        times, cpu_times = zip(*(timed_call(conv, device) for _ in range(calls)))
        return gflop / statistics.median(times), gflop / statistics.median(cpu_times)

    return read


def operator_rows(seconds: dict[str, float], counts: dict[str, int]) -> list[dict]:
    """Profile rows, largest first: ``op``, ``seconds``, ``share`` of the total, ``count`` (calls)."""
    total = sum(seconds.values()) or 1.0
    ranked = sorted(seconds.items(), key=lambda item: -item[1])
    return [{"op": op, "seconds": t, "share": t / total, "count": counts[op]} for op, t in ranked]


def operator_times(fn: Callable[[], object]) -> list[dict]:
    """Where an eager call spends its time: self CPU time per aten operator of one call (``torch.profiler``),
    as `operator_rows`; the counterpart of ``utils.deploy.onnx_operator_times``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        fn()
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    return operator_rows({e.key: e.self_cpu_time_total / 1e6 for e in events}, {e.key: e.count for e in events})

"""Stopping on a signal without losing work, under torchrun, SLURM or a plain process.

SLURM signals every process of a step, and torchrun's agent forwards the SIGTERM it gets to its workers, so a
worker usually sees two signals within milliseconds. The first one asks for a stop after the current step; later
ones are only recorded, so nothing interrupts the checkpoint write that follows. Every rank learns of the stop in
the step's collective (all ranks stop after the same step), waits at `wait_for_checkpoint` until rank 0 has
written it, and exits with 128 + the signal number: torchrun (`--max-restarts`) and SLURM (`--requeue`) then
restart the job, which resumes from `{name}.pth` by itself. SIGKILL stops at once.
"""

import signal
import threading
from datetime import timedelta

import torch.distributed as dist


class StopRequest:
    """Installs SIGTERM/SIGINT handlers that only record the first signal; `restore` puts the old ones back."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal number, what a shell reports for a process the signal ended (143 for SIGTERM)."""
        return 128 + (self.signum or signal.SIGTERM)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGTERM/SIGINT to the main process, which saves before stopping."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def checkpoint_group(timeout_s: float) -> dist.ProcessGroup | None:
    """A gloo group whose barrier gives up after `timeout_s` (all ranks must call this together); None alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))


def wait_for_checkpoint(group: dist.ProcessGroup | None, timeout_s: float) -> None:
    """Every rank waits here until rank 0 has written its checkpoint (rank 0 arrives after writing)."""
    if group is None:
        return
    try:
        dist.barrier(group=group)
    except RuntimeError as e:
        raise SystemExit(
            f"train.py: rank 0 did not finish its checkpoint within --save-timeout {timeout_s:g} s ({e}); the "
            "latest complete checkpoint is the previous one."
        ) from None

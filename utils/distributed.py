"""Process-group set-up for torchrun, SLURM and plain single-process runs, and an evaluation sampler.

``init_distributed(device)`` reads torchrun's (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) or, inside an ``srun``
step, SLURM's (``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``) environment and starts a process
group with nccl on CUDA and gloo on CPU; without either it is a plain process and every helper below still works.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler


@dataclass
class DistState:
    distributed: bool
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when available; an unknown name, or ``"cuda"`` without a GPU, raises ValueError."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available; use --device cpu or auto")
    return device


# SLURM's own step ids (batch script, external, interactive shell and similar) are >= this; user steps start at 0.
_SLURM_SPECIAL_STEP_IDS = 0xFFFFFFF0


def ranks_from_environment(env: Mapping[str, str] = os.environ) -> tuple[int, int, int] | None:
    """`(rank, world_size, local_rank)` of a torchrun worker or of a task of a multi-task `srun` step, else None.

    SLURM is trusted only inside an `srun` step (`SLURM_STEP_ID` a user step, `SLURM_STEP_NUM_TASKS` its size):
    a plain `python train.py` in an `sbatch`/`salloc` allocation also sees `SLURM_NTASKS`/`SLURM_PROCID`, but no
    peer will ever join it, so it runs alone.
    """
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    step = env.get("SLURM_STEP_ID", "")
    if not step.isdigit() or int(step) >= _SLURM_SPECIAL_STEP_IDS:
        return None
    world_size = int(env.get("SLURM_STEP_NUM_TASKS", 1))
    if world_size < 2:
        return None
    return int(env["SLURM_PROCID"]), world_size, int(env.get("SLURM_LOCALID", 0))


def init_distributed(device: str | torch.device = "auto") -> DistState:
    """Join the process group described by the environment (if any) and pick this process's device."""
    device = resolve_device(device)
    ranks = ranks_from_environment()
    if ranks is None:
        return DistState(False, 0, 1, 0, device)
    rank, world_size, local_rank = ranks
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ and "SLURM_LAUNCH_NODE_IPADDR" in os.environ:
            os.environ["MASTER_ADDR"] = os.environ["SLURM_LAUNCH_NODE_IPADDR"]
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size)
    return DistState(world_size > 1, rank, world_size, local_rank, device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 and in a plain process: the one that writes logs, checkpoints and figures."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over all processes (a copy; the input itself in a plain process)."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


class EvalBatchSampler(Sampler[list[int]]):
    """Shards the batches of a sequential pass over ``num_samples`` items: rank r gets batches r, r+W, ...

    Unlike ``DistributedSampler`` it never pads with repeated samples, and every batch has exactly the
    composition it has in a single process, so both metric aggregations equal the single-process ones.
    Ranks may get one batch less than others; evaluation only synchronises after the loop.
    """

    def __init__(self, num_samples: int, batch_size: int = 1, rank: int | None = None, world_size: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size
        num_batches = -(-num_samples // batch_size)
        self.batch_ids = range(self.rank, num_batches, self.world_size)

    def __iter__(self):
        for b in self.batch_ids:
            yield list(range(b * self.batch_size, min((b + 1) * self.batch_size, self.num_samples)))

    def __len__(self) -> int:
        return len(self.batch_ids)

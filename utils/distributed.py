"""Process-group set-up for torchrun, SLURM and plain single-process runs, and an evaluation sampler.

``init_distributed(device)`` reads torchrun's (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) or SLURM's
(``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``) environment and starts a process group with nccl on
CUDA and gloo on CPU; without either it is a plain process and every helper below still works.
"""

import os
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
    """``"auto"`` picks CUDA when available; ``"cuda"`` without a GPU raises a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA device is available; use --device cpu or auto")
    return device


def _env_ranks() -> tuple[int, int, int] | None:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", 1)) > 1:
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"]), int(os.environ.get("SLURM_LOCALID", 0))
    return None


def init_distributed(device: str | torch.device = "auto") -> DistState:
    """Join the process group described by the environment (if any) and pick this process's device."""
    device = resolve_device(device)
    ranks = _env_ranks()
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

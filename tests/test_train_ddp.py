"""A two-process gloo run of train.py on CPU: disjoint samples, identical weights, one checkpoint writer."""

import os
import socket

import torch
import torch.multiprocessing as mp

ARGS = [
    "--device", "cpu", "--train-datasets", "synthetic", "--dataset-steps", "2", "--batch-size", "1",
    "--crop-size", "64", "96", "--recurrent-updates", "2", "--workers", "0", "--warmup-steps", "0",
    "--decay-after-steps", "0", "--save-frequency", "1", "--valid-frequency", "0", "--threads", "1",
    "--name", "ddp",
]


def _worker(rank: int, folder: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    import torch.distributed as dist

    import train
    from data.mixture import TrainingMixture

    seen, writes = [], []
    read = TrainingMixture.__getitem__
    TrainingMixture.__getitem__ = lambda self, p: (seen.append(p), read(self, p))[1]
    write = train.save_checkpoint
    train.save_checkpoint = lambda obj, path: (writes.append(os.path.basename(path)), write(obj, path))[1]
    run = train.main(train.get_args_parser().parse_args(ARGS + ["--checkpoint-dir", folder]))
    torch.save({"seen": seen, "writes": writes, "model": run.core.state_dict(), "losses": run.losses},
               os.path.join(folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_process_gloo_run(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(str(tmp_path), port), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["seen"] == [0, 2] and r1["seen"] == [1, 3]  # disjoint, every position of the 2 steps once
    assert r0["writes"] == ["ddp_1.pth", "ddp_2.pth"] and r1["writes"] == []  # {name}.pth is a link to the latest
    assert os.path.samefile(tmp_path / "ddp.pth", tmp_path / "ddp_2.pth")
    assert len(r0["losses"]) == len(r1["losses"]) == 2 and r0["losses"] != r1["losses"]  # different samples
    for key, value in r0["model"].items():
        assert torch.equal(value, r1["model"][key]), key
    ckpt = torch.load(tmp_path / "ddp.pth", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["data_position"]["samples_per_step"] == 2
    key = "update_block.flow_head.conv2.weight"
    assert torch.equal(ckpt["model"][key], r0["model"][key])

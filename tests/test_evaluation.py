import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from models import get_model
from utils.distributed import DistState, EvalBatchSampler, init_distributed, resolve_device
from utils.evaluation import cascade_inference, evaluate, make_eval_loader

class ToyModel(nn.Module):
    """Deterministic stand-in with the model contract: the output depends on inputs, iterations and flow_init."""

    size_divisor = 16

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, left, right, flow_init=None, num_iters=10, return_all=False):
        assert not self.training and not torch.is_grad_enabled()
        self.calls.append((tuple(left.shape[-2:]), num_iters, None if flow_init is None else tuple(flow_init.shape)))
        ramp = torch.linspace(0, 1, left.shape[-1]).expand_as(left[:, :1])  # position-dependent: tests the crop
        disp = (left - right).abs().mean(1, keepdim=True) * num_iters + ramp
        if flow_init is not None:
            disp = disp + 2 * F.interpolate(flow_init[:, :1], size=left.shape[-2:], mode="bilinear", align_corners=True)
        out = torch.cat([disp, torch.zeros_like(disp)], 1)
        return [out] if return_all else out


class CountingDataset(Dataset):
    """Samples of varying content; counts every read."""

    def __init__(self, n, size=(40, 50)):
        self.n, self.size, self.reads = n, size, [0] * n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads[i] += 1
        g = torch.Generator().manual_seed(i)
        h, w = self.size
        left, right = torch.rand(3, h, w, generator=g) * 2 - 1, torch.rand(3, h, w, generator=g) * 2 - 1
        disp = torch.rand(1, h, w, generator=g) * 8
        valid = torch.rand(h, w, generator=g) > 0.3
        return (left, right), (disp, None), (valid, None)


def make_loader(dataset, batch_size):
    """The real loader: ``EvalBatchSampler`` for this process's rank and ``stereo_collate``."""
    return make_eval_loader(dataset, batch_size)


def test_cascade_inference_runs_coarse_to_fine_with_seeding():
    model = ToyModel().eval()
    left, right = torch.rand(1, 3, 64, 128), torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        out = cascade_inference(model, left, right, num_iters=3, num_cascades=3)
        one = cascade_inference(ToyModel().eval(), left, right, num_iters=3, num_cascades=1)
    assert out.shape == (1, 2, 64, 128)
    assert model.calls == [((16, 32), 3, None), ((32, 64), 3, (1, 2, 16, 32)), ((64, 128), 3, (1, 2, 32, 64))]
    assert not torch.allclose(one, out)


def test_cascade_inference_rejects_sizes_with_a_correct_message():
    model = ToyModel().eval()
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad(), pytest.raises(ValueError, match=r"divisible by 32 .*height 64 and width 80"):
        cascade_inference(model, x, x, num_iters=2, num_cascades=2)
    with torch.no_grad():
        assert cascade_inference(model, x, x, num_iters=2, num_cascades=1).shape == (1, 2, 64, 80)


def test_sweep_reads_each_sample_once_and_pads_to_the_cascade_divisor():
    dataset = CountingDataset(3)
    model = ToyModel().train()
    results = evaluate(model, make_loader(dataset, 2), cascades=[1, 2], iterations=[1, 4], device="cpu", progress=False)
    assert dataset.reads == [1, 1, 1]
    assert list(results) == [(1, 1), (1, 4), (2, 1), (2, 4)]
    assert {shape for shape, _, _ in model.calls} == {(48, 64), (32, 32), (64, 64)}  # 40x50 padded to 16 and 32
    assert results[(1, 1)]["reference"]["mae"] != results[(1, 4)]["reference"]["mae"]
    assert model.training  # restored after evaluation


def test_sweep_matches_a_direct_computation():
    dataset = CountingDataset(2)
    results = evaluate(ToyModel(), make_loader(dataset, 1), cascades=[1], iterations=[2], device="cpu",
                       metrics=["mae"], padder_type="sintel", progress=False)
    maes = []
    for i in range(2):
        (left, right), (disp, _), (valid, _) = dataset[i]
        # sintel padding of 40x50 to 48x64 puts 7 columns left: the ramp of the padded width, shifted by 7
        pred = 2 * (left - right).abs().mean(0, keepdim=True) + torch.linspace(0, 1, 64)[7:57]
        maes.append((pred - disp).abs()[0][valid].mean().item())
    assert results[(1, 2)]["reference"]["mae"] == pytest.approx(sum(maes) / 2, rel=1e-6)


def test_padder_none_requires_divisible_inputs():
    with pytest.raises(ValueError, match="divisible by 16"):
        evaluate(ToyModel(), make_loader(CountingDataset(1), 1), device="cpu", padder_type="none", progress=False)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from utils.distributed import cleanup, init_distributed

    state = init_distributed("cpu")
    assert state.distributed and state.rank == rank
    dataset = CountingDataset(5)
    results = evaluate(ToyModel(), make_loader(dataset, 2), cascades=[1, 2], iterations=[2],
                       device="cpu", progress=False)
    torch.save({"results": results, "reads": dataset.reads}, os.path.join(out_dir, f"rank{rank}.pt"))
    cleanup()


def test_two_gloo_processes_give_the_single_process_numbers(tmp_path):
    torch.multiprocessing.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="fork")
    single = evaluate(ToyModel(), make_loader(CountingDataset(5), 2), cascades=[1, 2], iterations=[2],
                      device="cpu", progress=False)
    outs = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # batches [0, 1], [2, 3], [4]: rank 0 gets the first and the last, rank 1 the middle one, nothing repeats
    assert [o["reads"] for o in outs] == [[1, 1, 0, 0, 1], [0, 0, 1, 1, 0]]
    for out in outs:
        for config, values in single.items():
            for aggregation in ("reference", "pooled"):
                assert out["results"][config][aggregation] == pytest.approx(values[aggregation], rel=1e-12)


def test_cascade_inference_reproduces_reference_case_b(reference_file):
    ref = torch.load(reference_file("crestereo/ref_b_cascade.pt"), weights_only=True)
    model = get_model("crestereo_base")
    model.load_state_dict(torch.load(reference_file("crestereo/state_dict_no_pe.pt"), weights_only=True))
    with torch.inference_mode():
        out = cascade_inference(model.eval(), ref["left"], ref["right"], ref["num_iters"], ref["cascades"])
    torch.testing.assert_close(out, ref["output"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("num_samples, batch_size, world_size", [(7, 2, 2), (5, 1, 3), (2, 4, 3), (9, 3, 4)])
def test_eval_sampler_shards_single_process_batches_without_repeats(num_samples, batch_size, world_size):
    single = list(EvalBatchSampler(num_samples, batch_size, 0, 1))
    shards = [list(EvalBatchSampler(num_samples, batch_size, r, world_size)) for r in range(world_size)]
    assert sorted(b for shard in shards for b in shard) == single  # same batches, each exactly once
    assert [len(EvalBatchSampler(num_samples, batch_size, r, world_size)) for r in range(world_size)] == [
        len(s) for s in shards
    ]


def test_init_distributed_reads_the_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(key, raising=False)
    assert init_distributed("cpu") == DistState(False, 0, 1, 0, torch.device("cpu"))
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a single SLURM task is a plain process
    assert init_distributed("cpu").distributed is False
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: no process group needed
    assert init_distributed("auto") == DistState(False, 0, 1, 0, resolve_device("auto"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cpu"):
            init_distributed("cuda")


def test_figures_with_and_without_ground_truth(tmp_path):
    from torchvision.io import read_image

    from utils.preprocessing import denormalize
    from utils.visualization import save_disparity_figure

    left = torch.rand(3, 32, 48) * 2 - 1
    assert torch.allclose(denormalize(left), (left + 1) / 2)
    disp = torch.rand(1, 32, 48) * 10
    save_disparity_figure(tmp_path / "gt.png", denormalize(left), denormalize(left), disp + 1, disp, disp[0] > 2, "t")
    save_disparity_figure(tmp_path / "sub" / "pred.png", denormalize(left), denormalize(left), disp)
    with_gt, without = read_image(str(tmp_path / "gt.png")), read_image(str(tmp_path / "sub" / "pred.png"))
    assert with_gt.shape[-1] == without.shape[-1] == 1200  # three 4-inch columns at 100 dpi
    assert with_gt.shape[-2] > 1.8 * without.shape[-2]  # two rows of panels against one


class ConstantModel(nn.Module):
    """Predicts 3 px everywhere: left-right consistent except in the 3 columns whose match leaves the image."""

    size_divisor = 16

    def forward(self, left, right, flow_init=None, num_iters=10, return_all=False):
        out = torch.cat([torch.full_like(left[:, :1], 3.0), torch.zeros_like(left[:, :1])], 1)
        return [out] if return_all else out


def test_lr_check_scores_consistent_pixels_and_counts_the_dropped_ones():
    dataset = CountingDataset(2)
    results = evaluate(ConstantModel(), make_loader(dataset, 1), cascades=[1], iterations=[2], device="cpu",
                       metrics=["mae"], padder_type="sintel", progress=False, lr_threshold=1.0)
    maes, dropped, scored = [], 0, 0
    for i in range(2):
        _, (disp, _), (valid, _) = dataset[i]
        kept = valid.clone()
        kept[:, :3] = False
        maes.append((3.0 - disp[0])[kept].abs().mean().item())
        dropped, scored = dropped + (valid & ~kept).sum().item(), scored + valid.sum().item()
    consistent = results[(1, 2)]["lr_consistent"]
    assert consistent["reference"]["mae"] == pytest.approx(sum(maes) / 2, rel=1e-6)
    assert consistent["dropped"] == pytest.approx(dropped / scored, rel=1e-9)
    assert results[(1, 2)]["reference"]["mae"] != pytest.approx(consistent["reference"]["mae"])
    with pytest.raises(ValueError, match="threshold must be positive"):
        evaluate(ConstantModel(), make_loader(dataset, 1), device="cpu", progress=False, lr_threshold=0.0)

import json

import pytest

import benchmark
from utils import cli


def run(argv):
    args = benchmark.get_args_parser().parse_args(argv)
    benchmark.main(args)
    return json.loads(open(args.json).read())


def test_data_mode_times_every_dataset_and_the_mixture(tmp_path, capsys):
    report = run(["data", "--train-datasets", "synthetic-val", "synthetic", "--dataset-steps", "3", "1",
                  "--crop-size", "64", "96", "--batch-size", "2", "--samples", "2", "--batches", "2",
                  "--workers", "0", "2", "--json", str(tmp_path / "data.json")])
    rows = report["results"]
    assert report["mode"] == "data"
    assert [(r["dataset"], r["workers"]) for r in rows] == [
        ("synthetic-val", "in process"), ("synthetic-val", 0), ("synthetic-val", 2),
        ("synthetic", "in process"), ("synthetic", 0), ("synthetic", 2), ("mixture", 0), ("mixture", 2),
    ]
    assert all(r["samples_per_s"] > 0 for r in rows)
    in_process = rows[0]
    assert in_process["min_s"] <= in_process["median_s"] <= in_process["max_s"]
    assert in_process["samples_per_s"] == pytest.approx(1 / in_process["median_s"])
    assert "samples/s" in capsys.readouterr().out


def test_data_mode_rejects_bad_flags_before_reading(tmp_path, capsys):
    for argv, message in [
        (["--train-datasets", "synthetic", "synthetic-val"], "one value per dataset"),
        (["--train-datasets", "synthetic", "--samples", "0"], "at least 1"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.run(benchmark.main, benchmark.get_args_parser(), argv=["data", *argv, "--json", str(tmp_path / "x")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_model_mode_runs_at_a_tiny_size_on_cpu(tmp_path):
    report = run(["model", "--tasks", "eval", "--size", "32", "32", "--iters", "2", "--runs", "1", "--device", "cpu",
                  "--json", str(tmp_path / "model.json")])
    (row,) = report["results"]
    assert row["task"] == "eval" and row["size"] == [32, 32] and row["median_s"] > 0 and row["gflop"] > 0
    assert (row["iters"], row["batch"], row["dtype"]) == (2, 1, "float32")


@pytest.mark.parametrize("choice, expected", [("only", [True]), ("off", [False])])
def test_model_mode_times_the_training_steps_that_checkpointing_selects(choice, expected, tmp_path):
    report = run(["model", "--model", "raft_stereo_realtime", "--tasks", "train", "--checkpointing", choice,
                  "--size", "64", "128", "--iters", "1", "--runs", "1", "--device", "cpu",
                  "--json", str(tmp_path / "model.json")])
    rows = report["results"]
    assert [r["checkpointing"] for r in rows] == expected and all(r["task"] == "train" for r in rows)
    assert all(r["gflop"] > 0 and r["peak_memory_gb"] > 0 for r in rows)


def test_model_mode_times_onnxruntime_and_torch_export_next_to_eager(tmp_path):
    report = run(["model", "--tasks", "eval", "--size", "32", "32", "--iters", "2", "--runs", "1", "--device", "cpu",
                  "--backend", "eager", "onnxruntime", "torch.export", "--profile", "5",
                  "--json", str(tmp_path / "model.json")])
    eager, *deployed = report["results"]
    assert [row["backend"] for row in deployed] == ["onnxruntime", "torch.export"]
    for operators in (eager["operators"], deployed[0]["operators"]):
        assert any("conv" in row["op"].lower() for row in operators[:3])
        assert sum(row["share"] for row in operators) == pytest.approx(1.0)
        assert all(row["seconds"] > 0 and row["count"] >= 1 for row in operators)
    assert "GridSample" not in [row["op"] for row in deployed[0]["operators"]]
    assert "operators" not in deployed[1]
    for row in deployed:
        assert row["size"] == [32, 32] and row["median_s"] > 0 and row["max_abs_diff_px"] < 1e-4
        assert row["speedup_vs_eager"] == pytest.approx(eager["median_s"] / row["median_s"])


@pytest.mark.parametrize("argv, message", [
    (["--backend", "onnxruntime"], "times the float32 eval forward on the CPU: add --tasks eval"),
    (["--tasks", "eval", "--backend", "torch.export", "--dtype", "bfloat16"], "without --dtype or --compile"),
])
def test_model_mode_rejects_backends_it_cannot_time(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(benchmark.main, benchmark.get_args_parser(),
                argv=["model", "--device", "cpu", *argv, "--json", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_data_synthetic_times_the_generation_of_each_size(tmp_path, capsys):
    report = run(["data", "synthetic", "--sizes", "32x48", "64x64", "--samples", "2", "--json", str(tmp_path / "s")])
    rows = report["results"]
    assert [(r["what"], r["size"], r["max_disparity"], r["threads"]) for r in rows] == [
        ("synthetic", [32, 48], 6.0, 1), ("synthetic", [64, 64], 8.0, 1)]
    assert all(0 < r["min_s"] <= r["median_s"] <= r["max_s"] and r["cpu_median_s"] > 0 for r in rows)
    assert "synthetic 64x64 (max_disparity 8), 1 thread(s):" in capsys.readouterr().out


def test_data_decode_times_our_middlebury_reader_and_torchvisions(tmp_path, capsys):
    rows = run(["data", "decode", "--sizes", "64x96", "--samples", "1", "--json", str(tmp_path / "d")])["results"]
    assert [r["reader"] for r in rows] == ["data.datasets (torchvision.io)", "torchvision (PIL + numpy, to tensors)"]
    assert all(r["size"] == [64, 96] and r["median_s"] > 0 for r in rows)
    assert sorted(rows[0]["files_mib"]) == ["disp0.pfm", "disp1.pfm", "im0.png", "im1.png"]
    assert "Middlebury 64x96 sample, torchvision" in capsys.readouterr().out


def test_data_rejects_a_size_that_is_not_hxw(capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.get_args_parser().parse_args(["data", "synthetic", "--sizes", "64"])
    assert exit_info.value.code == 2 and "'64' is not HxW" in capsys.readouterr().err


def test_pipeline_times_decoding_and_each_preset_in_the_same_iterations(tmp_path, capsys):
    report = run(["pipeline", "--runs", "1", "--downscale", "16", "--crop-size", "32", "48", "--reference-order",
                  "--json", str(tmp_path / "p")])
    rows = report["results"]
    assert report["mode"] == "pipeline"
    assert [(r["sample"], r["size"]) for r in rows[::4]] == [("middlebury", [124, 185]), ("sceneflow", [33, 60])]
    assert [r["pipeline"] for r in rows[:4]] == [
        "train (crop 32x48, linear 0.6-1.0)", "eval 384x512 (published protocol)", "eval native resolution",
        "train, reference order (photometric ops before the crop)"]
    for r in rows:
        assert r["decode_s"] > 0 and r["preset_s"] > 0
        assert r["x_decode"] == pytest.approx((r["decode_s"] + r["preset_s"]) / r["decode_s"])
        assert r["samples_per_s"] == pytest.approx(1 / (r["decode_s"] + r["preset_s"]))
    assert "| sceneflow 33x60 | eval native resolution |" in capsys.readouterr().out

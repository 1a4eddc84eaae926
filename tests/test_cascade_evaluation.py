import ast
import re

import pytest

from cascade_evaluation import check_args, format_log, get_args_parser, run_name
from utils import cli

# The published log of CREStereo_Base_Weights.CRESTEREO_ETH_MBL_V1 (recipes.md), verbatim.
PUBLISHED = """Dataset: middlebury2014-train @size: [384, 512]:
{
\t1: {
\t\t2: {'mae': 2.363, 'rmse': 4.352, '1px': 0.611, '3px': 0.828, '5px': 0.891, 'relepe': 0.176, 'fl-all': 64.511}
\t\t5: {'mae': 1.618, 'rmse': 3.71, '1px': 0.761, '3px': 0.879, '5px': 0.918, 'relepe': 0.154, 'fl-all': 77.128}
\t\t10: {'mae': 1.416, 'rmse': 3.53, '1px': 0.777, '3px': 0.896, '5px': 0.933, 'relepe': 0.148, 'fl-all': 78.388}
\t\t20: {'mae': 1.448, 'rmse': 3.583, '1px': 0.771, '3px': 0.893, '5px': 0.931, 'relepe': 0.145, 'fl-all': 77.7}
\t},
}
{
\t2: {
\t\t2: {'mae': 1.972, 'rmse': 4.125, '1px': 0.73, '3px': 0.865, '5px': 0.908, 'relepe': 0.169, 'fl-all': 74.396}
\t\t5: {'mae': 1.403, 'rmse': 3.448, '1px': 0.793, '3px': 0.905, '5px': 0.937, 'relepe': 0.151, 'fl-all': 80.186}
\t\t10: {'mae': 1.312, 'rmse': 3.368, '1px': 0.799, '3px': 0.912, '5px': 0.943, 'relepe': 0.148, 'fl-all': 80.379}
\t\t20: {'mae': 1.376, 'rmse': 3.542, '1px': 0.796, '3px': 0.91, '5px': 0.942, 'relepe': 0.149, 'fl-all': 80.054}
\t},
}
"""


def parse_log(text):
    """((dataset, size), {(cascades, iterations): metrics}) from a log in the published layout."""
    lines = text.splitlines()
    header = re.fullmatch(r"Dataset: (\S+) @size: (.+):", lines[0]).groups()
    results, k = {}, 1
    while k < len(lines):
        assert lines[k] == "{"
        c = int(re.fullmatch(r"\t(\d+): \{", lines[k + 1]).group(1))
        k += 2
        while lines[k] != "\t},":
            i, values = re.fullmatch(r"\t\t(\d+): (\{.*\})", lines[k]).groups()
            results[(c, int(i))] = ast.literal_eval(values)
            k += 1
        assert lines[k + 1] == "}"
        k += 2
    return header, results


def test_log_reproduces_the_published_layout_line_by_line():
    (dataset, size), published = parse_log(PUBLISHED)
    assert (dataset, size) == ("middlebury2014-train", "[384, 512]")
    # unrounded inputs, as evaluate() returns them: rounding to 3 decimals must give the published text
    results = {key: {"reference": {m: v + 4e-4 for m, v in values.items()}} for key, values in published.items()}
    metrics = ["mae", "rmse", "1px", "3px", "5px", "relepe", "fl-all"]
    text = format_log(dataset, [384, 512], results, [1, 2], [2, 5, 10, 20], metrics)
    assert text.splitlines() == PUBLISHED.splitlines()
    assert text == PUBLISHED


def test_log_follows_flag_order_and_native_size():
    results = {(c, i): {"reference": {"mae": c + i / 100, "fl-all": 50.0}} for c in (1, 2) for i in (3, 1)}
    text = format_log("synthetic-val", None, results, [2, 1], [3, 1], ["mae", "fl-all"])
    head = ["Dataset: synthetic-val @size: native:", "{", "\t2: {", "\t\t3: {'mae': 2.03, 'fl-all': 50.0}"]
    assert text.splitlines()[:4] == head
    assert list(parse_log(text)[1]) == [(2, 3), (2, 1), (1, 3), (1, 1)]


def _args(*argv):
    return cli.parse_args(get_args_parser(), check_args, list(argv))


def test_defaults_sweep_the_published_table_and_both_spellings_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pth").touch()  # --weights files must exist
    args = _args("--weights", "CREStereo_Base_Weights.MEGVII_V1")
    assert (args.n_cascades, args.n_iterations, args.eval_size) == ([1, 2], [2, 5, 10, 20], [384, 512])
    assert args.metrics == ["mae", "rmse", "1px", "3px", "5px", "relepe", "fl-all"]
    assert run_name(args) == "CREStereo_Base_Weights.MEGVII_V1_middlebury2014-train_384x512"
    a = _args("--weights", "w.pth", "--n_cascades", "3", "--n-iterations", "4", "--eval-size", "native")
    b = _args("--weights", "w.pth", "--n-cascades", "3", "--n_iterations", "4", "--eval-size", "native")
    for parsed in (a, b):
        assert (parsed.n_cascades, parsed.n_iterations, parsed.eval_size) == ([3], [4], None)
    assert run_name(a) == "w_middlebury2014-train_native"


def test_output_names_are_file_stems_inside_the_output_dir(tmp_path):
    checkpoint = tmp_path / "runs" / "stage1.step-9000.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    assert run_name(_args("--checkpoint", str(checkpoint))) == "stage1.step-9000_middlebury2014-train_384x512"
    (tmp_path / "stage2.pt").touch()  # --weights files must exist
    assert run_name(_args("--weights", str(tmp_path / "stage2.pt"))) == "stage2_middlebury2014-train_384x512"
    assert run_name(_args("--weights", "MEGVII_V1")) == "MEGVII_V1_middlebury2014-train_384x512"


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "exactly one of --weights"),
        (["--weights", "W.X", "--checkpoint", "c.pth"], "exactly one of --weights"),
        (["--weights", "missing.pth"], "missing.pth does not exist"),
        (["--weights", "W.X", "--eval-size", "384"], "two positive integers"),
        (["--weights", "W.X", "--eval-size", "native", "--batch-size", "2"], "--batch-size 1"),
        (["--weights", "W.X", "--n-cascades", "0"], "at least 1"),
        (["--checkpoint", "/nonexistent/run.pth"], "does not exist"),
    ],
)
def test_bad_flags_get_one_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _args(*argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _run(argv):
    import cascade_evaluation

    cli.run(cascade_evaluation.main, get_args_parser(), check_args, argv)


@pytest.fixture
def two_synthetic_samples(monkeypatch):
    from data import registry

    real = registry.make_dataset
    small = {"length": 2, "size": (64, 96), "max_disparity": 24}
    monkeypatch.setattr(registry, "make_dataset", lambda *a, **k: real(*a, **small, **k))


@pytest.fixture
def no_model(monkeypatch):
    import cascade_evaluation

    def fail(*_):
        raise AssertionError("the model must not be built for bad input")

    monkeypatch.setattr(cascade_evaluation, "load_model_from_args", fail)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "middlebury2014-test"], "needs ground truth, but middlebury2014-test"),
        (["--dataset", "middlebury2015"], "middlebury2014-train"),  # unknown names list the valid ones
        (["--dataset", "middlebury2014-train", "--dataset-root", "/nonexistent"], "/nonexistent"),
    ],
)
def test_bad_datasets_fail_before_the_model_is_built(argv, message, no_model, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run(["--weights", "CREStereo_Base_Weights.MEGVII_V1", "--device", "cpu", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_empty_dataset_fails_before_the_model_is_built(tmp_path, no_model, capsys):
    (tmp_path / "Middlebury2014" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit):
        _run(["--weights", "W.X", "--device", "cpu", "--dataset-root", str(tmp_path)])
    assert "Middlebury2014" in capsys.readouterr().err


@pytest.fixture(scope="module")
def raw_checkpoint(tmp_path_factory):
    """A raw state dict of a randomly initialised crestereo_base."""
    import torch

    import models

    path = tmp_path_factory.mktemp("weights") / "raw.pth"
    torch.save(models.get_model("crestereo_base").state_dict(), path)
    return path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eval-size", "48", "80", "--padder-type", "none"], "not divisible by 32"),
        (["--n-iterations", "1"], "evaluation stopped: num_iters must be at least 2"),
    ],
)
def test_inputs_the_model_rejects_get_one_message(argv, message, raw_checkpoint, tmp_path, two_synthetic_samples,
                                                  capsys):
    with pytest.raises(SystemExit):
        _run(["--checkpoint", str(raw_checkpoint), "--dataset", "synthetic-val", "--device", "cpu",
              "--output-dir", str(tmp_path), *argv])
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*_eval.log"))


def test_end_to_end_log_json_and_figures_agree(tmp_path, two_synthetic_samples, capsys):
    import json

    import torch

    import models

    torch.manual_seed(0)
    state = models.get_model("crestereo_base").state_dict()
    checkpoint = tmp_path / "checkpoints" / "run.pt"  # absolute, outside --output-dir, not .pth
    checkpoint.parent.mkdir()
    torch.save({"model": state, "args": {"model": "crestereo_base"}, "step": 7}, checkpoint)
    _run(["--checkpoint", str(checkpoint), "--dataset", "synthetic-val", "--device", "cpu",
          "--eval-size", "64", "64", "--n-cascades", "1", "2", "--n-iterations", "2", "--metrics", "mae", "1px",
          "--output-dir", str(tmp_path), "--save-images"])
    stem = tmp_path / "run_synthetic-val_64x64_eval"
    (dataset, size), logged = parse_log(stem.with_suffix(".log").read_text())
    record = json.loads(stem.with_suffix(".json").read_text())
    assert (dataset, size) == ("synthetic-val", "[64, 64]") and record["num_samples"] == 2
    assert record["model"] == "crestereo_base" and record["source"] == str(checkpoint)
    assert [(r["cascades"], r["iterations"]) for r in record["results"]] == [(1, 2), (2, 2)]
    for r in record["results"]:
        expected = {m: round(v, 3) for m, v in r["reference"].items()}
        assert logged[(r["cascades"], r["iterations"])] == expected
        assert list(expected) == ["mae", "1px", "fl-all"]
        assert set(r["pooled"]) == set(expected)
    console = capsys.readouterr().out
    assert console.count("cascades ") == 2 and f"mae {record['results'][0]['reference']['mae']:.4f}" in console
    figures = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert figures == [f"run_synthetic-val_64x64_images/{c}c_2i/{k:05d}.png" for c in (1, 2) for k in range(2)]


def _write_middlebury(root, scenes):
    """A miniature Middlebury 2014 train layout: two views and their PFM disparities per scene."""
    import torch
    from torchvision.io import write_png

    from data.io import write_pfm

    for k, scene in enumerate(scenes):
        folder = root / "Middlebury2014" / "train" / f"{scene}-perfect"
        folder.mkdir(parents=True)
        g = torch.Generator().manual_seed(k)
        for view in ("im0", "im1"):
            write_png(torch.randint(0, 256, (3, 48, 72), dtype=torch.uint8, generator=g), str(folder / f"{view}.png"))
        for view in ("disp0", "disp1"):
            write_pfm(folder / f"{view}.pfm", torch.rand(48, 72, generator=g).numpy() * 20 + 1)


def test_recipe_command_reads_every_file_once(raw_checkpoint, tmp_path, monkeypatch, capsys):
    """The README recipe's flags (default sweep of 8 configurations) on a small Middlebury layout."""
    import collections
    import json

    from data import io as data_io

    _write_middlebury(tmp_path, ["Adirondack", "Motorcycle"])
    reads = collections.Counter()
    decode, open_ = data_io.decode_image, open

    def counting_decode(path, *args, **kwargs):
        reads[str(path)] += 1
        return decode(path, *args, **kwargs)

    def counting_open(path, *args, **kwargs):
        reads[str(path)] += 1
        return open_(path, *args, **kwargs)

    monkeypatch.setattr(data_io, "decode_image", counting_decode)
    monkeypatch.setattr(data_io, "open", counting_open, raising=False)
    _run(["--dataset", "middlebury2014-train", "--batch-size", "1", "--dataset-root", str(tmp_path),
          "--model", "crestereo_base", "--weights", str(raw_checkpoint), "--eval-size", "64", "64", "--device", "cpu",
          "--output-dir", str(tmp_path)])
    files = sorted(
        f"{scene}-perfect/{name}" for scene in ("Adirondack", "Motorcycle")
        for name in ("disp0.pfm", "disp1.pfm", "im0.png", "im1.png")
    )
    assert sorted(p.split("/train/")[1] for p in reads) == files and set(reads.values()) == {1}, reads
    record = json.loads((tmp_path / "raw_middlebury2014-train_64x64_eval.json").read_text())
    assert [(r["cascades"], r["iterations"]) for r in record["results"]] == [
        (c, i) for c in (1, 2) for i in (2, 5, 10, 20)
    ]
    assert len(parse_log((tmp_path / "raw_middlebury2014-train_64x64_eval.log").read_text())[1]) == 8


def test_lr_check_reports_consistent_pixel_metrics(raw_checkpoint, tmp_path, two_synthetic_samples, capsys):
    import json

    _run(["--checkpoint", str(raw_checkpoint), "--dataset", "synthetic-val", "--device", "cpu",
          "--eval-size", "64", "64", "--n-cascades", "1", "--n-iterations", "2", "--metrics", "mae",
          "--output-dir", str(tmp_path), "--lr-check", "--lr-threshold", "0.5"])
    record = json.loads((tmp_path / "raw_synthetic-val_64x64_eval.json").read_text())
    consistent = record["results"][0]["lr_consistent"]
    assert 0.0 < consistent["dropped"] < 1.0 and set(consistent["reference"]) == {"mae", "fl-all"}
    console = capsys.readouterr().out
    assert f"left-right consistent pixels ({consistent['dropped']:.1%} dropped): mae" in console


def test_lr_threshold_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        _run(["--dataset", "synthetic-val", "--weights", "CREStereo_Base_Weights.MEGVII_V1", "--lr-check",
              "--lr-threshold", "0"])
    assert "--lr-threshold must be positive" in capsys.readouterr().err

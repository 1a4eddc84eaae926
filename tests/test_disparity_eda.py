import json

import pytest
import torch

import disparity_eda as eda
from data.mixture import TrainingMixture
from data.synthetic import SyntheticStereo
from presets import StereoMatchingTrainPreset
from utils import cli


def synthetic(low: float, high: float, seed: int = 0) -> SyntheticStereo:
    return SyntheticStereo(size=(64, 96), min_disparity=low, max_disparity=high, length=40, seed=seed, num_objects=3)


def preset(crop=(32, 48), scale=(1.0, 1.0), **kwargs):
    return StereoMatchingTrainPreset(crop_size=crop, scaling_type="linear", scale_range=scale, **kwargs)


def test_percentiles_match_exact_quantiles_within_a_bin():
    values = torch.linspace(3.0, 70.0, 10_001)
    stats = eda.CropStatistics()
    stats.add(values, 20_000, (10, 20), 1.0, False, "x")
    for q in (1, 5, 50, 95, 99):
        assert stats.percentile(q) == pytest.approx(float(torch.quantile(values, q / 100)), abs=eda.BIN_WIDTH)
    assert stats.share_beyond(36.5) == pytest.approx(0.5, abs=1e-3)
    assert stats.summary(36.5)["valid_share"] == pytest.approx(10_001 / 20_000)
    assert stats.mean() == pytest.approx(36.5)


def test_crop_statistics_follow_the_known_disparity_range_and_scale():
    datasets = {"near": synthetic(10.0, 20.0)}
    unscaled = eda.analyse(datasets, {"near": preset()}, num_samples=4)["near"]
    assert unscaled.samples == 4 and unscaled.valid_pixels == unscaled.total_pixels == 4 * 32 * 48
    assert 10.0 - eda.BIN_WIDTH <= unscaled.percentile(0.1) < unscaled.percentile(50) < unscaled.percentile(99.9)
    assert unscaled.percentile(99.9) <= 20.0 + eda.BIN_WIDTH
    assert unscaled.scales == [1.0] * 4 and unscaled.raised_scales == 0

    halved = eda.analyse(datasets, {"near": preset(crop=(24, 32), scale=(0.5, 0.5))}, num_samples=4)["near"]
    assert halved.scales == [0.5] * 4
    assert 5.0 - eda.BIN_WIDTH <= halved.percentile(0.1) and halved.percentile(99.9) <= 10.0 + eda.BIN_WIDTH
    # The same samples and seeds: halving the image halves every percentile (up to resampling of edges).
    assert halved.percentile(50) == pytest.approx(unscaled.percentile(50) / 2, rel=0.15)
    assert halved.summary(15.0)["image_sizes"] == {"64x96": 4}
    assert halved.summary(15.0)["aspect_ratio"]["median"] == pytest.approx(1.5)


def test_scale_is_raised_when_the_crop_does_not_fit():
    stats = eda.analyse({"near": synthetic(10.0, 20.0)}, {"near": preset(crop=(48, 80), scale=(0.5, 0.5))},
                        num_samples=2)["near"]
    assert stats.raised_scales == 2
    assert stats.scales == [pytest.approx(80 / 96)] * 2  # the width limits: 96 * s >= 80
    assert stats.percentile(0.1) >= 10.0 * 80 / 96 - eda.BIN_WIDTH


def test_mixture_is_drawn_as_train_py_draws_it():
    datasets = {"near": synthetic(5.0, 10.0), "far": synthetic(30.0, 40.0, seed=7)}
    presets = {name: preset() for name in datasets}
    steps, n = [300, 100], 40
    results = eda.analyse(datasets, presets, num_samples=n, dataset_steps=steps, seed=3)
    mixture = results[eda.MIXTURE]
    reference = TrainingMixture(list(datasets.values()), steps, 2, seed=3, names=list(datasets))
    expected = {"near": 0, "far": 0}
    for position in range(n):
        expected[list(datasets)[reference.source(position)[0]]] += 1
    assert dict(mixture.sources) == expected
    assert expected["near"] / n == pytest.approx(0.75, abs=0.15)
    # Every crop is fully valid and the two ranges do not overlap: the pixel share beyond 20 px is the far share.
    assert mixture.share_beyond(20.0) == pytest.approx(expected["far"] / n)
    assert results["near"].share_beyond(20.0) == 0.0 and results["far"].share_beyond(20.0) == 1.0


def test_results_do_not_depend_on_workers():
    datasets = {"near": synthetic(10.0, 20.0)}
    serial = eda.analyse(datasets, {"near": preset(scale=(0.6, 1.0))}, num_samples=3)["near"]
    parallel = eda.analyse(datasets, {"near": preset(scale=(0.6, 1.0))}, num_samples=3, workers=2)["near"]
    assert torch.equal(serial.counts, parallel.counts) and serial.scales == parallel.scales


def test_command_line_writes_figure_json_and_table(tmp_path, capsys):
    args = eda.get_args_parser().parse_args([
        "--train-datasets", "synthetic", "synthetic-val", "--dataset-steps", "30", "10", "--num-samples", "2",
        "--crop-size", "64", "64", "--workers", "0", "--output-dir", str(tmp_path), "--threshold", "32",
    ])
    report = eda.main(args)
    assert (tmp_path / "disparity_eda.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "disparity_eda.json").read_text())
    assert set(saved["results"]) == {"synthetic", "synthetic-val", "mixture"}
    assert saved["results"]["mixture"]["samples"] == 2 == report["results"]["synthetic"]["samples"]
    assert 0 < saved["results"]["synthetic"]["percentiles"]["50"] < 64
    out = capsys.readouterr().out
    assert "synthetic-val" in out and "p50" in out and ">=32" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train-datasets", "nope"], "Valid names"),
        (["--train-datasets", "synthetic", "synthetic-val", "--dataset-steps", "1"], "one value per dataset"),
        (["--train-datasets", "synthetic", "synthetic"], "once"),
        (["--train-datasets", "sintel", "--dataset-root", "/nonexistent"], "does not exist"),
    ],
)
def test_bad_input_gives_one_clear_message(argv, message, tmp_path, capsys):
    args = eda.get_args_parser().parse_args(argv + ["--output-dir", str(tmp_path)])
    with pytest.raises(ValueError, match=message):
        eda.main(args)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(eda.main, eda.get_args_parser(), argv=argv + ["--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_mixture_crops_are_the_crops_train_py_reads():
    from presets import make_training_mixture
    from data.registry import make_dataset

    args = eda.get_args_parser().parse_args(
        ["--train-datasets", "synthetic-val", "synthetic", "--dataset-steps", "5", "5", "--crop-size", "64", "96"]
    )
    training = make_training_mixture(args, world_size=1)
    raw = {name: make_dataset(name, None) for name in args.train_datasets}
    for position in range(3):
        d, index = training.source(position)
        name = args.train_datasets[d]
        preset = eda.train_preset_from_args(args, name)
        seed = eda.sample_seed(args.seed, position)
        crop = eda.draw_sample(raw[name], index, preset, eda.ScaleRecorder(preset), seed)
        _, disparities, masks = training[position]
        assert torch.equal(crop["values"], disparities[0][0][masks[0]])

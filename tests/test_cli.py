"""The shared command-line layer: one name per idea with the old spellings as aliases, one error rule."""

import argparse

import pytest
import torch

import benchmark
import cascade_evaluation
import predict
import train
from models import canonical_name, get_model
from models.weights import compact_state_dict
from utils import cli


def test_aliases_reach_the_canonical_destinations():
    evaluation = cascade_evaluation.get_args_parser()
    for flag in cli.ITERATIONS_FLAGS:
        assert evaluation.parse_args([flag, "3", "4"]).n_iterations == [3, 4]
    for flag in cli.CASCADES_FLAGS:
        assert evaluation.parse_args([flag, "2"]).n_cascades == [2]
    assert evaluation.parse_args(["--batch", "3"]).batch_size == 3
    assert evaluation.parse_args(["--mixed-precision"]).dtype == "auto"  # its old meaning
    assert evaluation.parse_args([]).dtype == "float32"
    model = benchmark.get_args_parser()
    assert model.parse_args(["model", "--iters", "2", "--batch", "4"]).n_iterations == 2
    assert model.parse_args(["model", "--batch-size", "4", "--dtype", "bfloat16"]).batch_size == 4
    training = train.get_args_parser()
    assert [training.parse_args([flag, "3"]).n_iterations for flag in cli.ITERATIONS_FLAGS] == [3] * 4
    assert [training.parse_args([flag, "3"]).batch_size for flag in cli.BATCH_SIZE_FLAGS] == [3] * 2
    assert training.parse_args(["--mixed-precision"]).dtype == "float16"  # its old meaning: float16, grad scaler
    assert training.parse_args(["--mixed-precision", "bfloat16"]).dtype == "bfloat16"
    assert training.parse_args([]).dtype == "float32"
    prediction = predict.get_args_parser()
    required = ["--left", "l", "--right", "r", "--output-dir", "o"]
    assert prediction.parse_args(required + ["--recurrent-updates", "7"]).n_iterations == 7


def test_eval_size():
    assert cli.parse_eval_size(["384", "512"]) == [384, 512]
    assert cli.parse_eval_size(["native"]) is None
    for bad in (["384"], ["0", "5"], ["a", "b"]):
        with pytest.raises(ValueError, match="two positive integers"):
            cli.parse_eval_size(bad)
    with pytest.raises(ValueError, match="needs --eval-batch-size 1"):
        cli.parse_eval_size(["native"], batch_size=2, batch_flag="--eval-batch-size")


def test_autocast_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert cli.autocast_dtype("float32", cpu) is None
    assert cli.autocast_dtype("bfloat16", cuda) is torch.bfloat16
    assert (cli.autocast_dtype("auto", cpu), cli.autocast_dtype("auto", cuda)) == (torch.bfloat16, torch.float16)


def test_value_errors_become_one_parser_error(capsys):
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--x", type=int, default=0)

    def check(args):
        if args.x < 0:
            raise ValueError("--x must be >= 0; pass --x 0")

    assert cli.run(lambda args: args.x * 2, parser, check, ["--x", "2"]) == 4
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda args: None, parser, check, ["--x", "-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("tool: error: --x must be >= 0; pass --x 0")


def test_model_source_and_loading(tmp_path):
    def args(**kw):
        return argparse.Namespace(**{"model": "crestereo_base", "weights": None, "checkpoint": None, **kw})

    with pytest.raises(ValueError, match="exactly one"):
        cli.check_model_source(args())
    with pytest.raises(ValueError, match="exactly one"):
        cli.check_model_source(args(weights="W.X", checkpoint="c.pth"))
    with pytest.raises(ValueError, match="does not exist"):
        cli.check_model_source(args(checkpoint=str(tmp_path / "none.pth")))
    with pytest.raises(ValueError, match="cannot load the model from NoSuch.W"):
        cli.load_model_from_args(args(weights="NoSuch.W"))
    torch.save({"model": {"not": torch.zeros(1)}, "args": {"model": "crestereo_base"}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth"):
        cli.load_model_from_args(args(checkpoint=str(tmp_path / "bad.pth")))


@pytest.mark.parametrize(
    "saved, given", [("raft_stereo_realtime", "crestereo_base"), ("crestereo_base", "raft_stereo")]
)
def test_checkpoint_of_the_other_family_names_its_model(tmp_path, saved, given):
    """A raw state dict of one family passed with --checkpoint to the other: the error names the model to use."""
    path = tmp_path / "weights.pth"
    torch.save(compact_state_dict(get_model(saved)), path)
    args = argparse.Namespace(model=given, weights=None, checkpoint=str(path))
    with pytest.raises(ValueError, match=f"holds {saved} weights, not {canonical_name(given)}; pass --model {saved}"):
        cli.load_model_from_args(args)

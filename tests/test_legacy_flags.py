"""The command lines users already have: the seed recipes and torchvision's reference flags, through the parsers."""

import shlex

import pytest

import cascade_evaluation
import train

# The two training recipes and the evaluation commands of the seed (shared/reference/recipes.md), verbatim apart
# from the shell variables, which get example values.
VARIABLES = {"$dataset_root": "/data", "$name_cre": "cre", "$name_things": "things", "$checkpoint_dir": "checkpoints"}
STAGE_1 = r"""torchrun --nproc_per_node 8 --nnodes 1 train.py \
    --dataset-root $dataset_root \
    --name $name_cre \
    --model crestereo_base \
    --train-datasets crestereo eth3d-train middlebury2014-other \
    --dataset-steps 264000 18000 18000 \
    --batch-size 2 \
    --lr 0.0004 \
    --min-lr 0.00002 \
    --lr-decay-method cosine \
    --warmup-steps 6000 \
    --decay-after-steps 30000 \
    --clip-grad-norm 1.0"""
STAGE_2 = r"""torchrun --nproc_per_node 8 --nnodes 1 train.py \
    --dataset-root $dataset_root \
    --name $name_things \
    --model crestereo_base \
    --train-datasets crestereo eth3d-train middlebury2014-other instereo2k fallingthings carla-highres sintel sceneflow-monkaa sceneflow-driving \
    --dataset-steps 12000 12000 12000 12000 12000 12000 12000 12000 12000 \
    --batch-size 2 \
    --scale-range 0.2 0.8 \
    --lr 0.0004 \
    --lr-decay-method cosine \
    --decay-after-steps 0 \
    --warmup-steps 0 \
    --min-lr 0.00002 \
    --resume-path $checkpoint_dir/$name_cre.pth"""  # noqa: E501 (verbatim)
EVALUATIONS = [
    "torchrun --nproc_per_node 1 --nnodes 1 cascade_evaluation.py --dataset middlebury2014-train --batch-size 1 "
    f"--dataset-root $dataset_root --model crestereo_base --weights CREStereo_Base_Weights.{member}"
    for member in ("CRESTEREO_ETH_MBL_V1", "CRESTEREO_FINETUNE_MULTI_V1", "MEGVII_V1")
]


def script_args(command: str, script: str) -> list[str]:
    """The arguments after `script` in a shell command line, variables substituted."""
    for name, value in VARIABLES.items():
        command = command.replace(name, value)
    words = shlex.split(command.replace("\\\n", " "))  # line continuations, as the shell reads them
    return words[words.index(script) + 1:]


def test_recipes_parse_and_pass_the_flag_checks():
    one = train.get_args_parser().parse_args(script_args(STAGE_1, "train.py"))
    train.check_args(one)
    assert one.dataset_steps == [264000, 18000, 18000] and one.clip_grad_norm == 1.0 and one.decay_after_steps == 30000
    two = train.get_args_parser().parse_args(script_args(STAGE_2, "train.py"))
    train.check_args(two)
    assert len(two.train_datasets) == len(two.dataset_steps) == 9 and two.resume_path == "checkpoints/cre.pth"
    assert two.scale_range == [0.2, 0.8] and not two.resume_schedule


@pytest.mark.parametrize("command", EVALUATIONS)
def test_torchvision_evaluation_commands_parse(command):
    args = cascade_evaluation.get_args_parser().parse_args(script_args(command, "cascade_evaluation.py"))
    cascade_evaluation.check_args(args)
    assert args.weights.startswith("CREStereo_Base_Weights.") and args.batch_size == 1 and args.eval_size == [384, 512]


def test_torchvision_train_flags_are_mapped_or_ignored_with_one_warning_each(capsys):
    argv = ["--resume", "old.pth", "--world-size", "8", "--dist-url", "env://", "--lr-decay-gamma", "0.8",
            "--gpu-transforms", "--dataset-shuffle", "True", "--dataset-order-shuffle", "yes", "--mixed-precision"]
    args = train.get_args_parser().parse_args(argv)
    assert args.resume_path == "old.pth" and args.dtype == "float16"
    assert not hasattr(args, "world_size") and not hasattr(args, "lr_decay_gamma")
    from utils.legacy_flags import warn_ignored

    warn_ignored(args, "train.py")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "ignoring --world-size 8", "ignoring --dist-url env://", "ignoring --lr-decay-gamma 0.8",
        "ignoring --gpu-transforms", "ignoring --dataset-shuffle True", "ignoring --dataset-order-shuffle True"]


@pytest.mark.parametrize("flag", ["--dataset-shuffle", "--dataset-order-shuffle"])
def test_an_unshuffled_mixture_is_refused_not_misread(flag, capsys):
    with pytest.raises(SystemExit):
        train.get_args_parser().parse_args([flag, "False"])  # torchvision's type=bool read this as True
    assert "an unshuffled one is not available" in capsys.readouterr().err


def test_torchvision_evaluation_flags(tmp_path, capsys):
    argv = ["--weights", "CREStereo_Base_Weights.MEGVII_V1", "--img-folder", str(tmp_path / "images"),
            "--world-size", "1", "--dist-url", "env://"]
    args = cascade_evaluation.get_args_parser().parse_args(argv)
    assert args.img_folder == str(tmp_path / "images") and len(args.ignored_flags) == 2

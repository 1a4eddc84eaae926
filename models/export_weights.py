"""Write a model's weights in torchvision's published layout, for tools that load them strictly.

    python -m models.export_weights checkpoints/run.pth crestereo_run.pth

Our training checkpoints leave out the entries a model recomputes (`DERIVED_KEYS`: CREStereo's 64 MB
positional-encoding table). This reads a training checkpoint or a raw state dict, builds the model it names (or
`--model`), and writes `model.state_dict()`, every published entry included, as a raw state dict (atomically).
"""

import argparse
import sys
from pathlib import Path

from models import get_model
from models.weights import load_checked
from utils.checkpoint import load_checkpoint, model_state_from_checkpoint, save_checkpoint


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="one of our training checkpoints, or a raw state dict")
    parser.add_argument("output", help="the raw state dict to write (torchvision's layout)")
    parser.add_argument("--model", default="crestereo_base", help="model name when the file does not name one")
    return parser


def export(checkpoint: str | Path, output: str | Path, model_name: str = "crestereo_base") -> Path:
    """Load `checkpoint` into its model and write the full state dict to `output`; returns `output`."""
    state, name = model_state_from_checkpoint(load_checkpoint(checkpoint))
    model = get_model(name or model_name)
    load_checked(model, state, str(checkpoint))
    save_checkpoint(model.state_dict(), output)
    return Path(output)


def main(argv: list[str] | None = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if Path(args.output).resolve() == Path(args.checkpoint).resolve():
        parser.error("the output would overwrite the checkpoint; pick another output path")
    try:
        path = export(args.checkpoint, args.output, args.model)
    except (ValueError, FileNotFoundError, OSError) as e:
        parser.error(str(e))
    print(f"Wrote {path} ({path.stat().st_size / 2**20:.0f} MiB, torchvision's layout)")


if __name__ == "__main__":
    main(sys.argv[1:])

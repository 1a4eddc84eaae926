"""`python -m models.export_weights`: compact training checkpoints back to torchvision's full layout."""

import pytest
import torch

from models import get_model
from models.export_weights import main
from models.weights import DERIVED_KEYS, compact_state_dict
from utils.checkpoint import save_checkpoint


def test_export_restores_the_published_layout(tmp_path, capsys):
    torch.manual_seed(0)
    model = get_model("crestereo_base")
    compact = compact_state_dict(model)
    assert [k for k in model.state_dict() if k not in compact] == ["positional_encodings.pe"]
    checkpoint = tmp_path / "run.pth"
    save_checkpoint({"model": compact, "args": {"model": "crestereo_base"}, "step": 5}, checkpoint)
    main([str(checkpoint), str(tmp_path / "export.pth")])
    assert "torchvision's layout" in capsys.readouterr().out
    exported = torch.load(tmp_path / "export.pth", weights_only=True)
    full = model.state_dict()
    assert list(exported) == list(full) and any(k.endswith(DERIVED_KEYS) for k in exported)
    assert all(torch.equal(exported[k], full[k]) for k in full)
    assert exported["positional_encodings.pe"].shape == (1, 256, 256, 256)


def test_export_bad_input(tmp_path, capsys):
    raw = tmp_path / "raw.pth"
    save_checkpoint({"w": torch.zeros(1)}, raw)
    for argv, message in (([str(raw), str(raw)], "would overwrite the checkpoint"),
                          ([str(raw), str(tmp_path / "out.pth")], "does not fit CREStereo")):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err

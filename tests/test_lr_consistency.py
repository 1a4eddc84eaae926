"""Left-right consistency: the error on exact synthetic disparities, the mirrored right view, predict.py --lr-check."""

import numpy as np
import pytest
import torch
from PIL import Image

from data.io import read_pfm
from data.synthetic import SyntheticStereo
from utils.lr_consistency import lr_error, right_view_disparity, unreliable_mask


def test_exact_disparities_are_consistent_where_visible_and_flag_occlusions():
    scene = SyntheticStereo(size=(64, 96), max_disparity=16, length=1, seed=2).render(0)
    error = lr_error(scene.disparities[0][0], scene.disparities[1][0])
    unreliable = unreliable_mask(error, 1.0)
    occluded = scene.occlusions[0]
    assert unreliable[~occluded].float().mean() < 0.03  # visible pixels agree (boundaries may differ)
    assert unreliable[occluded].float().mean() > 0.6  # occluded and out-of-view pixels are caught
    assert torch.isinf(error[:, 0]).all()  # column 0 looks out of the right image


def test_right_view_comes_from_the_mirrored_swapped_pair():
    left, right = torch.rand(3, 5, 7), torch.rand(3, 5, 7)
    seen = []

    def predict(a, b):
        seen.append((a, b))
        return a.mean(0)

    assert torch.allclose(right_view_disparity(predict, left, right), right.mean(0))
    assert torch.equal(seen[0][0], right.flip(-1)) and torch.equal(seen[0][1], left.flip(-1))
    with pytest.raises(ValueError, match="positive"):
        unreliable_mask(torch.zeros(2, 2), 0)


def test_predict_writes_error_and_occlusion_maps(tmp_path, monkeypatch):
    import predict
    from tests.test_submission import ConstantModel, _image
    from utils import cli

    _image(tmp_path / "l.png", 0), _image(tmp_path / "r.png", 1)
    monkeypatch.setattr(predict, "load_model_from_args", lambda args: (ConstantModel(), "constant"))
    code = cli.run(predict.main, predict.get_args_parser(), predict.check_args, [
        "--left", str(tmp_path / "l.png"), "--right", str(tmp_path / "r.png"), "--weights", "W.X", "--device", "cpu",
        "--output-dir", str(tmp_path / "out"), "--lr-check", "--formats", "pfm", "color"])
    assert code == 0
    # 12.3 px everywhere in both views: consistent, except the first 13 columns, which look out of the image
    occlusion = np.array(Image.open(tmp_path / "out" / "l_occlusion.png"))
    assert (occlusion[:, :13] == 255).all() and (occlusion[:, 13:] == 0).all()
    error = read_pfm(tmp_path / "out" / "l_lr_error.pfm")[0]
    assert torch.isinf(error[:, :13]).all() and error[:, 13:].abs().max() < 1e-4
    assert (tmp_path / "out" / "l_color.png").stat().st_size > 1000


def test_lr_check_with_a_submission_is_refused(capsys):
    import predict
    from utils import cli

    with pytest.raises(SystemExit):
        cli.run(predict.main, predict.get_args_parser(), predict.check_args,
                ["--dataset", "eth3d-test", "--submission", "o", "--lr-check", "--weights", "W.X"])
    assert "--lr-check writes files per pair" in capsys.readouterr().err

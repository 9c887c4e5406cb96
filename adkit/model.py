"""AnomalyOV: LLaVA-OneVision + the anomaly expert (paper §3; docs/architecture.md §3 "Into the LLM").

One pass, one direction:

    tiles ─ vision tower (once) ─┬─ final features ── projector ─────────────┐
                                 └─ levels + final ── expert ── projector ───┤
                                                     └─ score → hint phrase ─┴─ block per image
    input_ids (placeholders) ── embed ── scatter blocks ── LLM (inputs_embeds) → logits / loss

The base MLLM is an unmodified transformers ``LlavaOnevisionForConditionalGeneration``, so
llava-hf weights load unchanged; with ``use_expert = False`` this class computes exactly what
transformers computes.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from . import decoding, hf, precision, validate
from .assembly import assemble_block
from .calibration import Calibration
from .config import AnomalyOVConfig, get_preset
from .detection import Detection, score_images
from .expert import AnomalyExpert, ExpertOutput
from .images import load_image
from .processor import AnomalyOVProcessor
from .tokenizers import load_tokenizer
from .vision import CPU_TOWER_CHUNK, VisionFeatures, extract_features


@dataclass
class AnomalyOVOutput(ModelOutput):
    """A transformers ``ModelOutput``: ``out.loss``, ``out["loss"]`` and ``out[0]`` all work (Trainer)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # [batch, seq, vocab]
    anomaly_scores: torch.Tensor | None = None  # [images] expert scores (None without the expert)
    expert: ExpertOutput | None = None


RANDOM_PARTS = ("vision_tower", "language_model", "projector", "image_newline", "expert")


class AnomalyOV(nn.Module):
    def __init__(self, config: AnomalyOVConfig, mllm, expert: AnomalyExpert, tokenizer, label_rule: str = "official"):
        super().__init__()
        self.config = config
        self.mllm = mllm
        self.expert = expert
        self.tokenizer = tokenizer
        self.processor = AnomalyOVProcessor(config, tokenizer, label_rule=label_rule)
        self.untrained: tuple[str, ...] = ()  # parts still at random init (presets set this)
        self.calibration = Calibration.default()  # verdict thresholds per method (presets load theirs)
        self.tower_autocast: torch.dtype | None = None  # bf16: the tower's matmuls under autocast (set_dtype)
        self.reader = None  # adkit.notes.DefectReader: the expert notes' family classifier, when loaded

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, config: AnomalyOVConfig | str, tokenizer=None, seed: int | None = 0, **kw) -> "AnomalyOV":
        """Random weights at the preset's geometry (the ``tiny`` preset, shape studies)."""
        config = get_preset(config)
        tokenizer = tokenizer or load_tokenizer(config.tokenizer)
        if seed is not None:
            torch.manual_seed(seed)
        mllm = hf.build_mllm(config, tokenizer.convert_tokens_to_ids("<image>"))
        model = cls(config, mllm, AnomalyExpert(config.expert_config()), tokenizer, **kw).eval()
        model.untrained = RANDOM_PARTS  # loaders that copy weights in narrow this down
        return model

    @classmethod
    def from_preset(cls, name: str, *, model_path: str | None = None, expert_path: str | None = None,
                    trained: bool = True, dtype=None, **kw) -> "AnomalyOV":
        """``tiny`` (random, instant), ``small`` (real DINOv2 + SmolLM2 from PyPI packages, cached
        on first use, plus the shipped trained parts; ``trained=False``: the untrained base that
        training starts from) or a paper preset from local llava-hf + official expert files.

        ``dtype``: None / "float32" (the reference numbers), "bfloat16", or "auto" (bf16 where the
        CPU or GPU multiplies it natively, else fp32; :mod:`adkit.precision`); see :meth:`set_dtype`."""
        config = get_preset(name)
        compute = None if dtype is None else precision.pick_dtype(dtype)
        if config.name == "small":
            from .weights.presets import load_small_preset

            model = load_small_preset(cls, config, trained=trained, **kw)
        elif config.hub_id is None:
            model = cls.from_config(config, **kw)
        else:
            from .weights.presets import load_paper_preset

            model = load_paper_preset(cls, config, model_path=model_path, expert_path=expert_path,
                                      torch_dtype=kw.pop("torch_dtype", compute), **kw)  # read in its dtype
        return model if compute is None else model.set_dtype(compute)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: the LLM's and projector's weights; the tower's matmuls (fp32 weights)."""
        return hf.embed_tokens(self.mllm).weight.dtype

    def set_dtype(self, dtype) -> "AnomalyOV":
        """Compute in ``dtype`` (a torch dtype, "float32", "bfloat16" or "auto":
        :func:`adkit.precision.pick_dtype` for this model's device) and return ``self``.

        bf16: the projector and LLM weights are cast to bf16; the vision tower keeps fp32 weights
        and runs its matrix products under bf16 autocast (its residual stream, norms and softmax
        stay fp32, which halves the drift of the expert's score against a bf16-cast tower); the
        anomaly expert keeps fp32 weights and arithmetic (paper §3.3–3.5; ~1 M parameters whose maps
        feed thresholds); buffers the modules compute themselves (RoPE frequencies) stay fp32. On
        a CPU with avx512_bf16 this makes detect and the LLM's prefill faster
        (``benchmarks/bench_dtype.py``); scores stay within 1e-2 of fp32 and greedy answers start
        with the same tokens (``tests/test_precision.py``). Casting back to fp32 does not restore
        the bits the bf16 cast dropped: build the model again for exact fp32 numbers."""
        from .weights.io import cast_floating

        dtype = precision.pick_dtype(dtype, self.device)
        tower = hf.vision_tower(self.mllm)
        prefix = next(name for name, module in self.mllm.named_modules() if module is tower) + "."
        cast_floating(self.mllm, lambda name: torch.float32 if name.startswith(prefix) else dtype)
        cast_floating(self.expert, lambda name: torch.float32)
        self.tower_autocast = None if dtype == torch.float32 else dtype
        return self

    @property
    def use_expert(self) -> bool:
        return self.processor.expert

    @use_expert.setter
    def use_expert(self, value: bool) -> None:
        self.processor.expert = bool(value)

    @property
    def device(self) -> torch.device:
        return next(self.mllm.parameters()).device

    # ------------------------------------------------------------------ vision side

    def features(self, pixel_values: torch.Tensor, extra: tuple[int, ...] = ()) -> VisionFeatures:
        """One tower pass over [N, 3, S, S] tiles → final [N, P, D], the expert's levels and any
        ``extra`` hidden_states the training-free scorers read."""
        c = self.config
        with torch.autocast(self.device.type, dtype=self.tower_autocast or torch.bfloat16,
                            enabled=self.tower_autocast is not None):
            return extract_features(hf.vision_tower(self.mllm), pixel_values.to(self.device),
                                    c.feature_levels, c.final_level, c.has_cls_token, extra=tuple(extra),
                                    chunk=CPU_TOWER_CHUNK if self.device.type == "cpu" else None)

    def hint_level(self, scores: torch.Tensor) -> torch.Tensor:
        """0/1/2 = slightly/moderately/highly: score < 0.3, < 0.7, else (not differentiable)."""
        bounds = torch.tensor(self.config.hint_thresholds, dtype=scores.dtype, device=scores.device)
        return torch.bucketize(scores.detach(), bounds, right=True)

    def image_blocks(self, pixel_values, image_sizes, split_sizes=None, single_view=None):
        """Per image, its [T_i, H] block of LLM embeddings; plus the expert's output."""
        sizes = [tuple(s) for s in torch.as_tensor(image_sizes).tolist()]
        single = [False] * len(sizes) if single_view is None else [bool(s) for s in torch.as_tensor(single_view)]
        layouts = [self.processor.layout(h, w, single_view=sv) for (h, w), sv in zip(sizes, single)]
        if split_sizes is None:
            split_sizes = [lay.num_tiles for lay in layouts]
        split = [int(s) for s in torch.as_tensor(split_sizes).tolist()]
        if split != [lay.num_tiles for lay in layouts] or sum(split) != pixel_values.shape[0]:
            raise ValueError(f"tiles per image {split} do not match the image sizes {sizes} "
                             f"({[lay.num_tiles for lay in layouts]}) / {pixel_values.shape[0]} tiles given")
        with torch.autocast(self.device.type, enabled=False):  # tower and expert in their own dtype (fp32)
            feats = self.features(pixel_values)
            out = self.expert(feats.final, feats.levels, split) if self.use_expert else None
        proj = hf.projector(self.mllm)
        pdtype = next(proj.parameters()).dtype
        visual = proj(feats.final.to(pdtype)).split(split)  # I × [tiles, P, H]
        newline = hf.image_newline(self.mllm)
        if self.use_expert:
            selected = proj(out.selected_tokens.to(pdtype)).split(split)  # I × [tiles, k², H]
            global_tokens = proj(out.global_tokens.to(pdtype))  # [I, H]
            hint_ids = torch.tensor(self.processor.hint_ids, device=self.device)  # [3, T_h]
            hints = hf.embed_tokens(self.mllm)(hint_ids[self.hint_level(out.scores)])  # [I, T_h, H]
            blocks = [assemble_block(lay, v, newline, h, gt, s)
                      for lay, v, h, gt, s in zip(layouts, visual, hints, global_tokens, selected)]
        else:
            blocks = [assemble_block(lay, v, newline) for lay, v in zip(layouts, visual)]
        return blocks, out

    def embed(self, input_ids, pixel_values=None, image_sizes=None, split_sizes=None, single_view=None):
        """inputs_embeds [B, L, H] with every image block scattered over its placeholders."""
        ids = input_ids.to(self.device)
        placeholder = ids == self.processor.image_token_id
        embeds = hf.embed_tokens(self.mllm)(ids.masked_fill(placeholder, self.processor.pad_token_id))
        out = None
        if pixel_values is not None:
            blocks, out = self.image_blocks(pixel_values, image_sizes, split_sizes, single_view)
            feats = torch.cat(blocks).to(embeds.dtype)
            if feats.shape[0] != int(placeholder.sum()):
                raise ValueError(f"image blocks hold {feats.shape[0]} tokens but input_ids has "
                                 f"{int(placeholder.sum())} placeholders (use_expert={self.use_expert}: "
                                 "was the batch made by a processor with the same setting?)")
            embeds = embeds.masked_scatter(placeholder[..., None], feats)
        elif placeholder.any():
            raise ValueError("input_ids hold image placeholders but no pixel_values were given")
        return embeds, out

    # ------------------------------------------------------------------ LLM side

    def forward(self, input_ids, attention_mask=None, labels=None, pixel_values=None, image_sizes=None,
                split_sizes=None, single_view=None, labelled_logits_only: bool = False, **kwargs) -> AnomalyOVOutput:
        """Trainer-compatible: returns ``loss`` (when ``labels`` are given) and ``logits``.

        ``labelled_logits_only`` (training): the LM head runs only at positions whose next token is
        a target — the same loss as transformers' (sum of token cross-entropies over
        ``num_items_in_batch``, else their mean), without [B, L, vocab] logits; ``logits`` then
        holds those positions only, [B, K, vocab]."""
        embeds, out = self.embed(input_ids, pixel_values, image_sizes, split_sizes, single_view)
        mask = None if attention_mask is None else attention_mask.to(self.device)
        if labels is None or not labelled_logits_only:
            res = self.mllm(inputs_embeds=embeds, attention_mask=mask,
                            labels=None if labels is None else labels.to(self.device), **kwargs)
            loss, logits = res.loss, res.logits
        else:
            targets = labels.to(self.device)[:, 1:]  # [B, L-1]: position t predicts token t+1
            keep = (targets != -100).any(0).nonzero().squeeze(1)  # [K] positions with a target in some row
            items = kwargs.pop("num_items_in_batch", None)
            logits = self.mllm(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=keep, **kwargs).logits  # [B, K, V]
            kept = targets[:, keep]  # [B, K]
            loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), kept.flatten(), ignore_index=-100,
                                               reduction="sum")
            loss = loss / (items.to(loss.device) if torch.is_tensor(items) else items or (kept != -100).sum())
        return AnomalyOVOutput(loss=loss, logits=logits, anomaly_scores=None if out is None else out.scores, expert=out)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, pixel_values=None, image_sizes=None, split_sizes=None,
                 single_view=None, labels=None, fast: bool = True, **gen_kwargs) -> torch.Tensor:
        """New token ids [B, T]: greedy, with the preset's anti-loop defaults (``config.generation``,
        :data:`adkit.config.DECODING`) unless ``gen_kwargs`` say otherwise. Right-padded batches
        are left-aligned first.

        ``fast`` (default): greedy calls run :func:`adkit.decoding.greedy_generate` (static KV
        cache, same tokens); ``fast=False``, or any option it does not implement, runs
        transformers' ``generate``."""
        new = gen_kwargs.get("max_new_tokens")
        if new is not None:
            validate.count(new, "max_new_tokens")
        validate.fits_context(int(input_ids.shape[1]), new or 0, self.config.text.max_position_embeddings)
        embeds, _ = self.embed(input_ids, pixel_values, image_sizes, split_sizes, single_view)
        mask = torch.ones(input_ids.shape, dtype=torch.long) if attention_mask is None else attention_mask
        mask = mask.to(self.device)
        lengths = mask.sum(1)
        shift = mask.shape[1] - lengths  # move each row's padding to the left
        idx = (torch.arange(mask.shape[1], device=self.device)[None] - shift[:, None]) % mask.shape[1]  # [B, L]
        embeds = embeds.gather(1, idx[..., None].expand_as(embeds))
        mask = mask.gather(1, idx)
        for key, value in self.config.generation.items():  # the preset's decoding defaults (config.DECODING)
            gen_kwargs.setdefault(key, value)
        gen_kwargs.setdefault("do_sample", False)
        gen_kwargs.setdefault("eos_token_id", self.processor.im_end_id)
        gen_kwargs.setdefault("pad_token_id", self.processor.pad_token_id)
        if fast and decoding.supports(gen_kwargs):
            return decoding.greedy_generate(self.mllm, embeds, mask, **gen_kwargs)
        with warnings.catch_warnings():  # on embeddings the penalties see only the answer: what DECODING means
            warnings.filterwarnings("ignore", message=r"Passing `(repetition_penalty|no_repeat_ngram_size)` with")
            return self.mllm.generate(inputs_embeds=embeds, attention_mask=mask, **gen_kwargs)

    @torch.no_grad()
    def chat(self, image, question: str, history=None, max_new_tokens: int = 128, **gen_kwargs) -> str:
        """Answer ``question`` about ``image``; ``history`` is [(question, answer), ...] or messages.
        A question that does not fit the LLM's context with ``max_new_tokens`` is refused before any
        compute (:func:`adkit.validate.fits_context`)."""
        validate.count(max_new_tokens, "max_new_tokens")
        conv = []
        for turn in history or []:
            conv += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}] \
                if isinstance(turn, (tuple, list)) else [dict(turn)]  # copies: the caller's history is not touched
        conv.append({"role": "user", "content": question})
        first_user = next(t for t in conv if t["role"] in ("user", "human"))
        if "<image>" not in "".join(t.get("content", "") for t in conv):
            first_user["content"] = "<image>\n" + first_user["content"]
        conv = self.noted([conv], [image])[0]
        hf.quiet_length_warning(self.tokenizer)  # generate's context check says it, with the numbers
        batch = self.processor([conv], [[image]], add_generation_prompt=True)
        batch.pop("labels")
        ids = self.generate(**batch, max_new_tokens=max_new_tokens, **gen_kwargs)
        return self.tokenizer.decode(ids[0], skip_special_tokens=True).strip()

    # ------------------------------------------------------------------ expert notes

    @torch.no_grad()
    def write_notes(self, images) -> list[str]:
        """One "Expert note: …" line per image (:mod:`adkit.notes`, the "+ notes" kit variant): the
        expert's verdict (at the reader's threshold), the 3×3 cell of the largest in-image kNN distance
        and the defect reader's family, read from each image's single view (as stage 2 lays it out)."""
        if self.reader is None:
            raise RuntimeError("expert notes need a defect reader: load one (reader.safetensors, "
                               "`adkit train reader`) with load_trained_parts")
        images = [load_image(im) for im in images]
        scores = [d.score for d in self.detect(images)]
        states, self_map = self.note_inputs(images, self.reader.levels)
        return self.reader.notes(states, self_map, scores)

    @torch.no_grad()
    def note_inputs(self, images, levels) -> tuple[dict, torch.Tensor]:
        """What the defect reader reads, per image: {hidden_states index: [N, P, D]} of its single
        view at ``levels`` and the in-image kNN map [N, P] (``config.self_levels``)."""
        batch = self.processor.images(images, single_view=True)
        levels = tuple(sorted(set(levels) | set(self.config.self_levels)))
        feats = self.features(batch.pixel_values, extra=levels)
        self_map, _ = self.self_similarity(feats, [1] * len(images))
        return {i: feats.at(i).float() for i in levels}, self_map.float()

    def noted(self, conversations, images) -> list:
        """``conversations`` with each one's note after its ``<image>`` when ``config.notes`` is on
        (one image per conversation), else unchanged."""
        if not self.config.notes:
            return list(conversations)
        from .notes import with_note

        return [with_note(c, n) for c, n in zip(conversations, self.write_notes(images))]

    # ------------------------------------------------------------------ expert only

    @torch.no_grad()
    def detect(self, images, method: str = "expert", *, reference=None, image_size: int | None = None,
               threshold: float | None = None) -> list[Detection]:
        """Anomaly score and map per image from the tower alone (no LLM), by ``method``:

        ``"expert"``       the anomaly expert (paper §3.3–3.5), single image, inductive
        ``"self"``         in-image patch kNN on frozen features: training-free, single image, inductive
        ``"mutual"``       MuSc mutual scoring: training-free, *transductive* — each image is scored
                           against the others in ``images`` + ``reference`` (unlabeled; ≥ 2 in all)
        ``"expert+self"``  the mean of the expert's and self's calibrated scores and maps

        ``image_size`` (self, mutual): score one base view of that side instead of the anyres tiles.
        Thresholds come from ``model.calibration`` (chosen on validation data where shipped) unless
        ``threshold`` (in [0, 1]) is given. A NaN/inf score (corrupt weights) is an error, never a result.
        """
        from .zeroshot import METHODS

        if method not in METHODS:
            raise ValueError(f"unknown detection method {method!r}; choose one of {METHODS}")
        if threshold is not None:
            threshold = validate.probability(threshold, "threshold")
        if image_size is not None:
            validate.count(image_size, "image_size")
        given = images if isinstance(images, (list, tuple)) else [images]
        names = [str(im) if isinstance(im, (str, os.PathLike)) else f"image {i}" for i, im in enumerate(given)]
        images = [load_image(im) for im in given]
        results = score_images(self, images, method, reference, image_size)
        validate.finite_scores([d.score for d in results], names, f"{method} score")
        for d in results:
            d.threshold = d.threshold if threshold is None else threshold
        return results

    def self_similarity(self, feats: VisionFeatures, split) -> tuple[torch.Tensor, torch.Tensor]:
        """("self") per-patch distances [N, P] (mean over ``config.self_levels``) and per-image
        scores [B]: the mean of the top 1 % of an image's patch distances over all its tiles."""
        from .zeroshot.scores import self_similarity_map, top_mean

        levels = self.config.self_levels
        d = sum(self_similarity_map(feats.at(i), split) for i in levels) / len(levels)  # [N, P]
        scores = torch.stack([top_mean(part.reshape(1, -1))[0] for part in d.split(list(split))])  # [B]
        return d, scores

    @torch.no_grad()
    def base_view_features(self, images, levels, image_size: int | None = None, chunk: int = 16) -> dict:
        """{hidden_states index: [B, P, D] fp32} of each image's base view (at ``image_size`` if
        given), the tower run ``chunk`` images at a time so memory stays bounded."""
        states = {i: [] for i in levels}
        for start in range(0, len(images), chunk):
            feats = self.features(self.processor.base_views(images[start:start + chunk], image_size), extra=tuple(levels))
            for i in levels:
                states[i].append(feats.at(i).float())
        return {i: torch.cat(v) for i, v in states.items()}

    # ------------------------------------------------------------------ weights

    def save_pretrained(self, path, max_shard_size: int | str = "2GB"):
        """A self-contained folder: ``adkit_config.json``, safetensors weights (sharded above
        ``max_shard_size``), the tokenizer, ``generation_config.json``, ``calibration.json`` when
        calibrated and a ``README.md`` model card (``adkit/weights/io.py``)."""
        from .weights.io import save_anomalyov

        return save_anomalyov(self, path, max_shard_size=max_shard_size)

    @classmethod
    def from_pretrained(cls, path, dtype=None, device_map=None, **kw) -> "AnomalyOV":
        """A folder written by :meth:`save_pretrained` (single-file or sharded; older folders too).
        ``dtype``: a torch dtype, its name ("bfloat16") or "auto" (as saved); ``device_map``: one
        device ("cpu", "cuda", "auto", a torch.device). Mismatched weights raise ``CheckpointError``."""
        from .weights.io import load_anomalyov

        return load_anomalyov(cls, path, dtype=dtype, device_map=device_map, **kw)

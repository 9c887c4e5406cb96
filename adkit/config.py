"""Presets and geometry for Anomaly-OV (paper §3, docs/architecture.md §1–3).

Every number the rest of the kit needs is *derived* here from a handful of primary facts
(tile size, patch size, vision width, LLM width, feature levels). Nothing downstream types
729, 27 or 1152: it asks :class:`Geometry` or :class:`ExpertConfig`.

Presets
-------
``tiny``        random SigLIP + random Qwen2 at toy width; milliseconds on a CPU, for tests.
``small``       real DINOv2 ViT-S/14 + real SmolLM2-135M-Instruct from PyPI packages; the
                offline default for notebooks and the demo (tile 224, ≤ 2×2 crops).
``paper-0.5b``  SigLIP-so400m (26 layers) + Qwen2-0.5B, the paper's geometry.
``paper-7b``    SigLIP-so400m (26 layers) + Qwen2-7B.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import Dinov2Config, LlamaConfig, Qwen2Config, SiglipVisionConfig
from transformers.configuration_utils import PreTrainedConfig

from .geometry import PRESET_GEOMETRY, Geometry  # noqa: F401  (defined without transformers; Geometry re-exported)

SYSTEM_PROMPT = "You are a helpful assistant."
HINT_TEMPLATE = "with {level} suspicious features: "
HINT_LEVELS = ("slightly", "moderately", "highly")
HINT_THRESHOLDS = (0.3, 0.7)  # score < 0.3 → slightly, < 0.7 → moderately, else highly
#: Decoding defaults of ``generate`` / ``chat`` / the demo / the VisA-D&R runners: greedy, stop at
#: ``<|im_end|>``, and never loop. A small LLM tuned on a few conversations falls into loops under
#: plain greedy decoding ("It is a feature that is not a feature of the object. It is a feature
#: that is not a feature…"); ``no_repeat_ngram_size`` forbids any repeated 4-token sequence and a
#: mild repetition penalty keeps it from circling around that ban. Both look at the answer only (the
#: LLM is fed embeddings, so the question's words are not penalised). Override per call
#: (``chat(..., no_repeat_ngram_size=0, repetition_penalty=1.0)`` is plain greedy) or per preset
#: (``config.replace(generation={})``).
DECODING = {"repetition_penalty": 1.1, "no_repeat_ngram_size": 4}


@dataclass(frozen=True)
class ExpertConfig:
    """Sizes of the anomaly expert (docs/architecture.md §3). Paper: D=1152, g=27, E=512 → 7,086,811 params."""

    vision_dim: int = 1152  # D: width of the vision tower's patch tokens
    grid: int = 27  # g: patch tokens per side of one crop
    embed_dim: int = 512  # E: matching space of prompts and patch embeddings
    class_dim: int = 512  # width of the look-back class vector c
    attention_dim: int = 512  # width of the selector's query/key projections
    score_hidden: int = 512  # hidden width of the score MLP
    num_levels: int = 4  # vision levels matched against the prompts
    pool_size: int = 2  # AdaptiveAvgPool2d(pool_size): pool_size² selected tokens per crop
    logit_scale: float = 100.0  # temperature of the prompt/patch matching
    # optional epsilon in the map-weighted divisions; 0 = official semantics, where a pooling
    # cell whose map underflows to exactly 0 everywhere gives 0/0 = NaN for that image
    eps: float = 0.0
    projection_dtype: str = "float32"  # "bfloat16" runs the five token projections in bf16
    # adkit's "Anomaly-OV + prior" variant (adkit/expert/prior.py): index into the levels whose
    # in-image self-similarity feeds the map and the score; None = the official expert
    prior_level: int | None = None
    prior_radius: int = 1  # neighbourhood excluded around each patch (Chebyshev radius)
    prior_fraction: float = 0.01  # image statistic: mean of this top fraction of patch distances
    prior_relative: bool = False  # prior variant: the score MLP reads r_b minus the image's mean feature

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def tokens_per_crop(self) -> int:
        return self.pool_size * self.pool_size


@dataclass
class AnomalyOVConfig:
    """Everything needed to build an :class:`adkit.AnomalyOV` (without weights).

    Not frozen: ``transformers.Trainer`` sets flags such as ``use_cache`` on ``model.config``.
    """

    name: str
    vision: PreTrainedConfig  # a transformers vision config (SigLIP, DINOv2, ...)
    text: PreTrainedConfig  # a transformers decoder config (Qwen2, Llama, ...)
    geometry: Geometry
    feature_levels: tuple[int, ...]  # indices into the tower's hidden_states for the expert
    final_level: int = -1  # hidden_states index of the feature LLaVA projects (paper: -1)
    has_cls_token: bool = False  # DINOv2-style towers: drop token 0 before forming the grid
    expert_dims: dict = field(default_factory=dict)  # overrides for ExpertConfig (E, ...)
    tokenizer: str = "qwen2"  # which offline tokenizer builder to use
    system_prompt: str = SYSTEM_PROMPT
    hint_template: str = HINT_TEMPLATE
    hint_levels: tuple[str, ...] = HINT_LEVELS
    hint_thresholds: tuple[float, ...] = HINT_THRESHOLDS
    hub_id: str | None = None  # llava-hf weights for the paper presets
    expert_file: str | None = None  # official expert checkpoint name for the paper presets
    # training-free scorers (adkit.zeroshot): hidden_states indices they read
    self_levels: tuple[int, ...] = ()  # in-image patch kNN ("self"); () = the middle feature level
    mutual_levels: tuple[int, ...] = ()  # MuSc mutual scoring ("mutual"); () = the feature levels
    # "Anomaly-OV + prior": the expert also reads the self-similarity of self_levels[0], which must
    # be one of feature_levels (adkit/expert/prior.py); False = the official expert
    expert_prior: bool = False
    generation: dict = field(default_factory=lambda: dict(DECODING))  # generate()'s defaults (DECODING)
    # conversations (chat, stage 2): every image as one padded base view, no anyres crops — LLaVA-OV's
    # multi-image layout; False = the paper's anyres. detect() always tiles (the expert's calibration)
    single_view: bool = False
    # "Anomaly-OV + notes" (adkit/notes.py): a line of text from the expert after each image; needs
    # model.reader. Set by a stage-2 parts file that records it, else by the preset (small: SMALL_NOTES)
    notes: bool = False

    def __post_init__(self):
        if not self.self_levels:
            self.self_levels = (self.feature_levels[len(self.feature_levels) // 2],)
        if not self.mutual_levels:
            self.mutual_levels = tuple(self.feature_levels)

    def expert_config(self) -> ExpertConfig:
        """The expert's sizes, derived from the tower (D, g) plus this preset's overrides."""
        prior = {}
        if self.expert_prior:
            if self.self_levels[0] not in self.feature_levels:
                raise ValueError(f"preset {self.name!r}: the expert prior reads hidden_states[{self.self_levels[0]}], "
                                 f"which is not one of the expert's feature levels {self.feature_levels}")
            prior["prior_level"] = self.feature_levels.index(self.self_levels[0])
        return ExpertConfig(
            vision_dim=self.vision.hidden_size,
            grid=self.geometry.grid,
            num_levels=len(self.feature_levels),
            pool_size=self.geometry.pool_size,
            **prior,
            **self.expert_dims,
        )

    def hint_phrases(self) -> list[str]:
        return [self.hint_template.format(level=lvl) for lvl in self.hint_levels]

    def replace(self, **changes) -> "AnomalyOVConfig":
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- presets


def _siglip_so400m_26() -> SiglipVisionConfig:
    """SigLIP-so400m-patch14-384 with its last encoder layer removed (docs/architecture.md §2.1)."""
    return SiglipVisionConfig(
        hidden_size=1152, image_size=384, intermediate_size=4304, num_attention_heads=16,
        num_hidden_layers=26, patch_size=14, vision_use_head=False, layer_norm_eps=1e-6,
    )


def _qwen2(size: str) -> Qwen2Config:
    if size == "0.5b":
        return Qwen2Config(
            hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
            max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
            bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
        )
    if size == "7b":
        return Qwen2Config(
            hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
            num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
            max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
            bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
        )
    raise ValueError(size)


def _tiny() -> AnomalyOVConfig:
    # Tile 56 px, patch 8 → a 7×7 grid: odd like the paper's 27, so AdaptiveAvgPool2d(2)
    # overlaps on the middle row/column exactly as it does at paper geometry.
    vision = SiglipVisionConfig(
        hidden_size=32, image_size=56, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=5, patch_size=8, vision_use_head=False,
    )
    text = Qwen2Config(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
        max_position_embeddings=4096, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
    )
    return AnomalyOVConfig(
        name="tiny", vision=vision, text=text, geometry=PRESET_GEOMETRY["tiny"], feature_levels=(1, 2, 3, 4),
        expert_dims=dict(embed_dim=16, class_dim=16, attention_dim=16, score_hidden=16),
    )


def _paper(size: str) -> AnomalyOVConfig:
    vision = _siglip_so400m_26()
    return AnomalyOVConfig(
        name=f"paper-{size}", vision=vision, text=_qwen2(size),
        geometry=PRESET_GEOMETRY[f"paper-{size}"],  # tile = vision.image_size, patch = vision.patch_size
        # hidden_states[k] is the output of encoder layer k (index 0 = embeddings); the
        # official code's `i-1 in [6,12,18,24]` selects these four (docs/architecture.md §2.1).
        feature_levels=(7, 13, 19, 25),
        hub_id=f"llava-hf/llava-onevision-qwen2-{size}-ov-hf",
        expert_file=f"pretrained_expert_{size.replace('.', '')}.pth",
    )


def _small() -> AnomalyOVConfig:
    """DINOv2 ViT-S/14 + SmolLM2-135M-Instruct, sized for a laptop CPU (docs/architecture.md §1, §6).

    Tile 224 px → a 16×16 grid (256 tokens, CLS dropped), and a 448 px long-side cap so an
    image is at most 2×2 crops: ≤ 256 + 32·33 = 1312 visual tokens instead of the paper's
    ≤ 7371, which keeps a SmolLM2 prefill to a couple of seconds on two cores. Levels: the
    paper takes layers 7/13/19/25 of 26 (≈ 0.27, 0.5, 0.73, 0.96 of the depth) and projects
    layer 26; the same fractions of DINOv2's 12 layers are 3, 6, 9, 11, with layer 12 projected.
    The sizes below document the converted assets; the loader replaces them with the loaded
    models' own configs.
    """
    vision = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                          image_size=224, patch_size=14, layerscale_value=1.0)
    text = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                       max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5)
    return AnomalyOVConfig(
        name="small", vision=vision, text=text,
        geometry=PRESET_GEOMETRY["small"],
        feature_levels=(3, 6, 9, 11), has_cls_token=True, tokenizer="smollm2",
        # training-free levels chosen on the kit's val + held-out synthetic categories, never ELPV
        # (MODEL_CARD.md); the shipped expert is the "+ prior" variant on hidden_states[9]
        self_levels=(9,), expert_prior=True,
        # the paper's E = 512 for D = 1152; the same ratio for D = 384 is ~170 → 192
        expert_dims=dict(embed_dim=192, class_dim=192, attention_dim=192, score_hidden=192),
    )


PRESETS = {
    "tiny": _tiny,
    "small": _small,
    "paper-0.5b": lambda: _paper("0.5b"),
    "paper-7b": lambda: _paper("7b"),
}


def get_preset(name: str) -> AnomalyOVConfig:
    """Return the :class:`AnomalyOVConfig` of a preset by name."""
    if isinstance(name, AnomalyOVConfig):
        return name
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None

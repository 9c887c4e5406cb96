"""Images and chats → model tensors (paper §3, §4; docs/architecture.md §2.3, §2.5).

* Pixels: anyres tiling of each image into a base view plus S×S crops (single view, padded to
  square with the mean colour, in multi-image samples), normalised with mean/std 0.5.
* Images above the pixel budget arrive downscaled (:mod:`adkit.pixel_budget`); the long-side
  cap and the crop grid are computed from the size they had before it (``source_size``), so
  the budget never changes a grid or a token count.
* Text: ChatML rendering with the paper's system prompt, ``<image>`` moved to the start of its
  turn, each ``<image>`` expanded to exactly as many placeholder tokens as
  :func:`adkit.anyres.image_layout` says the model will pack, and training labels under a named
  masking rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .anyres import ImageLayout, capped_size, crop_grid, fit_size, image_layout
from .config import AnomalyOVConfig
from .images import load_image, source_size

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}
LABEL_RULES = ("official", "assistant_only")


def normalise(img: Image.Image, mean, std) -> torch.Tensor:
    """uint8 RGB → [3, H, W] float, (x/255 − mean)/std."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)  # [H, W, 3]
    arr = (arr - torch.tensor(mean)) / torch.tensor(std)
    return arr.permute(2, 0, 1).contiguous()  # [H, W, 3] → [3, H, W]


def base_view(img: Image.Image, size: int) -> Image.Image:
    """The base view: the whole (capped) image resized to size × size, aspect ignored."""
    return img.resize((size, size), Image.BICUBIC)


def _to_capped(img: Image.Image, h: int, w: int) -> Image.Image:
    """Step 1 of anyres: ``img`` resized to its capped size (h, w) — unless that would upscale an
    image the pixel budget already made smaller (the geometry still follows (h, w))."""
    if (h, w) == (img.height, img.width) or h * w > img.height * img.width:
        return img
    return img.resize((w, h), Image.BICUBIC)


def anyres_tiles(image, config: AnomalyOVConfig, single_view: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image → ([1 + rows·cols, 3, S, S] tiles, capped (h, w)). Tile 0 is the base view."""
    g = config.geometry
    s = g.tile_size
    img = load_image(image)
    h, w = capped_size(*source_size(img), g)  # the size before the pixel budget decides the geometry
    img = _to_capped(img, h, w)
    if single_view:  # multi-image samples: pad to square with the mean colour, one tile
        side = max(img.size)
        fill = tuple(int(m * 255) for m in g.image_mean)
        square = Image.new("RGB", (side, side), fill)
        square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        return normalise(square.resize((s, s), Image.BICUBIC), g.image_mean, g.image_std)[None], (h, w)
    rows, cols = crop_grid(h, w, g)
    nh, nw = fit_size(h, w, (rows * s, cols * s))
    canvas = Image.new("RGB", (cols * s, rows * s), (0, 0, 0))
    canvas.paste(img.resize((nw, nh), Image.BICUBIC), ((cols * s - nw) // 2, (rows * s - nh) // 2))
    tiles = [base_view(img, s)]
    tiles += [canvas.crop((c * s, r * s, (c + 1) * s, (r + 1) * s)) for r in range(rows) for c in range(cols)]
    return torch.stack([normalise(t, g.image_mean, g.image_std) for t in tiles]), (h, w)


@dataclass
class ImageBatch:
    pixel_values: torch.Tensor  # [N, 3, S, S] all tiles of all images
    image_sizes: torch.Tensor  # [I, 2] capped (h, w) per image
    split_sizes: torch.Tensor  # [I] tiles per image
    single_view: torch.Tensor  # [I] bool


class AnomalyOVProcessor:
    """Turns conversations with images into ``input_ids``/``labels``/pixel tensors."""

    def __init__(self, config: AnomalyOVConfig, tokenizer, *, expert: bool = True, label_rule: str = "official"):
        if label_rule not in LABEL_RULES:
            raise ValueError(f"label_rule must be one of {LABEL_RULES}, got {label_rule!r}")
        self.config, self.tokenizer, self.expert, self.label_rule = config, tokenizer, expert, label_rule
        ids = tokenizer.convert_tokens_to_ids
        self.image_token_id = ids(IMAGE_TOKEN)
        self.im_start_id, self.im_end_id = ids("<|im_start|>"), ids("<|im_end|>")
        self.pad_token_id = tokenizer.pad_token_id
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {IMAGE_TOKEN} token")
        newline = tokenizer.encode("\n", add_special_tokens=False)
        if len(newline) != 1:
            raise ValueError("tokenizer does not encode '\\n' as a single token")
        self.newline_id = newline[0]
        self.hint_ids = [tokenizer.encode(p, add_special_tokens=False) for p in config.hint_phrases()]
        if len({len(h) for h in self.hint_ids}) != 1:
            lens = {p: len(h) for p, h in zip(config.hint_phrases(), self.hint_ids)}
            raise ValueError(f"hint phrases must tokenize to equal lengths so placeholders can be counted: {lens}")

    # ------------------------------------------------------------------ images

    @property
    def hint_tokens(self) -> int:
        return len(self.hint_ids[0])

    def layout(self, height: int, width: int, single_view: bool = False, expert: bool | None = None) -> ImageLayout:
        expert = self.expert if expert is None else expert
        return image_layout(height, width, self.config.geometry, single_view=single_view,
                            expert=expert, hint_tokens=self.hint_tokens if expert else 0)

    def images(self, images: list, single_view: list[bool] | bool = False) -> ImageBatch:
        """Tile a flat list of images (in placeholder order)."""
        flags = [single_view] * len(images) if isinstance(single_view, bool) else list(single_view)
        tiles, sizes = zip(*(anyres_tiles(im, self.config, sv) for im, sv in zip(images, flags)))
        return ImageBatch(
            pixel_values=torch.cat(tiles),
            image_sizes=torch.tensor(sizes, dtype=torch.long),
            split_sizes=torch.tensor([t.shape[0] for t in tiles], dtype=torch.long),
            single_view=torch.tensor(flags, dtype=torch.bool),
        )

    def base_views(self, images: list, size: int | None = None) -> torch.Tensor:
        """[B, 3, size, size]: each image's base view only (after the long-side cap), at the tile
        size or at ``size`` (a larger view the tower reads with interpolated positions)."""
        g = self.config.geometry
        size = size or g.tile_size
        if size < g.patch_size or size % g.patch_size:
            raise ValueError(f"base-view size must be a positive multiple of the patch size {g.patch_size}, got {size}")
        views = []
        for image in images:
            img = load_image(image)
            img = _to_capped(img, *capped_size(*source_size(img), g))
            views.append(normalise(base_view(img, size), g.image_mean, g.image_std))
        return torch.stack(views)

    # ------------------------------------------------------------------ text

    def messages(self, conversation: list[dict]) -> list[tuple[str, str]]:
        """(role, content) pairs with the system prompt first and ``<image>`` at turn start."""
        out = []
        for turn in conversation:
            role = ROLES.get(turn.get("role", turn.get("from")))
            content = turn.get("content", turn.get("value"))
            if role is None or not isinstance(content, str):
                raise ValueError(f"bad conversation turn {turn!r}: need role/from and content/value strings")
            if content.count(IMAGE_TOKEN) == 1:
                content = IMAGE_TOKEN + "\n" + content.replace(IMAGE_TOKEN, "").strip()
            out.append((role, content))
        if not out or out[0][0] != "system":
            out.insert(0, ("system", self.config.system_prompt))
        return out

    def render(self, conversation: list[dict], add_generation_prompt: bool = False) -> str:
        """The prompt text (ChatML), before placeholder expansion."""
        text = "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in self.messages(conversation))
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def encode(self, conversation: list[dict], add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
        """(ids, labels) of one conversation, ``<image>`` still one token each."""
        ids, labels = [], []
        for role, content in self.messages(conversation):
            piece = self.tokenizer.encode(f"<|im_start|>{role}\n{content}<|im_end|>\n", add_special_tokens=False)
            ids += piece
            if role != "assistant":
                labels += [IGNORE_INDEX] * len(piece)
            elif self.label_rule == "official":
                labels += piece  # header and footer supervised too
            else:  # assistant_only: the answer and its <|im_end|>, not the header or trailing "\n"
                head = len(self.tokenizer.encode(f"<|im_start|>{role}\n", add_special_tokens=False))
                labels += [IGNORE_INDEX] * head + piece[head:-1] + [IGNORE_INDEX]
        if self.label_rule == "official":  # docs/architecture.md §2.5: these ids are learned wherever they occur
            keep = {self.newline_id, self.im_start_id, self.im_end_id}
            labels = [t if t in keep else lab for t, lab in zip(ids, labels)]
        if add_generation_prompt:
            gen = self.tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
            ids, labels = ids + gen, labels + [IGNORE_INDEX] * len(gen)
        labels = [IGNORE_INDEX if t == self.image_token_id else lab for t, lab in zip(ids, labels)]
        return ids, labels

    def expand(self, ids: list[int], labels: list[int], layouts: list[ImageLayout]) -> tuple[list[int], list[int]]:
        """Replace the k-th ``<image>`` with ``layouts[k].total`` placeholders (labels −100)."""
        n = sum(t == self.image_token_id for t in ids)
        if n != len(layouts):
            raise ValueError(f"conversation has {n} {IMAGE_TOKEN} tokens but {len(layouts)} images were given")
        out_ids, out_labels, k = [], [], 0
        for t, lab in zip(ids, labels):
            if t == self.image_token_id:
                out_ids += [t] * layouts[k].total
                out_labels += [IGNORE_INDEX] * layouts[k].total
                k += 1
            else:
                out_ids.append(t)
                out_labels.append(lab)
        return out_ids, out_labels

    # ------------------------------------------------------------------ batch

    def __call__(self, conversations: list[list[dict]], images: list[list] | None = None,
                 add_generation_prompt: bool = False) -> dict[str, torch.Tensor]:
        """A right-padded batch: input_ids, attention_mask, labels (+ image tensors)."""
        images = images or [[] for _ in conversations]
        if len(images) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(images)} image lists")
        encoded = [self.encode(conv, add_generation_prompt) for conv in conversations]
        flat = [im for imgs in images for im in imgs]
        one = self.config.single_view
        flags = [one or len(imgs) > 1 for imgs in images for _ in imgs]  # multi-image samples: single view
        img = self.images(flat, flags) if flat else None  # each image decoded and tiled once
        sizes = [] if img is None else img.image_sizes.tolist()
        rows, k = [], 0
        for (ids, labels), imgs in zip(encoded, images):
            layouts = [self.layout(h, w, single_view=one or len(imgs) > 1) for h, w in sizes[k:k + len(imgs)]]
            rows.append(self.expand(ids, labels, layouts))
            k += len(imgs)
        width = max(len(r[0]) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, lab) in enumerate(rows):
            input_ids[i, : len(ids)], labels[i, : len(ids)], mask[i, : len(ids)] = (
                torch.tensor(ids), torch.tensor(lab), 1)
        batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
        if img is not None:
            batch.update(pixel_values=img.pixel_values, image_sizes=img.image_sizes,
                         split_sizes=img.split_sizes, single_view=img.single_view)
        return batch

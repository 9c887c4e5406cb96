"""Chat rendering, placeholder expansion and the label-masking rules (docs/architecture.md §2.5)."""

from __future__ import annotations

import pytest
import torch

from adkit import AnomalyOVProcessor, ImageLoadError, get_preset
from adkit.tokenizers import qwen2_tokenizer

CONV = [{"from": "human", "value": "What is this?\n<image>"}, {"from": "gpt", "value": "A capsule."},
        {"from": "human", "value": "Any defect?"}, {"from": "gpt", "value": "Yes."}]


@pytest.fixture(scope="module")
def tok():
    return qwen2_tokenizer()


def supervised(tok, labels):
    """Labels as text, each masked (−100) token shown as '_'."""
    return "".join(tok.decode([lab]) if lab != -100 else "_" for lab in labels)


def test_render_moves_image_and_adds_system_prompt(tok):
    p = AnomalyOVProcessor(get_preset("tiny"), tok)
    assert p.render(CONV[:1], add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n<|im_start|>assistant\n")
    msgs = [{"role": r, "content": c} for r, c in p.messages(CONV)]
    assert p.render(CONV) == tok.apply_chat_template(msgs, tokenize=False)


def test_official_label_rule_golden(tok):
    """Assistant turns fully supervised with header and footer; \\n, <|im_start|>, <|im_end|> everywhere."""
    p = AnomalyOVProcessor(get_preset("tiny"), tok, label_rule="official")
    ids, labels = p.encode(CONV)
    assert supervised(tok, labels) == (
        "<|im_start|>_\n______<|im_end|>\n"
        "<|im_start|>_\n_\n____<|im_end|>\n"
        "<|im_start|>assistant\nA capsule.<|im_end|>\n"
        "<|im_start|>_\n___<|im_end|>\n"
        "<|im_start|>assistant\nYes.<|im_end|>\n")
    assert tok.decode(ids) == p.render(CONV)


def test_assistant_only_label_rule_golden(tok):
    p = AnomalyOVProcessor(get_preset("tiny"), tok, label_rule="assistant_only")
    _, labels = p.encode(CONV)
    assert supervised(tok, labels) == "_" * 25 + "A capsule.<|im_end|>" + "_" * 12 + "Yes.<|im_end|>_"


def test_unknown_label_rule_rejected(tok):
    with pytest.raises(ValueError, match="label_rule"):
        AnomalyOVProcessor(get_preset("tiny"), tok, label_rule="everything")


def test_batch_is_right_padded_and_expanded(tok, photo):
    p = AnomalyOVProcessor(get_preset("tiny"), tok)
    batch = p([CONV, CONV[:2]], [[photo], [photo.resize((30, 90))]])
    lengths = batch["attention_mask"].sum(1)
    assert lengths[0] > lengths[1]
    row = batch["input_ids"][1]
    assert bool((row[lengths[1]:] == tok.pad_token_id).all())
    assert bool((batch["labels"][1, lengths[1]:] == -100).all())
    for i, img in enumerate([photo, photo.resize((30, 90))]):
        n = int((batch["input_ids"][i] == p.image_token_id).sum())
        assert n == p.layout(img.height, img.width).total
    assert batch["split_sizes"].sum() == batch["pixel_values"].shape[0]
    assert batch["image_sizes"].tolist() == [[106, 150], [90, 30]]  # 120×170 capped to a long side of 150


def test_image_count_mismatch_is_reported(tok, photo):
    p = AnomalyOVProcessor(get_preset("tiny"), tok)
    with pytest.raises(ValueError, match="1 <image> tokens but 2 images"):
        p([CONV], [[photo, photo]])
    with pytest.raises(ValueError, match="bad conversation turn"):
        p([[{"speaker": "me", "text": "hi"}]])


def test_hint_ids_come_from_the_tokenizer(tok):
    p = AnomalyOVProcessor(get_preset("paper-0.5b"), tok)
    # the official ids (docs/architecture.md §3), produced here by the real Qwen2 tokenizer, not typed into the kit
    assert p.hint_ids == [[4197, 10078, 31327, 4419, 25, 220], [4197, 69251, 31327, 4419, 25, 220],
                          [4197, 7548, 31327, 4419, 25, 220]]


def test_unequal_hint_lengths_are_rejected(tok):
    cfg = get_preset("tiny").replace(hint_levels=("slightly", "extraordinarily-unusually", "highly"))
    with pytest.raises(ValueError, match="equal lengths"):
        AnomalyOVProcessor(cfg, tok)


@pytest.mark.parametrize("payload, message", [
    (b"", "empty"), (b"hello, not an image", "not a recognised image format"),
])
def test_bad_image_bytes_give_clear_errors(tok, tmp_path, payload, message):
    path = tmp_path / "bad.png"
    path.write_bytes(payload)
    p = AnomalyOVProcessor(get_preset("tiny"), tok)
    with pytest.raises(ImageLoadError, match=message):
        p([CONV[:1]], [[path]])


def test_truncated_image_gives_clear_error(tok, tmp_path, photo):
    path = tmp_path / "cut.jpg"
    photo.save(path, quality=90)
    path.write_bytes(path.read_bytes()[:300])
    p = AnomalyOVProcessor(get_preset("tiny"), tok)
    with pytest.raises(ImageLoadError, match="cut.jpg"):
        p.images([path])


def test_single_view_pads_to_square_with_mean_colour(tok):
    from PIL import Image

    p = AnomalyOVProcessor(get_preset("tiny"), tok)
    batch = p.images([Image.new("RGB", (100, 50), (255, 255, 255))], single_view=True)
    tile = batch.pixel_values[0]
    assert tile.shape == (3, 56, 56)
    # top band is padding (mean colour 127 → (127/255-0.5)/0.5 ≈ 0), middle is white (1.0)
    assert torch.allclose(tile[:, 0, :], torch.tensor(127 / 255 * 2 - 1), atol=1e-6)
    assert torch.allclose(tile[:, 28, 5:50], torch.tensor(1.0), atol=1e-6)

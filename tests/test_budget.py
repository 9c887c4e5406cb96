"""``adkit budget`` and :func:`adkit.token_budget`: the light path (arithmetic over the tables in
adkit/geometry.py, no torch) against the full one (each preset's config, processor and real
offline tokenizer), for every preset over many image sizes; ``--json`` against the text."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import adkit
from adkit import cli
from adkit.geometry import PRESET_GEOMETRY, PRESET_HINT_TOKENS

PRESETS = list(cli.PRESETS)


def _sizes() -> list[tuple[int, int]]:
    """Edges around every preset's tile, cap and grid boundaries, extreme aspects, and random sizes."""
    edges = {1, 2, 13, 14, 15}
    for g in PRESET_GEOMETRY.values():
        for base in (g.tile_size, g.max_long_side or 1024, 2 * g.tile_size, 3 * g.tile_size, 6 * g.tile_size):
            edges |= {base - 1, base, base + 1}
    edges = sorted(edges)
    rng = np.random.default_rng(0)
    rand = [tuple(map(int, hw)) for hw in rng.integers(1, 4096, (150, 2))]
    aspect = [(1, 4000), (4000, 1), (7, 3000), (3000, 7), (100, 5000)]
    return [(h, w) for h in edges for w in edges] + rand + aspect


SIZES = _sizes()


def _fields(b) -> tuple:
    return b.visual, b.hint, b.expert, b.total, b.layout


@pytest.fixture(scope="module")
def configs():
    return {p: adkit.get_preset(p) for p in PRESETS}


def test_tables_cover_every_preset_and_mirror_the_configs(configs):
    from adkit.config import PRESETS as CONFIG_PRESETS
    from adkit.processor import AnomalyOVProcessor
    from adkit.tokenizers import load_tokenizer

    assert set(PRESET_GEOMETRY) == set(PRESET_HINT_TOKENS) == set(CONFIG_PRESETS) == set(PRESETS)
    for p, config in configs.items():
        assert config.geometry is PRESET_GEOMETRY[p], p  # the presets take their geometry from one home
        g = config.geometry  # ... and it fits the tower it feeds
        assert (g.tile_size, g.patch_size) == (config.vision.image_size, config.vision.patch_size), p
        tok = load_tokenizer(config.tokenizer)
        lengths = {len(tok.encode(h, add_special_tokens=False)) for h in config.hint_phrases()}
        assert lengths == {PRESET_HINT_TOKENS[p]}, (p, lengths)
        assert AnomalyOVProcessor(config, tok).hint_tokens == PRESET_HINT_TOKENS[p]
    assert adkit.Geometry is adkit.config.Geometry  # one class, re-exported by adkit.config


@pytest.mark.parametrize("preset", PRESETS)
def test_light_budget_equals_processor_with_real_tokenizer(preset, configs):
    """token_budget(preset name) is pure arithmetic; token_budget(config) builds the processor with
    the preset's tokenizer. They must agree everywhere, base and single view."""
    config = configs[preset]
    for single_view in (False, True):
        for h, w in SIZES:
            light = adkit.token_budget(h, w, preset, single_view=single_view)
            full = adkit.token_budget(h, w, config, single_view=single_view)
            assert _fields(light) == _fields(full), (preset, h, w, single_view)


def test_budget_is_what_the_tiny_model_packs(tiny):
    """The tiny model's own processor (the one its forward uses) counts the same placeholders."""
    for h, w in SIZES[::7]:
        assert adkit.token_budget(h, w, "tiny").layout == tiny.processor.layout(h, w), (h, w)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("single", [False, True])
def test_budget_json_equals_text(preset, single, capsys):
    flags = ["--single-view"] if single else []
    for h, w in ((768, 1024), (33, 2000), (500, 500)):
        assert cli.main(["budget", str(h), str(w), "--preset", preset, *flags]) == 0
        text = dict(line.split() for line in capsys.readouterr().out.splitlines())
        assert cli.main(["budget", str(h), str(w), "--preset", preset, "--json", *flags]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["single_view"] is single
        for key in ("visual", "hint", "expert", "total"):
            assert doc[key] == int(text[key])
        assert "x".join(map(str, doc["grid"])) == text["grid"]
        full = adkit.token_budget(h, w, adkit.get_preset(preset), single_view=single)
        assert (doc["visual"], doc["hint"], doc["expert"], doc["total"]) == (full.visual, full.hint, full.expert,
                                                                             full.total)
        assert doc["grid"] == list(full.layout.grid_shape) and doc["image_size"] == list(full.layout.image_size)
        assert (doc["preset"], doc["height"], doc["width"]) == (preset, h, w)


@pytest.mark.parametrize("argv, message", [
    (["budget", "0", "10"], "image size must be positive"),
    (["budget", "10", "-3", "--json"], "image size must be positive"),
    (["budget", "10", "10", "--preset", "huge"], "invalid choice"),
])
def test_budget_bad_input_is_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("adkit: error:") and captured.err.count("\n") == 1
    assert message in captured.err


def test_budget_loads_no_torch():
    """The command and adkit.token_budget(preset name) import neither torch nor transformers nor a
    tokenizer library, in a fresh interpreter; the numbers still match the full path."""
    code = ("import sys, json, adkit, adkit.cli\n"
            "rc = adkit.cli.main(['budget', '768', '1024', '--preset', 'small', '--json'])\n"
            "b = adkit.token_budget(300, 4000, 'paper-7b')\n"
            "heavy = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]\n"
            "print(json.dumps({'rc': rc, 'heavy': heavy, 'total': b.total}), file=sys.stderr)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(run.stderr.strip().splitlines()[-1])
    assert report["rc"] == 0 and report["heavy"] == [], report
    assert json.loads(run.stdout)["total"] == adkit.token_budget(768, 1024, adkit.get_preset("small")).total
    assert report["total"] == adkit.token_budget(300, 4000, adkit.get_preset("paper-7b")).total

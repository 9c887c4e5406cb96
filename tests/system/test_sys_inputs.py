"""Reliability suite, input groups: image loading, checkpoints and parts files, the CLI.

* **loaders: images** — every file of :mod:`bad_files` through :func:`adkit.images.load_image`
  (valid ones come back RGB, the rest raise ``ImageLoadError`` starting with the file's path),
  plus what is not a regular file: a FIFO (which would block), ``/dev/zero`` (which never
  ends), a folder, a missing path, a symlink loop.
* **checkpoints** — damaged safetensors parts files, NaN/inf weights, wrong keys and shapes,
  malicious and malformed ``.pth`` pickles (no code may run: a marker file must not appear),
  damaged saved folders, bad LoRA metadata: each a ``CheckpointError`` naming the file and the
  reason, the model untouched.
* **CLI** — ``adkit detect`` / ``chat`` with meaningless arguments and unreadable inputs: exit
  code 2, one ``adkit: error:`` line naming the argument or file, nothing written; odd but
  valid inputs (1-pixel images, extreme strips with ``--maps``) answered with bounded files.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from adkit.images import ImageLoadError, load_image
from adkit.weights.official import CheckpointError, read_checkpoint, to_official_state_dict
from adkit.weights.parts import load_trained_parts, save_trained_parts
from bad_files import image_files
from ledger import LEDGER
from test_validation import broken_copies

pytestmark = pytest.mark.usefixtures("one_thread")


def _raises(error, *words):
    """The attack must raise ``error`` with every one of ``words`` in its message."""
    def check(attack):
        def run():
            try:
                attack()
            except error as e:
                message = str(e)
                missing = [w for w in words if w not in message]
                assert not missing, f"{missing} not in {message[:200]!r}"
                assert "\n" not in message.strip(), f"not one line: {message[:200]!r}"
                return
            raise AssertionError(f"no {error.__name__} raised")
        return run
    return check


def test_image_loading(tmp_path):
    cases = {}
    for name, (path, valid) in image_files(tmp_path / "files").items():
        if valid:
            def ok(path=path):
                img = load_image(path)
                assert img.mode == "RGB" and img.width >= 1 and img.height >= 1
            cases[name] = ok
        else:
            cases[name] = _raises(ImageLoadError, str(path))(lambda path=path: load_image(path))
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    for name, path, words in [("FIFO", fifo, ("pipe.png", "is a FIFO", "only regular image files are read")),
                              ("/dev/zero", Path("/dev/zero"), ("/dev/zero", "character device", "only regular image files are read")),
                              ("folder", folder, ("folder.png",)), ("missing file", tmp_path / "nope.png", ("nope.png",)),
                              ("symlink loop", loop, ("loop.png",))]:
        cases[name] = _raises((ImageLoadError, FileNotFoundError, IsADirectoryError), *words)(lambda p=path: load_image(p))
    LEDGER.run_all("loaders: images", cases)
    LEDGER.assert_handled("loaders: images")


class _RunsCode:
    """A pickle that would create a marker file if unpickled without weights_only."""

    def __init__(self, marker: Path, how: str):
        self.marker, self.how = str(marker), how

    def __reduce__(self):
        if self.how == "os.system":
            return (os.system, (f"touch {self.marker}",))
        if self.how == "exec":
            return (exec, (f"open({self.marker!r}, 'w').write('ran')",))
        return (open, (self.marker, "w"))  # a builtin that creates the file by being called


def test_checkpoints(tiny, tmp_path):
    names = [n for n, _ in tiny.named_parameters() if n.startswith("expert.")]
    good = save_trained_parts(tiny, tmp_path / "expert.safetensors", names)
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    cases = {}
    for kind, (path, reason) in broken_copies(good).items():
        cases[f"parts: {kind} safetensors"] = _raises(CheckpointError, path.name, reason)(
            lambda p=path: load_trained_parts(copy.deepcopy(tiny), p))
    sd = {f"expert.{k}": v.clone() for k, v in tiny.expert.state_dict().items()}
    key = "expert.selector.key_proj.weight"
    for label, value in (("NaN", float("nan")), ("inf", float("inf"))):
        bad = {k: v.clone() for k, v in sd.items()}
        bad[key][0, 0] = value
        path = tmp_path / f"{label}.safetensors"
        save_file(bad, str(path))
        cases[f"parts: {label} weight"] = _raises(CheckpointError, path.name, "non-finite weights", key)(
            lambda p=path: load_trained_parts(copy.deepcopy(tiny), p))
    unknown = tmp_path / "unknown.safetensors"
    save_file({**sd, "expert.not_a_parameter": torch.zeros(3)}, str(unknown))
    cases["parts: unknown key"] = _raises(CheckpointError, unknown.name, "expert.not_a_parameter")(
        lambda: load_trained_parts(copy.deepcopy(tiny), unknown))
    shape = tmp_path / "shape.safetensors"
    save_file({**sd, key: torch.zeros(3, 3)}, str(shape))
    cases["parts: wrong shape"] = _raises(CheckpointError, shape.name, key)(
        lambda: load_trained_parts(copy.deepcopy(tiny), shape))
    for meta, reason in [("{bad", "invalid JSON"), ('{"lora_alpha": 16}', "needs a rank r >= 1")]:
        path = tmp_path / f"lora-{len(cases)}.safetensors"
        save_file({"mllm.model.image_newline": torch.zeros(tiny.config.text.hidden_size)}, str(path),
                  metadata={"lora": meta})
        cases[f"parts: LoRA metadata {meta!r}"] = _raises(CheckpointError, path.name, reason)(
            lambda p=path: load_trained_parts(copy.deepcopy(tiny), p))

    official = to_official_state_dict(tiny.expert)
    for how in ("os.system", "exec", "open"):
        marker = tmp_path / f"ran-{how.replace('.', '-')}"
        path = tmp_path / f"evil-{how}.pth"
        with open(path, "wb") as f:
            pickle.dump({**official, "positive_embedding": _RunsCode(marker, how)}, f)

        def evil(path=path, marker=marker):
            _raises(CheckpointError, path.name, "weights-only")(lambda: read_checkpoint(path))()
            assert not marker.exists(), "the pickle ran code"
        cases[f".pth: pickle calling {how}"] = evil
    torch.save(official, tmp_path / "good.pth")
    for label, content, reason in [("empty", b"", "the file is empty"), ("text", b"hello", "neither a zip archive"),
                                   ("truncated", (tmp_path / "good.pth").read_bytes()[:600], "truncated")]:
        path = tmp_path / f"{label}.pth"
        path.write_bytes(content)
        cases[f".pth: {label}"] = _raises(CheckpointError, path.name, reason)(lambda p=path: read_checkpoint(p))
    cases[".pth: missing"] = _raises(CheckpointError, "nope.pth", "not found")(lambda: read_checkpoint(tmp_path / "nope.pth"))

    from adkit import AnomalyOV

    saved = tmp_path / "saved"
    tiny.save_pretrained(saved)
    weights = saved / "model.safetensors"
    pristine = weights.read_bytes()

    def damaged(hurt, *words):
        def attack():
            hurt()
            try:
                _raises(CheckpointError, *words)(lambda: AnomalyOV.from_pretrained(saved))()
            finally:
                weights.write_bytes(pristine)
                tiny.save_pretrained(saved)
        return attack

    cases["saved folder: weights truncated"] = damaged(lambda: weights.write_bytes(pristine[:4096]),
                                                       "model.safetensors", "not a readable safetensors")
    cases["saved folder: weights missing"] = damaged(lambda: weights.unlink(), "model.safetensors")
    cases["saved folder: config not JSON"] = damaged(lambda: (saved / "adkit_config.json").write_text("{nope"),
                                                     "adkit_config.json", "invalid JSON")
    cases["saved folder: config nested 100k deep"] = damaged(
        lambda: (saved / "adkit_config.json").write_text("[" * 100_000 + "]" * 100_000), "adkit_config.json", "nested too deeply")
    LEDGER.run_all("checkpoints", cases)
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items()), "the shared model was changed"
    LEDGER.assert_handled("checkpoints")


def _cli(argv) -> tuple[int, str, str]:
    from adkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("adkit: warning")]
    assert len(lines) == 1 and lines[0].startswith("adkit: error: "), f"not one error line: {err[-300:]!r}"
    return lines[0]


def test_cli(tmp_path, photo):
    png = tmp_path / "photo.png"
    photo.save(png)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    out = tmp_path / "out.json"
    maps = tmp_path / "maps"
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    refused = {
        "--threshold -1": (["detect", png, "--threshold", "-1"], "--threshold must be a number in [0, 1]"),
        "--threshold nan": (["detect", png, "--threshold", "nan"], "--threshold must be a number in [0, 1]"),
        "--threshold 2": (["detect", png, "--threshold", "2"], "--threshold must be a number in [0, 1]"),
        "--threshold inf": (["detect", png, "--threshold", "inf"], "--threshold must be a number in [0, 1]"),
        "--threshold abc": (["detect", png, "--threshold", "abc"], "--threshold"),
        "--image-size 0": (["detect", png, "--method", "self", "--image-size", "0"], "--image-size must be >= 1"),
        "--method unknown": (["detect", png, "--method", "magic"], "--method"),
        "unknown preset": (["detect", png, "--preset", "huge"], "huge"),
        "image is a FIFO": (["detect", fifo], "pipe.png"),
        "image is /dev/zero": (["detect", "/dev/zero"], "/dev/zero"),
        "image is a folder": (["detect", tmp_path / "nothing-here"], "nothing-here"),
        "image missing": (["detect", tmp_path / "nope.png"], "nope.png"),
        "image is a symlink loop": (["detect", loop], "loop.png"),
        "--maps is a file": (["detect", png, "--maps", not_a_folder], "--maps"),
        "chat: --max-new-tokens 0": (["chat", png, "Any defect?", "--max-new-tokens", "0"], "--max-new-tokens"),
        "chat: question over the context": (["chat", png, " ".join(["word"] * 40_000)], "does not fit the model's context"),
        "eval: --limit 0": (["eval", "zero-shot", "--heldout", "--limit", "0", "--out", tmp_path / "ev"], "--limit"),
    }
    (tmp_path / "nothing-here").mkdir()
    cases = {}
    for name, (argv, words) in refused.items():
        argv = [*argv, *([] if "--preset" in argv else ["--preset", "tiny"])]
        if argv[0] == "detect" and "--maps" not in argv:
            argv += ["--json", out, "--maps", maps]  # a refused run must write neither

        def attack(argv=argv, words=words):
            code, stdout, err = _cli(argv)
            assert code == 2, f"exit code {code}: {err[-200:]!r}"
            assert words in _error_line(err), f"{words!r} not in {err.strip()[:200]!r}"
            assert stdout == "" and not out.exists() and not maps.exists(), "something was written"
        cases[name] = attack

    sizes = {"1x1 image --maps": (1, 1), "1x300 strip --maps": (1, 300), "10000x50 strip --maps": (10000, 50)}
    for name, (w, h) in sizes.items():
        def odd(w=w, h=h, name=name):
            img = tmp_path / f"odd-{w}x{h}.png"
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(img)
            folder = tmp_path / f"maps-{w}x{h}"
            code, stdout, err = _cli(["detect", img, "--preset", "tiny", "--maps", folder])
            assert code == 0, f"exit code {code}: {err[-200:]!r}"
            (record,) = json.loads(stdout)
            assert 0.0 <= record["score"] <= 1.0 and record["map"], record
            assert np.load(folder / f"odd-{w}x{h}.npy").shape == (h, w)
            with Image.open(folder / f"odd-{w}x{h}.png") as overlay:
                assert max(overlay.size) <= 1024 + 140, f"overlay {overlay.size}"  # a picture of ≤ 1024 px + colour bar (1.4 in)
        cases[name] = odd
    LEDGER.run_all("CLI", cases)
    LEDGER.assert_handled("CLI")


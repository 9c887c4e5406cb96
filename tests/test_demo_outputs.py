"""The demo's output folder (adkit.demo.outputs): bounded, unique names, removed on close.
Real files in the system temp dir; the SIGTERM case on a real server is in test_demo_load.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from adkit.demo.outputs import OutputFolder


def test_keeps_only_the_newest_files_and_removes_itself():
    out = OutputFolder(keep=3)
    assert out.path.name.startswith("adkit-demo-") and out.path.is_dir()
    paths = [out.write_png(np.full((4, 5, 3), i, np.uint8)) for i in range(7)]
    assert len(set(paths)) == 7  # a fresh name per picture: no request overwrites another's file
    assert out.files() == paths[-3:]
    assert sorted(str(p) for p in out.path.iterdir()) == sorted(paths[-3:])
    with Image.open(paths[-1]) as png:
        assert png.size == (5, 4) and np.asarray(png)[0, 0, 0] == 6
    out.close()
    assert not out.path.exists()
    out.close()  # idempotent


def test_keep_must_be_positive():
    with pytest.raises(ValueError, match="keep"):
        OutputFolder(keep=0)


def test_the_app_writes_into_a_bounded_folder(tiny):
    from adkit.demo import DemoPipeline, build_demo

    demo = build_demo(DemoPipeline(tiny))
    folder = demo.output_dir
    assert isinstance(folder, OutputFolder) and folder.path.is_dir()
    folder.close()
    assert not folder.path.exists()


def test_previews_are_jpeg_close_to_the_picture():
    """Previews go out as JPEG (quality 90): the same picture up to compression, much smaller."""
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((320, 240),
                                                                                                     Image.BILINEAR))
    out = OutputFolder()
    try:
        jpg, png = out.write_preview(smooth), out.write_png(smooth)
        with Image.open(jpg) as a, Image.open(png) as b:
            assert a.format == "JPEG" and b.format == "PNG" and a.size == b.size == (320, 240)
            assert np.abs(np.asarray(a, np.float32) - smooth).mean() < 2.0
            assert np.array_equal(np.asarray(b), smooth)
        assert jpg.endswith(".jpg") and os.path.getsize(jpg) < os.path.getsize(png) / 2
    finally:
        out.close()


def test_malloc_arenas_can_be_capped_in_a_fresh_process():
    """adkit demo caps glibc's arenas before its worker threads start (RSS stays flat under load:
    +1.1 % vs +3.1 % after the first of three 160-request runs in test_demo_load)."""
    import subprocess
    import sys

    code = "from adkit.demo.outputs import limit_malloc_arenas; print(limit_malloc_arenas(2))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr

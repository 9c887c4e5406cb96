"""The demo's output folder (adkit.demo.outputs): bounded, unique names, removed on close.
Real files in the system temp dir; the SIGTERM case on a real server is in test_demo_load.py."""

from __future__ import annotations

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

"""The presenter's web app (Gradio): anomaly score, map, crops, tokens and a chat (docs/architecture.md §8).

``build_demo(pipeline) -> gr.Blocks`` lives in :mod:`adkit.demo.app` and imports Gradio only
when called; the plain handler functions are in :mod:`adkit.demo.handlers`; ``adkit demo``
(:mod:`adkit.demo.cli`) starts it on 127.0.0.1. Importing this package has no side effects.
"""

from __future__ import annotations

from .handlers import PAPER_PROMPTS, DemoInputError, DemoPipeline

__all__ = ["PAPER_PROMPTS", "DemoInputError", "DemoPipeline", "build_demo", "example_images"]


def example_images(source=None, limit: int = 6):
    """See :func:`adkit.demo.app.example_images` (no Gradio import)."""
    from .app import example_images as _examples

    return _examples(source, limit)


def build_demo(pipeline, **kwargs):
    """See :func:`adkit.demo.app.build_demo` (Gradio is imported here, not at package import)."""
    from .app import build_demo as _build

    return _build(pipeline, **kwargs)

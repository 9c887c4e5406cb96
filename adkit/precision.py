"""Compute precision of the model: fp32, or bf16 where the hardware multiplies it natively.

The big matrix products of Anomaly-OV — the vision tower over every anyres crop, the
projector and the LLM's prefill — run 2–3.4× faster in bf16 than in fp32 on a CPU with
``avx512_bf16`` or AMX (oneDNN kernels; ``benchmarks/bench_dtype.py`` measures it side by
side), and bf16 is what the official model runs on GPUs (paper §5.1, its training scripts).
Without native support a CPU emulates bf16 and gets slower, so ``"auto"`` picks it only
where it pays. The anomaly expert (paper §3.3–3.4, LTFM and the VT selector) keeps its weights
and its arithmetic in fp32 whatever the model's dtype: it is ~1 M parameters, and its maps
and scores then stay within ~1e-2 of an all-fp32 model (``tests/test_precision.py``).

Lower layer: ``adkit.model``, the CLI and training read it. torch is imported inside the
functions that need it, so ``adkit --help`` (which states what ``auto`` picks here) stays light.
"""

from __future__ import annotations

import functools
import platform

CHOICES = ("auto", "float32", "bfloat16")
"""What ``--dtype`` and ``AnomalyOV.from_preset(dtype=...)`` accept (plus the aliases below)."""

_NAMES = {"float32": "float32", "fp32": "float32", "float": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports in /proc/cpuinfo (empty elsewhere or unreadable)."""
    if platform.system() != "Linux":
        return frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (``avx512_bf16`` or AMX). There bf16 matrix
    products beat fp32; elsewhere they are emulated and slower, so nothing picks bf16."""
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def native_bf16(device="cpu") -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU that supports it, or :func:`cpu_bf16`."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_bf16()


def pick_dtype(dtype, device="cpu"):
    """The compute dtype for ``dtype``: None or "float32" → fp32, "bfloat16"/"bf16" → bf16, "auto" →
    bf16 where :func:`native_bf16` says the device has it, else fp32. A torch dtype passes
    through if it is fp32 or bf16; anything else is a ``ValueError`` naming the choices."""
    import torch

    if dtype is None:
        return torch.float32
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _NAMES:
        return getattr(torch, _NAMES[dtype.removeprefix("torch.")])
    if dtype in (torch.float32, torch.bfloat16):
        return dtype
    raise ValueError(f"dtype must be one of {', '.join(CHOICES)} (or fp32 / bf16), got {dtype!r}")


def auto_on_cpu() -> str:
    """What ``"auto"`` picks on this machine's CPU, for ``--help`` (no torch import)."""
    return "bfloat16 (the CPU has avx512_bf16/AMX)" if cpu_bf16() else "float32 (the CPU has no native bf16)"

"""Mixed precision: use bf16 autocast only where the hardware makes it faster.

On CPUs without native bf16 (no AVX512-BF16 / AMX), bf16 autocast is emulated and was measured
25× *slower* for a training step than fp32, so "auto" checks the CPU flags first.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Any, Literal

Precision = Literal["auto", "bf16", "fp32"]


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: Precision, device_type: str) -> bool:
    if precision == "auto":
        if device_type == "cuda":
            import torch

            return torch.cuda.is_bf16_supported()
        return device_type == "cpu" and cpu_has_native_bf16()
    return precision == "bf16"


def autocast(model: Any, precision: Precision):
    """A bf16 autocast context for the model's device, or a no-op."""
    import torch

    device = next(model.parameters()).device.type
    if device not in ("cpu", "cuda") or not use_bf16(precision, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16)

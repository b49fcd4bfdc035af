"""LoRA through peft, and export of a policy as a plain HF directory (adapters merged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safeladder.models.loader import LoraSpec


def apply_lora(model: Any, spec: LoraSpec, base_name: str) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=spec.target_modules, task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    # Record where the base comes from so an adapter checkpoint can be reloaded by name.
    for cfg in model.peft_config.values():
        cfg.base_model_name_or_path = base_name
    return model


def export_merged(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save a standalone safetensors HF directory; LoRA adapters are merged into a copy."""
    import copy

    out = Path(out_dir)
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out

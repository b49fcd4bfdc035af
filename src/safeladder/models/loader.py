"""One way to get a policy: built-in name, local HF directory (full or LoRA adapter), or "tiny"."""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from safeladder.errors import ConfigError
from safeladder.models.builtin import BUILTIN_MODELS, ensure_converted

TINY = "tiny"


class LoraSpec(BaseModel):
    """LoRA adapter settings (peft). `target_modules="all-linear"` adapts every projection."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class ModelSpec(BaseModel):
    """Which model to load and how. `name` is a built-in name, "tiny", or a local directory."""

    model_config = ConfigDict(extra="forbid")
    name: str = "smollm2-135m"
    dtype: Literal["float32", "bfloat16"] = "float32"
    lora: LoraSpec | None = None
    trust_remote_code: bool = False  # never on unless the user asks


@dataclass
class Policy:
    model: Any  # transformers PreTrainedModel, or a peft PeftModel wrapping one
    tokenizer: Any
    spec: ModelSpec


def resolve_model_dir(name: str) -> Path | None:
    """The directory to load from; None for the tiny model."""
    if name == TINY:
        return None
    if name in BUILTIN_MODELS:
        return ensure_converted(name)
    path = Path(name).expanduser()
    if not path.is_dir():
        known = ", ".join([*BUILTIN_MODELS, TINY])
        raise ConfigError(f"model '{name}': not a built-in name ({known}) nor an existing directory")
    return path


@contextlib.contextmanager
def peft_quietly():
    """peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`: hide that one warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
        yield


def _load_dir(path: Path, spec: ModelSpec) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, spec.dtype)
    adapter_cfg = path / "adapter_config.json"
    if adapter_cfg.is_file():  # a LoRA checkpoint: load its base, then the adapter on top
        from peft import PeftModel

        base_name = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
        base_model, tokenizer = _load_any(base_name, spec)
        with peft_quietly():
            model = PeftModel.from_pretrained(base_model, path, is_trainable=True)
        if (path / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(path)
        return model, tokenizer
    if not list(path.glob("*.safetensors")):
        raise ConfigError(f"model directory {path}: no *.safetensors weights (only safetensors are loaded)")
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, use_safetensors=True, trust_remote_code=spec.trust_remote_code
    )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    return model, tokenizer


def _load_any(name: str, spec: ModelSpec) -> tuple[Any, Any]:
    path = resolve_model_dir(name)
    if path is None:
        from safeladder.models.tiny import tiny_model, tiny_tokenizer

        return tiny_model(), tiny_tokenizer()
    return _load_dir(path, spec)


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """Only the tokenizer of a model (no weights): for cutting text by the policy's tokens outside
    training, e.g. search passages in warm-up traces. A LoRA checkpoint without its own tokenizer
    uses its base model's."""
    path = resolve_model_dir(name)
    if path is None:
        from safeladder.models.tiny import tiny_tokenizer

        return tiny_tokenizer()
    adapter_cfg = path / "adapter_config.json"
    if adapter_cfg.is_file() and not (path / "tokenizer_config.json").is_file():
        return load_tokenizer(json.loads(adapter_cfg.read_text())["base_model_name_or_path"], trust_remote_code)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_policy(spec: ModelSpec | str) -> Policy:
    """Load model + tokenizer; wrap with a fresh LoRA adapter if `spec.lora` is set."""
    spec = ModelSpec(name=spec) if isinstance(spec, str) else spec
    model, tokenizer = _load_any(spec.name, spec)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if spec.lora is not None and not _is_peft(model):
        from safeladder.models.lora import apply_lora

        model = apply_lora(model, spec.lora, base_name=spec.name)
    return Policy(model=model, tokenizer=tokenizer, spec=spec)


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")

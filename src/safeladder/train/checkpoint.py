"""Atomic, resumable checkpoints shared by every trainer.

A checkpoint is a directory `ckpt-000120/` holding the trainable weights (safetensors, via
`save_pretrained`), optimizer and scheduler state, RNG states and a `state.json` with the
trainer's position. It is written into a hidden temp directory and renamed into place, so a
`kill -9` at any moment leaves either the old set of checkpoints or the new one, never half
of one. Leftover temp directories are removed on the next save or resume.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_RE = re.compile(r"^ckpt-(\d{6,})$")
STATE_FILE = "state.json"


def rng_state() -> dict[str, Any]:
    """All RNG states as JSON-able lists, so no pickle is ever needed to resume."""
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and CKPT_RE.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def clean_partial(run_dir: Path) -> None:
    """Remove temp directories left by a save that was killed mid-write."""
    for p in run_dir.glob(".tmp-ckpt-*"):
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    run_dir: Path, step: int, model: Any, state: dict[str, Any],
    optimizer: Any = None, scheduler: Any = None, keep_last: int = 2, tokenizer: Any = None,
) -> Path:
    """Write checkpoint `step` atomically and prune older ones beyond `keep_last`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_partial(run_dir)
    final = run_dir / f"ckpt-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=run_dir))
    try:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        if tokenizer is not None:  # so `model/` is a complete HF directory, loadable on its own
            tokenizer.save_pretrained(tmp / "model")
        torch.save(
            {
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
            },
            tmp / "trainer.pt",
        )
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state, "rng": rng_state()}))
        _fsync_tree(tmp)
        if final.exists():  # re-saving the same step (e.g. the final save after a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt: Path, model: Any, optimizer: Any = None, scheduler: Any = None) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from `ckpt`; return its state dict."""
    load_trainable_weights(model, ckpt / "model")
    blob = torch.load(ckpt / "trainer.pt", weights_only=True)  # tensors and plain types only
    if optimizer is not None and blob["optimizer"] is not None:
        optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None and blob["scheduler"] is not None:
        scheduler.load_state_dict(blob["scheduler"])
    state = json.loads((ckpt / STATE_FILE).read_text())
    set_rng_state(state.pop("rng"))
    return state


def load_trainable_weights(model: Any, model_dir: Path) -> None:
    """Load safetensors weights saved by `save_pretrained` back into a live model (LoRA or full)."""
    from safetensors.torch import load_file

    adapter = model_dir / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(adapter))
        return
    state: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"{model_dir}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

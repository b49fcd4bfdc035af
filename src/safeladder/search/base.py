"""The retriever protocol, and building / saving / loading an index by kind.

Everything that retrieves — the in-process BM25 and dense indexes, the HTTP client — answers
one call, `retrieve(queries, topk) -> list[list[Passage]]` (best first), so rollouts, the
service and benchmarks never care which one they hold.

An index directory holds `index.json` ({"kind", "format", "documents"}), `documents.jsonl` (the
corpus, so passages come back with their text) and the kind's own files. `load_index(dir)` reads
the kind and hands over to that class's `load`; the kinds are a name → class table.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from safeladder.errors import ConfigError, SafeLadderError
from safeladder.search.corpus import Document, load_corpus, write_corpus

INDEX_FORMAT = 1
MANIFEST = "index.json"
DOCUMENTS = "documents.jsonl"

# kind -> "module:Class"; imported lazily so BM25 users never load torch/faiss and vice versa.
INDEX_KINDS: dict[str, str] = {
    "bm25": "safeladder.search.bm25:BM25Retriever",
    "dense": "safeladder.search.dense:DenseRetriever",
}


@dataclass(frozen=True)
class Passage:
    """One retrieved document with its score (higher is better; scales differ between kinds)."""

    id: str
    title: str
    text: str
    score: float

    @classmethod
    def of(cls, doc: Document, score: float) -> "Passage":
        return cls(doc.id, doc.title, doc.text, float(score))


@runtime_checkable
class Retriever(Protocol):
    def retrieve(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
        """For each query, up to `topk` passages, best first."""
        ...


def check_topk(topk: int) -> int:
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    return topk


def _index_class(kind: str) -> Any:
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index kind {kind!r} (known: {', '.join(sorted(INDEX_KINDS))})")
    module, _, name = INDEX_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def build_index(docs: Sequence[Document], kind: str, **options: Any) -> Any:
    """An in-memory retriever of `kind` over `docs` (options go to the class)."""
    return _index_class(kind).build(docs, **options)


def write_manifest(directory: Path, kind: str, docs: Sequence[Document], extra: dict[str, Any] | None = None) -> None:
    """The part of `save` every kind shares: the manifest and the documents."""
    directory.mkdir(parents=True, exist_ok=True)
    write_corpus(directory / DOCUMENTS, docs)
    manifest = {"kind": kind, "format": INDEX_FORMAT, "documents": len(docs), **(extra or {})}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise SafeLadderError(f"{directory}: not an index directory (no {MANIFEST}); build one with "
                              "`safeladder search index --corpus FILE --kind bm25 --output DIR`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SafeLadderError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        raise SafeLadderError(f"{path}: unsupported index format (expected format {INDEX_FORMAT})")
    return manifest


def read_documents(directory: str | Path) -> list[Document]:
    return load_corpus(Path(directory) / DOCUMENTS)


def load_index(directory: str | Path) -> Any:
    """The retriever saved in `directory` (any kind)."""
    kind = read_manifest(directory).get("kind")
    return _index_class(str(kind)).load(Path(directory))


def index_corpus(corpus: str | Path, kind: str, output: str | Path, **options: Any) -> int:
    """Load a JSONL corpus, build a `kind` index over it and save it in `output`; returns the document count."""
    docs = load_corpus(corpus)
    build_index(docs, kind, **options).save(output)
    return len(docs)

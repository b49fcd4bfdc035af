"""BM25 over a corpus with `bm25s` (sparse scores precomputed at index time, so queries are cheap).

Queries and documents go through the same tokenizer (lower case, English stop words dropped,
words of ≥ 2 characters). Only passages that share a term with the query come back (score > 0),
so a query of stop words only retrieves nothing rather than arbitrary documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import bm25s

from safeladder.search.base import Passage, check_topk, read_documents, read_manifest, write_manifest
from safeladder.search.corpus import Document

SUBDIR = "bm25"


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    return bm25s.tokenize(list(texts), lower=True, stopwords="en", return_ids=False, show_progress=False)


class BM25Retriever:
    kind = "bm25"

    def __init__(self, docs: Sequence[Document], model: bm25s.BM25, params: dict[str, float] | None = None):
        self.docs = list(docs)
        self.model = model
        self.params = dict(params or {})

    @classmethod
    def build(cls, docs: Sequence[Document], k1: float = 1.5, b: float = 0.75) -> "BM25Retriever":
        if not docs:
            raise ValueError("cannot index an empty corpus")
        model = bm25s.BM25(k1=k1, b=b)
        model.index(tokenize([d.contents for d in docs]), show_progress=False)
        return cls(docs, model, {"k1": k1, "b": b})

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        write_manifest(directory, self.kind, self.docs, {"params": self.params})
        self.model.save(str(directory / SUBDIR), show_progress=False)

    @classmethod
    def load(cls, directory: str | Path) -> "BM25Retriever":
        directory = Path(directory)
        manifest = read_manifest(directory)
        model = bm25s.BM25.load(str(directory / SUBDIR), show_progress=False)
        return cls(read_documents(directory), model, manifest.get("params"))

    def retrieve(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
        k = min(check_topk(topk), len(self.docs))
        ids = [self.model.get_tokens_ids(tokens) for tokens in tokenize(queries)]
        asked = [i for i, q in enumerate(ids) if q]
        out: list[list[Passage]] = [[] for _ in queries]
        if not asked:
            return out
        found = self.model.retrieve([ids[i] for i in asked], k=k, show_progress=False, n_threads=0)
        for row, i in enumerate(asked):
            out[i] = [Passage.of(self.docs[int(d)], float(s))
                      for d, s in zip(found.documents[row], found.scores[row]) if s > 0]
        return out

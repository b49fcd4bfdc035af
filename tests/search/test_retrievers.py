"""BM25 and dense retrievers: the right passage first, save/load round trips, edge cases."""

from __future__ import annotations

import json

import pytest

from safeladder.errors import ConfigError, SafeLadderError
from safeladder.search.base import Passage, Retriever, build_index, index_corpus, load_index
from safeladder.search.corpus import Document, write_corpus

DOCS = [
    Document("d1", "Quarvel", "Quarvel is a river port famous for its copper bells and its glass lenses."),
    Document("d2", "Orsk Lantern Guild", "The Orsk Lantern Guild was founded in 1722 by Mira Thessaly."),
    Document("d3", "Mira Thessaly", "Mira Thessaly was born in Quarvel in 1690 and worked as a clockmaker."),
    Document("d4", "Dunmore", "Dunmore is a mountain village where shepherds make wool and cheese."),
    Document("d5", "Tessik Observatory", "The Tessik Observatory studies comets and the planets of the night sky."),
    Document("d6", "Brannoch", "Brannoch is the capital of Velland, on the Tarn River."),
]
QUERIES = {
    "Who founded the Orsk Lantern Guild?": "d2",
    "Where was Mira Thessaly born?": "d3",
    "What is the capital of Velland?": "d6",
    "observatory that studies comets": "d5",
}


@pytest.fixture(scope="module")
def bm25():
    return build_index(DOCS, "bm25")


@pytest.fixture(scope="module")
def dense():
    return build_index(DOCS, "dense")


def _top_ids(retriever, k=1):
    return {q: [p.id for p in hits][:k] for q, hits in zip(QUERIES, retriever.retrieve(list(QUERIES), k))}


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_the_answering_passage_comes_first(kind, request):
    r = request.getfixturevalue(kind)
    assert isinstance(r, Retriever)
    assert _top_ids(r) == {q: [d] for q, d in QUERIES.items()}
    hits = r.retrieve(["Mira Thessaly clockmaker"], 3)[0]
    assert all(isinstance(p, Passage) for p in hits) and len(hits) <= 3
    assert [p.score for p in hits] == sorted((p.score for p in hits), reverse=True)
    assert hits[0].title == "Mira Thessaly" and hits[0].text == DOCS[2].text


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_save_and_load_give_the_same_results(kind, request, tmp_path):
    r = request.getfixturevalue(kind)
    r.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["kind"] == kind and manifest["documents"] == len(DOCS)
    loaded = load_index(tmp_path / "idx")
    assert type(loaded) is type(r)
    queries = list(QUERIES) + ["bells"]
    before, after = r.retrieve(queries, 3), loaded.retrieve(queries, 3)
    assert [[p.id for p in h] for h in before] == [[p.id for p in h] for h in after]
    assert [[round(p.score, 5) for p in h] for h in before] == [[round(p.score, 5) for p in h] for h in after]


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_topk_bounds_and_blank_queries(kind, request):
    r = request.getfixturevalue(kind)
    assert r.retrieve([], 3) == []
    assert r.retrieve(["   "], 3) == [[]]
    assert len(r.retrieve(["village cheese"], 50)[0]) <= len(DOCS)
    with pytest.raises(ValueError, match="topk"):
        r.retrieve(["x"], 0)


def test_bm25_returns_only_matching_passages():
    r = build_index(DOCS, "bm25")
    assert r.retrieve(["the of and is"], 3) == [[]]  # stop words only: nothing, not arbitrary documents
    assert r.retrieve(["zzzunknownword"], 3) == [[]]
    hits = r.retrieve(["cheese"], 5)[0]
    assert [p.id for p in hits] == ["d4"]


def test_index_corpus_and_load_errors(tmp_path):
    write_corpus(tmp_path / "c.jsonl", DOCS)
    assert index_corpus(tmp_path / "c.jsonl", "bm25", tmp_path / "out") == len(DOCS)
    assert load_index(tmp_path / "out").retrieve(["Velland capital"], 1)[0][0].id == "d6"
    with pytest.raises(ConfigError, match="unknown index kind 'faiss'.*bm25, dense"):
        build_index(DOCS, "faiss")
    with pytest.raises(SafeLadderError, match="not an index directory"):
        load_index(tmp_path)
    (tmp_path / "out" / "index.json").write_text('{"kind": "bm25", "format": 99}')
    with pytest.raises(SafeLadderError, match="unsupported index format"):
        load_index(tmp_path / "out")

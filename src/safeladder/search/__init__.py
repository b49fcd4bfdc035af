"""Deliberative search (SPEC §5): a local corpus, its indexes, a retrieval service, search rollouts.

- `corpus.py`: JSONL corpora (id, title, text) → `Document`s, with file:line: field errors.
- `base.py`: the `Retriever` protocol, `Passage`, and index build/save/load by kind.
- `bm25.py` / `dense.py`: BM25 (bm25s) and dense (offline MiniLM + faiss) retrievers.
- `service.py` / `client.py`: the Search-R1 HTTP schema (`POST /retrieve`) and its client.
- `environment.py`: the rollout `Environment` answering `<search>` with `<information>`.
- `confidence.py`, `voting.py`: stated confidence, and confidence-weighted voting at test time.
- `world.py`: a generated fictional encyclopedia + QA, so answers are in the corpus, not the weights.
- `prompt.py`: the system prompt that teaches the tags.
"""

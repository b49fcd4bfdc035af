"""The retrieval service: Search-R1 schema, limits, auth, fuzzed requests → 4xx only, and its client."""

from __future__ import annotations

import json
import string

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from safeladder.errors import SafeLadderError
from safeladder.search.base import build_index
from safeladder.search.client import RemoteRetriever
from safeladder.search.corpus import Document
from safeladder.search.service import RetrievalSettings, create_app
from safeladder.verifiers.service import BackgroundServer

TOKEN_ENV = "SAFELADDER_TEST_RETRIEVER_TOKEN"
DOCS = [Document(f"d{i}", f"Title {w}", f"The {w} passage talks about {w} and {w}s.")
        for i, w in enumerate(["harbour", "lantern", "comet", "orchard", "ledger", "compass", "bridge"])]
LIMITS = dict(max_queries=3, max_query_chars=64, max_topk=5, max_body_bytes=4096)


@pytest.fixture(scope="module")
def retriever():
    return build_index(DOCS, "bm25")


def make_app(retriever, **kw):
    return create_app(RetrievalSettings(**{**LIMITS, **kw}), retriever)


def test_search_r1_schema_with_and_without_scores(retriever):
    with TestClient(make_app(retriever)) as client:
        scored = client.post("/retrieve", json={"queries": ["comet", "lantern harbour"], "topk": 2, "return_scores": True})
        plain = client.post("/retrieve", json={"queries": ["orchard"]})  # topk defaults to 3
    assert scored.status_code == 200 and plain.status_code == 200
    result = scored.json()["result"]
    local = retriever.retrieve(["comet", "lantern harbour"], 2)
    assert [[h["document"]["id"] for h in hits] for hits in result] == [[p.id for p in hits] for hits in local]
    first = result[0][0]
    assert first["score"] == pytest.approx(local[0][0].score)
    assert first["document"] == {"id": "d2", "contents": '"Title comet"\nThe comet passage talks about comet and comets.',
                                 "title": "Title comet", "text": "The comet passage talks about comet and comets."}
    assert plain.json()["result"][0][0]["id"] == "d3" and "score" not in plain.json()["result"][0][0]


@pytest.mark.parametrize("body, status, says", [
    ({"queries": ["a", "b", "c", "d"]}, 413, "queries: 4 queries exceed the limit of 3"),
    ({"queries": ["x" * 65]}, 422, "queries.0: query too long"),
    ({"queries": ["x"], "topk": 0}, 422, "topk: must be between 1 and 5"),
    ({"queries": ["x"], "topk": 6}, 422, "topk: must be between 1 and 5"),
    ({"queries": ["x"], "topk": "3"}, 422, "topk"),
    ({"queries": ["x"], "return_scores": 1}, 422, "return_scores"),
    ({"queries": "x"}, 422, "queries"),
    ({"queries": [1]}, 422, "queries.0"),
    ({"queries": ["x"], "extra": 1}, 422, "extra"),
    ({}, 422, "queries"),
])
def test_malformed_requests_are_4xx_naming_the_field(retriever, body, status, says):
    with TestClient(make_app(retriever)) as client:
        resp = client.post("/retrieve", json=body)
    assert resp.status_code == status and says in resp.json()["detail"]


def test_transport_level_problems_are_4xx(retriever):
    with TestClient(make_app(retriever)) as client:
        assert client.post("/retrieve", content=b"{nope", headers={"content-type": "application/json"}).status_code == 422
        assert client.post("/retrieve", content=b"[1, 2]").status_code == 422
        assert client.post("/retrieve", content=b"", headers={"content-type": "application/json"}).status_code == 422
        assert client.post("/retrieve", content=b'{"queries": []}', headers={"content-type": "text/plain"}).status_code == 415
        assert client.post("/retrieve", content=b" " * 5000).status_code == 413
        assert client.post("/retrieve", content=b'{"queries": ["a"], "topk": NaN}').status_code == 422
        assert client.get("/retrieve").status_code == 405
        lone = client.post("/retrieve", content=b'{"queries": ["\\ud800 comet"]}', headers={"content-type": "application/json"})
        assert lone.status_code == 422  # a lone surrogate is not UTF-8: refused, never passed to a tokenizer
        pair = client.post("/retrieve", json={"queries": ["comet 😀"]})
        assert pair.status_code == 200 and pair.json()["result"][0][0]["id"] == "d2"
        assert client.post("/retrieve", json={"queries": ["", "the of"]}).json() == {"result": [[], []]}


def test_bearer_token_from_the_environment(retriever, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    with TestClient(make_app(retriever, token_env=TOKEN_ENV)) as client:
        assert client.post("/retrieve", json={"queries": ["comet"]}).status_code == 401
        assert client.post("/retrieve", json={"queries": ["comet"]}, headers={"authorization": "Bearer nope"}).status_code == 401
        assert client.post("/retrieve", json={"queries": ["comet"]}, headers={"authorization": "Bearer s3cret"}).status_code == 200
        health = client.get("/health").json()
        assert health["auth"] is True and health["documents"] == len(DOCS) and health["limits"]["max_queries"] == 3
        assert client.get("/metrics").status_code == 401


# --------------------------------------------------------------------------- fuzzing

json_leaf = (st.none() | st.booleans() | st.integers(min_value=-(10**20), max_value=10**20)
             | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                          max_leaves=8)
query = st.text(max_size=20) | st.text(min_size=60, max_size=70) | st.sampled_from(["comet", "the", "", "harbour lantern"])
near_valid = st.fixed_dictionaries({"queries": st.lists(query, max_size=4)},
                                   optional={"topk": st.integers(-2, 8) | json_leaf, "return_scores": st.booleans() | json_leaf})
junk = st.fixed_dictionaries({}, optional={"queries": st.lists(json_leaf, max_size=4) | json_value, "topk": json_leaf,
                                           "return_scores": json_leaf, "other": json_leaf})
bodies = st.one_of(near_valid, near_valid, junk, json_value)
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _healthy(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.post("/retrieve", json={"queries": ["comet"]}).json()["result"][0][0]["id"] == "d2"
    assert client.get("/metrics").json()["internal_errors"] == 0


def test_fuzzed_json_bodies_never_get_5xx(retriever):
    with TestClient(make_app(retriever), raise_server_exceptions=False) as client:

        @FUZZ
        @given(body=bodies)
        def check(body):
            resp = client.post("/retrieve", content=json.dumps(body).encode(), headers={"content-type": "application/json"})
            assert resp.status_code < 500, resp.text
            if resp.status_code == 200:
                assert len(resp.json()["result"]) == len(body["queries"])
            else:
                assert resp.status_code in (413, 422) and resp.json()["detail"]

        check()
        _healthy(client)


def test_fuzzed_bytes_methods_paths_never_get_5xx(retriever):
    ascii_text = st.text(alphabet=string.ascii_letters + string.digits + "/-_.;=% ", max_size=30)
    with TestClient(make_app(retriever), raise_server_exceptions=False) as client:

        @settings(FUZZ, max_examples=300)
        @given(method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "HEAD", "OPTIONS"]),
               path=st.sampled_from(["/retrieve", "/retrieve", "/health", "/metrics", "/"]) | ascii_text.map(lambda s: "/" + s),
               ctype=st.sampled_from(["application/json", "application/json", "", "text/plain", "application/json; charset=utf-16"])
               | ascii_text,
               body=st.binary(max_size=300) | bodies.map(lambda b: json.dumps(b).encode()) | st.binary(min_size=4100, max_size=4200))
        def check(method, path, ctype, body):
            headers = {"content-type": ctype} if ctype else {}
            resp = client.request(method, path, content=body, headers=headers)
            assert resp.status_code < 500, (method, path, resp.text)

        check()
        _healthy(client)


# --------------------------------------------------------------------------- client


def test_remote_retriever_matches_local_and_chunks_queries(retriever):
    app = make_app(retriever)
    queries = ["comet", "lantern", "harbour bridge", "ledger", "orchard", "compass", "nothing-matches-this"]
    with BackgroundServer(app) as srv, RemoteRetriever(srv.url) as remote:
        got = remote.retrieve(queries, 2)
        assert remote._chunk() == 3  # the server's advertised max_queries
        with pytest.raises(SafeLadderError, match="HTTP 422.*topk"):
            remote.retrieve(["comet"], 50)
    want = retriever.retrieve(queries, 2)
    assert [[(p.id, p.title, p.text) for p in h] for h in got] == [[(p.id, p.title, p.text) for p in h] for h in want]
    assert app.state.metrics.by_route["/retrieve"] == 4  # 3 chunks + the refused one


def test_remote_retriever_retries_transient_errors_only():
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(404)
        calls["n"] += 1
        if calls["n"] < 3:
            return httpx.Response(503, json={"detail": "busy"})
        hit = {"document": {"id": "7", "contents": '"Seven"\nA Search-R1 style document.'}, "score": 1.5}
        return httpx.Response(200, json={"result": [[hit]]})

    remote = RemoteRetriever("http://r", backoff=0.0, transport=httpx.MockTransport(handler))
    [[p]] = remote.retrieve(["q"], 1)
    assert (p.id, p.title, p.text, p.score) == ("7", "Seven", "A Search-R1 style document.", 1.5) and calls["n"] == 3

    def bad(request: httpx.Request) -> httpx.Response:
        calls["n"] += request.url.path == "/retrieve"
        return httpx.Response(401, json={"detail": "missing token"})

    calls["n"] = 0
    with pytest.raises(SafeLadderError, match="HTTP 401: missing token"):
        RemoteRetriever("http://r", backoff=0.0, transport=httpx.MockTransport(bad), chunk_size=1).retrieve(["q"], 1)
    assert calls["n"] == 1  # 4xx is never retried

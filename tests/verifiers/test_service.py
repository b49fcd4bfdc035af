"""The verifier HTTP service: same verdicts as in-process, micro-batching, auth, limits, robustness."""

from __future__ import annotations

import asyncio
import json
import string
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from safeladder.errors import ConfigError
from safeladder.verifiers import base
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, register_verifier
from safeladder.verifiers.batching import MicroBatcher, call_isolating
from safeladder.verifiers.service import ServiceSettings, create_app, json_safe

TOKEN_ENV = "SAFELADDER_TEST_SERVICE_TOKEN"


class LengthVerifier(Verifier):
    """Fast, deterministic fake: the score depends on the judged answer; 'BOOM' makes it raise."""

    name = "t-service-length"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def verify(self, items):
        with self._lock:
            self.calls.append(len(items))
        time.sleep(self.delay)
        out = []
        for it in items:
            text = self.judged_text(it)
            if "BOOM" in text:
                raise ValueError("boom on purpose")
            if not text:
                out.append(Verdict.not_applicable("empty answer"))
                continue
            out.append(Verdict(len(text) % 11 / 10, "long" if len(text) > 5 else "short",
                               details={"chars": len(text), "reference": it.reference, "meta": dict(it.metadata)}))
        return out


ITEMS = [
    VerifyItem("q1", "<think>hidden reasoning</think> The answer is 4.", reference="4", metadata={"k": [1, 2]}),
    VerifyItem("q2", "short", label="benign"),
    VerifyItem("q3", "<think>only thinking</think>"),
    VerifyItem("q4", "Ünïcödé ✓ 日本語", metadata={"nested": {"a": None, "b": 1.5}}),
]


def item_json(it: VerifyItem) -> dict:
    return {"prompt": it.prompt, "response": it.response, "reference": it.reference, "label": it.label,
            "metadata": dict(it.metadata)}


def to_verdicts(payload: dict) -> list[Verdict]:
    return [Verdict(v["score"], v["label"], v["status"], v["details"]) for v in payload["verdicts"]]


def make_app(verifier: Verifier | None = None, **overrides):
    overrides.setdefault("max_wait_ms", 1.0)
    return create_app(ServiceSettings(**overrides), {"len": verifier or LengthVerifier()})


def post(client: TestClient, items, verifier: str = "len", **kw) -> httpx.Response:
    return client.post("/v1/verify", json={"verifier": verifier, "items": [item_json(i) for i in items]}, **kw)


# --------------------------------------------------------------------------- functional


def test_service_verdicts_equal_in_process_verdicts():
    verifier = LengthVerifier()
    with TestClient(make_app(verifier)) as client:
        resp = post(client, ITEMS)
    assert resp.status_code == 200
    body = resp.json()
    assert body["verifier"] == "len" and body["elapsed_ms"] >= 0
    remote = to_verdicts(body)
    assert remote == LengthVerifier()(ITEMS)
    assert [v.status for v in remote] == ["ok", "ok", "not_applicable", "ok"]
    assert remote[0].details == {"chars": len("The answer is 4."), "reference": "4", "meta": {"k": [1, 2]}}


def test_an_item_that_raises_gets_an_error_verdict_and_the_others_are_scored():
    verifier = LengthVerifier()
    items = [ITEMS[0], VerifyItem("q", "BOOM goes the verifier"), ITEMS[1], ITEMS[3]]
    with TestClient(make_app(verifier)) as client:
        resp = post(client, items)
        metrics = client.get("/metrics").json()
    assert resp.status_code == 200
    verdicts = to_verdicts(resp.json())
    assert verdicts[1].status == "error" and verdicts[1].score is None
    assert "ValueError: boom on purpose" in verdicts[1].details["error"]
    good = [items[0], items[2], items[3]]
    assert [verdicts[0], verdicts[2], verdicts[3]] == LengthVerifier()(good)
    assert metrics["verifiers"]["len"]["verdicts_by_status"] == {"ok": 3, "error": 1}
    assert metrics["internal_errors"] == 0


def test_unknown_verifier_is_404_naming_the_served_ones():
    with TestClient(make_app()) as client:
        resp = post(client, ITEMS[:1], verifier="no-such-verifier")
    assert resp.status_code == 404
    assert resp.json()["detail"] == "unknown verifier 'no-such-verifier'; this service serves: len"


@pytest.fixture
def registered(monkeypatch):
    """A fake registered under a unique name (removed afterwards); built-in modules are not imported."""
    name = "t-service-registered"
    monkeypatch.setattr(base, "BUILTIN_VERIFIER_MODULES", [])
    cls = register_verifier(name)(type("RegisteredLength", (LengthVerifier,), {}))
    yield name, cls
    base.VERIFIERS.pop(name, None)


def test_settings_build_registered_verifiers_once_with_their_options(registered):
    name, cls = registered
    app = create_app(ServiceSettings(verifiers=[name], verifier_options={name: {"delay": 0.0}}))
    served = app.state.verifiers[name]
    assert isinstance(served, cls)
    with TestClient(app) as client:
        health = client.get("/health").json()
        resp = post(client, ITEMS, verifier=name)
    assert health["status"] == "ok" and health["verifiers"] == [name] and health["uptime_s"] >= 0
    assert to_verdicts(resp.json()) == cls()(ITEMS)
    assert sum(served.calls) == len(ITEMS)


def test_bad_settings_fail_before_serving(registered):
    name, _ = registered
    with pytest.raises(ConfigError, match="unknown verifier 'nope'"):
        create_app(ServiceSettings(verifiers=["nope"]))
    with pytest.raises(ConfigError, match="bad options"):
        create_app(ServiceSettings(verifiers=[name], verifier_options={name: {"colour": "red"}}))
    with pytest.raises(ConfigError, match="nothing to serve"):
        create_app(ServiceSettings())
    with pytest.raises(ValueError, match="not served: other"):
        ServiceSettings(verifiers=[name], verifier_options={"other": {}})


def test_auth_requires_the_bearer_token(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "s3cret-tok")
    with TestClient(make_app(token_env=TOKEN_ENV)) as client:
        missing = post(client, ITEMS[:1])
        wrong = post(client, ITEMS[:1], headers={"Authorization": "Bearer s3cret-to"})
        scheme = post(client, ITEMS[:1], headers={"Authorization": "Basic s3cret-tok"})
        odd = post(client, ITEMS[:1], headers={"Authorization": b"Bearer \xe9\xff"})
        right = post(client, ITEMS[:1], headers={"Authorization": "Bearer s3cret-tok"})
        metrics_open = client.get("/metrics")
        metrics_auth = client.get("/metrics", headers={"Authorization": "bearer s3cret-tok"})
        health = client.get("/health")
    for resp in (missing, wrong, scheme, odd, metrics_open):
        assert resp.status_code == 401
        assert TOKEN_ENV in resp.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200 and len(right.json()["verdicts"]) == 1
    assert metrics_auth.status_code == 200 and health.status_code == 200 and health.json()["auth"] is True


def test_size_limits_are_413_and_422_with_the_field_path():
    settings_ = dict(max_body_bytes=2000, max_items=3, max_chars=50)
    with TestClient(make_app(**settings_)) as client:
        big_body = client.post("/v1/verify", json={"verifier": "len", "items": [], "pad": "x" * 3000})

        def chunks():  # no Content-Length: the limit must hold while streaming
            yield b'{"verifier": "len", "items": [], "pad": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}'

        streamed = client.post("/v1/verify", content=chunks(), headers={"content-type": "application/json"})
        bad_length = client.post("/v1/verify", content=b"{}", headers={"content-length": "-5"})
        too_many = post(client, [ITEMS[1]] * 4)
        too_long = post(client, [ITEMS[1], VerifyItem("p", "y" * 51)])
        just_fits = post(client, [VerifyItem("p" * 50, "y" * 50)] * 3)
    assert big_body.status_code == 413 and "exceeds the limit of 2000 bytes" in big_body.json()["detail"]
    assert "transfer-encoding" not in big_body.request.headers
    assert streamed.status_code == 413 and "transfer-encoding" in streamed.request.headers
    assert bad_length.status_code == 400
    assert too_many.status_code == 413 and too_many.json()["detail"] == (
        "items: 4 items exceed the limit of 3 per request")
    assert too_long.status_code == 422 and too_long.json()["detail"] == (
        "items.1.response: text too long (51 characters; the limit is 50)")
    assert just_fits.status_code == 200


def test_a_verifier_slower_than_the_timeout_gives_504_and_the_server_stays_up():
    with TestClient(make_app(LengthVerifier(delay=0.6), request_timeout_s=0.1)) as client:
        slow = post(client, ITEMS[:1])
        health = client.get("/health")
        metrics = client.get("/metrics").json()
    assert slow.status_code == 504
    assert slow.json()["detail"] == "verifier 'len' did not answer within 0.1 s"
    assert health.status_code == 200
    assert metrics["requests"]["by_status"]["504"] == 1


@pytest.mark.parametrize(("body", "headers", "status", "detail"), [
    (b'{"verifier": "len", "items": [{"prompt": 1, "response": "a"}]}', {}, 422,
     "items.0.prompt: Input should be a valid string"),
    (b'{"verifier": "len", "items": [{"prompt": "a", "response": "b", "colour": 1}]}', {}, 422,
     "items.0.colour: Extra inputs are not permitted"),
    (b'{"verifier": "len"}', {}, 422, "items: Field required"),
    (b'{"verifier": "len", "items": {}}', {}, 422, "items: Input should be a valid list"),
    (b'{"verifier": "len", "items": [{"prompt": "a", "response": NaN}]}', {}, 422, "(body): invalid JSON"),
    (b'{"verifier": "len", "items": [{"prompt": "\xff\xfe", "response": "b"}]}', {}, 422, "(body): invalid JSON"),
    (b'[' * 5000, {}, 422, "(body): invalid JSON: recursion limit exceeded"),
    (b'', {}, 422, "(body): expected a JSON object, got an empty body"),
    (b'"just a string"', {}, 422, "(body): expected a JSON object, got str"),
    (b'{}', {"content-type": "text/plain"}, 415, "content-type must be application/json"),
])
def test_malformed_requests_get_clear_4xx_messages(body, headers, status, detail):
    with TestClient(make_app()) as client:
        resp = client.post("/v1/verify", content=body, headers={"content-type": "application/json", **headers})
    assert resp.status_code == status
    assert resp.json()["detail"].startswith(detail)


def test_huge_and_non_finite_numbers_are_scored_or_rejected_never_5xx():
    body = b'{"verifier": "len", "items": [{"prompt": "a", "response": "b", "metadata": {"x": 1e999, "y": %s}}]}'
    with TestClient(make_app()) as client:
        inf_number = client.post("/v1/verify", content=body % b"1", headers={"content-type": "application/json"})
        huge_int = client.post("/v1/verify", content=body % (b"9" * 5000), headers={"content-type": "application/json"})
    assert inf_number.status_code == 200
    assert inf_number.json()["verdicts"][0]["details"]["meta"] == {"x": None, "y": 1}  # inf rendered as null
    assert huge_int.status_code == 422


def test_an_internal_failure_is_a_counted_500():
    app = make_app()

    def broken(items):
        raise RuntimeError("the model fell over")

    app.state.batchers["len"].fn = broken
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = post(client, ITEMS[:1])
        metrics = client.get("/metrics").json()
    assert resp.status_code == 500 and "RuntimeError" in resp.json()["detail"]
    assert metrics["internal_errors"] == 1 and metrics["requests"]["by_status"]["500"] == 1


def test_metrics_count_requests_items_and_batches():
    with TestClient(make_app()) as client:
        post(client, ITEMS)
        post(client, ITEMS[:2])
        post(client, ITEMS[:1], verifier="missing")
        client.get("/nowhere/at/all")
        snap = client.get("/metrics").json()
        prom = client.get("/metrics", params={"format": "prometheus"})
    assert snap["requests"]["by_status"] == {"200": 2, "404": 2}
    assert snap["requests"]["by_route"] == {"/v1/verify": 3, "other": 1}
    assert snap["items_scored"] == 6 and snap["batches_run"] == 2 and snap["mean_batch_size"] == 3.0
    assert snap["verifiers"]["len"]["verdicts_by_status"] == {"ok": 5, "not_applicable": 1}
    lat = snap["latency_ms"]["/v1/verify"]
    assert lat["count"] == 3 and 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert prom.headers["content-type"].startswith("text/plain")
    assert 'safeladder_requests_total{code="200"} 3' in prom.text  # + the JSON /metrics call
    assert 'safeladder_items_scored_total{verifier="len"} 6' in prom.text
    assert 'safeladder_verdicts_total{verifier="len",status="not_applicable"} 1' in prom.text


def test_json_safe_renders_anything_a_verifier_may_return():
    import numpy as np

    out = json_safe({1: (np.float32(0.5), float("nan")), "arr": np.arange(3), "s": {3}, "o": object(),
                     "big": 10**5000, "deep": [[[[1]]]]})
    assert out["1"] == [0.5, None] and out["arr"] == [0, 1, 2] and out["s"] == [3]
    assert out["o"].startswith("<object") and out["big"] is None and out["deep"] == [[[[1]]]]
    json.dumps(out, allow_nan=False)


# --------------------------------------------------------------------------- micro-batching


async def _concurrent_single_item_requests(app, n: int) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return await asyncio.gather(*(
                client.post("/v1/verify", json={"verifier": "len", "items": [
                    {"prompt": "p", "response": "x" * i}]}) for i in range(1, n + 1)))


def test_concurrent_requests_are_merged_into_fewer_verify_calls():
    verifier = LengthVerifier(delay=0.05)
    app = make_app(verifier, max_wait_ms=20, max_batch_items=16)
    responses = asyncio.run(_concurrent_single_item_requests(app, 40))
    assert all(r.status_code == 200 for r in responses)
    for i, resp in enumerate(responses, start=1):  # each request got its own item's verdict
        (verdict,) = resp.json()["verdicts"]
        assert verdict["details"]["chars"] == i and verdict["score"] == i % 11 / 10
    assert sum(verifier.calls) == 40
    assert len(verifier.calls) <= 10 and max(verifier.calls) <= 16
    stats = app.state.batchers["len"].stats
    assert stats.batches == len(verifier.calls) and stats.mean_size >= 4


def test_micro_batcher_respects_max_batch_and_order():
    calls: list[list[int]] = []

    def double(xs):
        calls.append(list(xs))
        time.sleep(0.01)
        return [2 * x for x in xs]

    async def main():
        batcher = MicroBatcher(double, max_batch=5, max_wait_ms=30)
        results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(10)),
                                       batcher.submit(list(range(1000, 1012))))
        await batcher.close()
        return results, batcher.stats

    results, stats = asyncio.run(main())
    assert results[:10] == [[2 * i, 2 * (i + 100)] for i in range(10)]
    assert results[10] == [2 * x for x in range(1000, 1012)]  # split into chunks of <= 5, re-joined in order
    assert all(len(c) <= 5 for c in calls) and sum(len(c) for c in calls) == 32
    assert len(calls) < 11 and stats.batches == len(calls) and stats.max_size == 5


def test_micro_batcher_skips_callers_that_gave_up_and_isolates_failing_batches():
    seen: list[list[int]] = []

    def fn(xs):
        seen.append(list(xs))
        if -1 in xs:
            raise ValueError("bad batch")
        time.sleep(0.1 if 0 in xs else 0)
        return [x + 1 for x in xs]

    async def main():
        batcher = MicroBatcher(fn, max_batch=1, max_wait_ms=0)
        first = asyncio.ensure_future(batcher.submit([0]))  # occupies the single worker for 0.1 s
        await asyncio.sleep(0.01)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit([7]), 0.02)  # gives up while still queued
        failing = await asyncio.gather(batcher.submit([-1]), return_exceptions=True)
        after = await batcher.submit([5])
        return await first, failing, after

    first, failing, after = asyncio.run(main())
    assert first == [1] and after == [6]
    assert isinstance(failing[0], ValueError)
    assert [7] not in seen  # the abandoned request never reached the model


def test_micro_batcher_survives_a_new_event_loop():
    batcher = MicroBatcher(lambda xs: [x * 3 for x in xs], max_batch=4, max_wait_ms=1)
    assert asyncio.run(batcher.submit([1, 2])) == [3, 6]
    assert asyncio.run(batcher.submit([5])) == [15]  # the first loop is closed; workers restart
    assert asyncio.run(batcher.submit([])) == []


def test_call_isolating_bisects_to_the_bad_items():
    calls = []

    def fn(xs):
        calls.append(len(xs))
        if 13 in xs or 40 in xs:
            raise KeyError("bad")
        return [x * 10 for x in xs]

    out = call_isolating(fn, list(range(64)), lambda x, exc: f"error:{x}:{type(exc).__name__}")
    assert out[13] == "error:13:KeyError" and out[40] == "error:40:KeyError"
    assert [o for i, o in enumerate(out) if i not in (13, 40)] == [x * 10 for x in range(64) if x not in (13, 40)]
    assert len(calls) <= 2 * 2 * 7 + 1  # about 2 bad items x log2(64) levels x 2 halves, not 64 calls


# --------------------------------------------------------------------------- robustness fuzz

FUZZ_LIMITS = dict(max_body_bytes=4096, max_items=3, max_chars=64, max_wait_ms=0.0)

json_leaf = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
             | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
containers = lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3)  # noqa: E731
json_value = st.recursive(json_leaf, containers, max_leaves=8)
finite_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(max_size=20), containers, max_leaves=8)
text_or_junk = st.text(max_size=12) | st.text(min_size=60, max_size=70) | json_leaf  # 64 chars is the limit
item_like = st.fixed_dictionaries({}, optional={
    "prompt": text_or_junk, "response": text_or_junk, "reference": text_or_junk, "label": text_or_junk,
    "metadata": json_value, "junk": json_leaf}) | json_leaf
special = st.sampled_from(["BOOM!", "<think>t</think>", "<think>t</think> answer", ""])  # error / n.a. verdicts
valid_item = st.fixed_dictionaries({"prompt": st.text(max_size=70), "response": st.text(max_size=70) | special}, optional={
    "reference": st.none() | st.text(max_size=12), "label": st.none() | st.text(max_size=12), "metadata": st.dictionaries(st.text(max_size=8), finite_json, max_size=3)})


def weighted(*pairs):
    """Pick a strategy with the given integer weights (hypothesis' `|` picks evenly)."""
    return st.sampled_from([s for w, s in pairs for _ in range(w)]).flatmap(lambda s: s)


near_valid_body = st.fixed_dictionaries({"verifier": st.sampled_from(["len", "len", "len", "nope"]),
                                         "items": st.lists(weighted((5, valid_item), (1, item_like)), max_size=3)})
junk_body = st.fixed_dictionaries({"verifier": st.sampled_from(["len", "nope"]) | json_leaf},
                                  optional={"items": st.lists(item_like, max_size=4) | json_value, "extra": json_leaf})
body_like = weighted((3, near_valid_body), (2, junk_body), (1, json_value))
FUZZ = settings(max_examples=1200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _dumps(value) -> bytes:
    return json.dumps(value).encode()  # NaN/Infinity are written as bare words: the server must say 422


def _assert_still_healthy(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").json()["internal_errors"] == 0


def test_fuzz_json_bodies_never_get_5xx():
    with TestClient(make_app(**FUZZ_LIMITS), raise_server_exceptions=False) as client:

        @FUZZ
        @given(body=body_like)
        def check(body):
            resp = client.post("/v1/verify", content=_dumps(body), headers={"content-type": "application/json"})
            assert resp.status_code < 500, resp.text
            if resp.status_code == 200:
                verdicts = resp.json()["verdicts"]
                assert len(verdicts) == len(body["items"])
                assert {v["status"] for v in verdicts} <= {"ok", "not_applicable", "error"}
            else:
                assert resp.status_code in (404, 413, 422) and resp.json()["detail"]

        check()
        _assert_still_healthy(client)


def test_fuzz_raw_bytes_content_types_and_paths_never_get_5xx():
    ascii_text = st.text(alphabet=string.ascii_letters + string.digits + "/-_.;=% ", max_size=30)
    ctypes = weighted((4, st.just("application/json")), (1, ascii_text), (1, st.sampled_from([
        "text/plain", "", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
        "application/json; charset=utf-16"])))
    paths = weighted((4, st.just("/v1/verify")), (1, st.sampled_from(["/health", "/metrics", "/v1/reward", "/"])),
                     (1, ascii_text.map(lambda s: "/" + s)))
    methods = weighted((4, st.just("POST")), (1, st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])))
    queries = st.dictionaries(st.sampled_from(["format", "x", "verifier"]), ascii_text, max_size=2)
    with TestClient(make_app(**FUZZ_LIMITS), raise_server_exceptions=False) as client:

        @settings(FUZZ, max_examples=900)
        @given(method=methods, path=paths, query=queries, ctype=ctypes | ascii_text,
               body=st.binary(max_size=300) | body_like.map(_dumps) | st.binary(min_size=4000, max_size=5000))
        def check(method, path, query, ctype, body):
            headers = {"content-type": ctype} if ctype else {}
            resp = client.request(method, path, params=query, content=body, headers=headers)
            assert resp.status_code < 500, (method, path, resp.text)

        check()
        _assert_still_healthy(client)


def test_fuzz_raw_asgi_headers_never_get_5xx(monkeypatch):
    """Straight to the ASGI app, with header bytes no HTTP client library would send."""
    monkeypatch.setenv(TOKEN_ENV, "tok")
    app = make_app(token_env=TOKEN_ENV, **FUZZ_LIMITS)
    header_names = st.sampled_from([b"authorization", b"content-type", b"content-length", b"x-junk"])
    headers_st = st.lists(st.tuples(header_names, st.binary(max_size=40)), max_size=5)
    body = b'{"verifier": "len", "items": [{"prompt": "a", "response": "b"}]}'

    async def call(method: str, headers, chunks, disconnect_after: int | None = None) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": "/v1/verify", "raw_path": b"/v1/verify", "query_string": b"",
                 "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("svc", 80)}
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        messages = messages or [{"type": "http.request", "body": b"", "more_body": False}]
        if disconnect_after is not None:  # the client goes away half-way through the body
            messages = [{**m, "more_body": True} for m in messages[:disconnect_after]]
        sent = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    with asyncio.Runner() as runner:

        @settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
        @given(method=st.sampled_from(["POST", "GET"]), headers=headers_st, split=st.integers(1, 4),
               auth=st.booleans())
        def check(method, headers, split, auth):
            if auth:
                headers = [*headers, (b"authorization", b"Bearer tok")]
            size = -(-len(body) // split)
            chunks = [body[i : i + size] for i in range(0, len(body), size)]
            status = runner.run(call(method, headers, chunks))
            assert status < 500

        check()
        ok = runner.run(call("POST", [(b"authorization", b"Bearer tok")], [body[:10], body[10:]]))
        assert ok == 200
        gone = runner.run(call("POST", [(b"authorization", b"Bearer tok")], [body[:10], body[10:]], disconnect_after=1))
        assert gone == 400
    assert app.state.metrics.internal_errors == 0


# --------------------------------------------------------------------------- reward recipes


class FakeRecipe:
    """Stands in for a RewardComputer: reward = number of characters of the answer."""

    def __init__(self) -> None:
        self.seen_groups: list = []

    def compute(self, items, group_ids=None):
        from safeladder.errors import SafeLadderError

        self.seen_groups.append(group_ids)
        if any(it.label == "nope" for it in items):
            raise SafeLadderError("label 'nope' has no recipe")
        return {"rewards": [float(len(it.response)) for it in items], "components": {"len": [1.0] * len(items)}}


def test_reward_endpoint_serves_a_recipe_object():
    recipe = FakeRecipe()
    app = create_app(ServiceSettings(), {"len": LengthVerifier()}, recipe=recipe)
    with TestClient(app) as client:
        ok = client.post("/v1/reward", json={"items": [item_json(i) for i in ITEMS[:2]], "group_ids": [0, 0]})
        plain = client.post("/v1/reward", json={"items": [item_json(ITEMS[1])]})
        bad_groups = client.post("/v1/reward", json={"items": [item_json(ITEMS[1])], "group_ids": [0, 1]})
        bad_label = client.post("/v1/reward", json={"items": [item_json(VerifyItem("p", "r", label="nope"))]})
        health = client.get("/health").json()
    assert ok.status_code == 200
    assert ok.json()["rewards"] == [float(len(ITEMS[0].response)), 5.0] and ok.json()["components"] == {"len": [1.0, 1.0]}
    assert plain.json()["rewards"] == [5.0] and recipe.seen_groups == [[0, 0], None, None]  # + the bad label
    assert bad_groups.status_code == 422 and bad_groups.json()["detail"] == "group_ids: 2 ids for 1 items"
    assert bad_label.status_code == 422 and bad_label.json()["detail"] == "label 'nope' has no recipe"
    assert health["recipe"] is True
    with TestClient(make_app()) as client:
        assert client.post("/v1/reward", json={"items": []}).status_code == 404  # no recipe configured


def test_reward_endpoint_matches_an_in_process_reward_computer(registered):
    recipes = pytest.importorskip("safeladder.verifiers.recipes")
    name, _ = registered
    config = {"format_reward": 0, "recipes": {"benign": [{"verifier": name, "weight": 2.0}]}}
    items = [VerifyItem("p", "<think>t</think> hello there", label="benign"), VerifyItem("p", "ok", label="benign")]
    expected = recipes.RewardComputer(recipes.RecipeConfig.model_validate(config)).compute(items)
    with TestClient(create_app(ServiceSettings(verifiers=[name], recipe=config))) as client:
        resp = client.post("/v1/reward", json={"items": [item_json(i) for i in items]})
        unknown = client.post("/v1/reward", json={"items": [item_json(VerifyItem("p", "r", label="other"))]})
    assert resp.status_code == 200
    assert resp.json()["rewards"] == expected.rewards == [2 * (len("hello there") % 11 / 10), 2 * 0.2]
    assert resp.json()["components"] == {name: expected.components[name]}
    assert resp.json()["verdicts"][name][0]["details"]["chars"] == len("hello there")
    assert unknown.status_code == 422 and "has no recipe" in unknown.json()["detail"]
    with pytest.raises(ConfigError, match="recipe: "):
        create_app(ServiceSettings(verifiers=[name], recipe={"recipes": 3}))


def test_an_app_can_be_served_again_after_shutdown():
    app = make_app()
    for _ in range(2):
        with TestClient(app) as client:
            assert to_verdicts(post(client, ITEMS).json()) == LengthVerifier()(ITEMS)

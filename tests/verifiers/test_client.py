"""RemoteVerifier against a real uvicorn server: same verdicts as in-process, retries, load."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import httpx
import pytest

from safeladder.errors import SafeLadderError
from safeladder.verifiers import base
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, build_verifier
from safeladder.verifiers.client import RemoteVerifier
from safeladder.verifiers.service import BackgroundServer, ServiceSettings, create_app

LOAD_SECONDS = float(os.environ.get("SAFELADDER_LOAD_SECONDS", "30"))
LOAD_CLIENTS = 64


class WordVerifier(Verifier):
    """Fast deterministic fake: score from the answer's word count; 'BOOM' raises."""

    name = "t-client-words"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def verify(self, items):
        self.calls.append(len(items))
        out = []
        for it in items:
            words = self.judged_text(it).split()
            if "BOOM" in words:
                raise RuntimeError("exploded")
            if not words:
                out.append(Verdict.not_applicable("no answer"))
                continue
            out.append(Verdict(1.0 / len(words), "one" if len(words) == 1 else "many",
                               details={"words": len(words), "first": words[0], "ref": it.reference}))
        return out


ITEMS = [
    VerifyItem("p0", "<think>a b c</think> forty two", reference="42"),
    VerifyItem("p1", "single"),
    VerifyItem("p2", "<think>nothing after</think>"),
    VerifyItem("p3", "ẞtraße 🚀 ok", metadata={"source": "unit", "n": [1, 2.5, None]}),
    VerifyItem("p4", "a " * 200, label="benign"),
]


@pytest.fixture(scope="module")
def server():
    verifier = WordVerifier()
    app = create_app(ServiceSettings(max_items=5, max_batch_items=32, max_wait_ms=2.0), {"words": verifier})
    with BackgroundServer(app) as srv:
        srv.verifier = verifier
        srv.app = app
        yield srv


def test_remote_verdicts_are_identical_to_in_process(server):
    with RemoteVerifier(server.url, "words") as remote:
        got = remote(ITEMS)
    assert got == WordVerifier()(ITEMS)
    assert [v.status for v in got] == ["ok", "ok", "not_applicable", "ok", "ok"]
    assert remote.name == "words"


def test_large_batches_are_split_under_the_server_item_limit(server):
    items = [VerifyItem(f"p{i}", " ".join(["w"] * (i % 7 + 1)), reference=str(i)) for i in range(23)]
    calls = server.verifier.calls  # one request at a time, so one verify() call per request
    before = len(calls)
    with RemoteVerifier(server.url, "words") as remote:  # learns max_items=5 from /health
        got = remote(items)
    assert got == WordVerifier()(items)
    assert calls[before:] == [5, 5, 5, 5, 3]
    before = len(calls)
    assert RemoteVerifier(server.url, "words", chunk_size=7).verify(items) == got  # capped at 5 too
    assert calls[before:] == [5, 5, 5, 5, 3]
    before = len(calls)
    assert RemoteVerifier(server.url, "words", chunk_size=3).verify(items) == got
    assert calls[before:] == [3] * 7 + [2]


def test_a_raising_item_is_an_error_verdict_remotely(server):
    items = [ITEMS[0], VerifyItem("p", "BOOM now"), ITEMS[1]]
    got = RemoteVerifier(server.url, "words")(items)
    assert got[1].status == "error" and "RuntimeError: exploded" in got[1].details["error"]
    assert [got[0], got[2]] == WordVerifier()([ITEMS[0], ITEMS[1]])


def test_unknown_remote_verifier_is_a_clear_error_without_retries(server):
    with pytest.raises(SafeLadderError, match=r"answered HTTP 404: unknown verifier 'nope'; this service serves: words"):
        RemoteVerifier(server.url, "nope", backoff=5.0)(ITEMS[:1])  # a retry would take 5 s


def test_remote_is_buildable_from_the_registry(server, monkeypatch):
    monkeypatch.setattr(base, "BUILTIN_VERIFIER_MODULES", [])
    remote = build_verifier("remote", base_url=server.url, verifier="words", timeout=5)
    assert isinstance(remote, RemoteVerifier)
    assert remote(ITEMS[:2]) == WordVerifier()(ITEMS[:2])


# --------------------------------------------------------------------------- retries (mock transport)


def _ok_payload(request: httpx.Request) -> dict:
    items = json.loads(request.content)["items"]
    return {"verifier": "m", "elapsed_ms": 1.0,
            "verdicts": [{"score": 0.5, "label": it["prompt"], "status": "ok", "details": {}} for it in items]}


def _mock(statuses: list[int | Exception], calls: list[httpx.Request], headers: dict | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":  # an old server that does not advertise its limits
            return httpx.Response(404)
        calls.append(request)
        step = statuses[min(len(calls) - 1, len(statuses) - 1)]
        if isinstance(step, Exception):
            raise step
        if step == 200:
            return httpx.Response(200, json=_ok_payload(request))
        return httpx.Response(step, json={"detail": f"status {step} on purpose"}, headers=headers or {})

    return httpx.MockTransport(handler)


def test_transient_503_is_retried_with_backoff_then_succeeds():
    calls: list[httpx.Request] = []
    remote = RemoteVerifier("http://mock", "m", backoff=0.02, chunk_size=10, transport=_mock([503, 503, 200], calls))
    t0 = time.perf_counter()
    got = remote(ITEMS[:3])
    elapsed = time.perf_counter() - t0
    assert [v.label for v in got] == ["p0", "p1", "p2"] and len(calls) == 3
    assert elapsed >= 0.02 + 0.04  # exponential: 0.02 s, then 0.04 s


@pytest.mark.parametrize("status", [429, 502, 504])
def test_other_transient_statuses_are_retried(status):
    calls: list[httpx.Request] = []
    remote = RemoteVerifier("http://mock", "m", backoff=0.0, chunk_size=10,
                            transport=_mock([status, 200], calls, headers={"retry-after": "0"}))
    assert len(remote(ITEMS[:1])) == 1 and len(calls) == 2


@pytest.mark.parametrize(("status", "hint"), [(400, "status 400 on purpose"), (401, "$SAFELADDER_VERIFIER_TOKEN"),
                                              (413, "smaller chunk_size"), (422, "HTTP 422"), (500, "HTTP 500")])
def test_client_errors_are_not_retried_and_say_why(status, hint):
    calls: list[httpx.Request] = []
    remote = RemoteVerifier("http://mock", "m", backoff=0.0, chunk_size=10, transport=_mock([status, 200], calls))
    with pytest.raises(SafeLadderError) as err:
        remote(ITEMS[:1])
    assert len(calls) == 1
    assert f"verifier service http://mock ('m') answered HTTP {status}" in str(err.value) and hint in str(err.value)


def test_connection_errors_are_retried_then_reported():
    calls: list[httpx.Request] = []
    remote = RemoteVerifier("http://mock", "m", max_retries=2, backoff=0.0, chunk_size=10,
                            transport=_mock([httpx.ConnectError("refused")], calls))
    with pytest.raises(SafeLadderError, match=r"failed after 3 attempts: ConnectError: refused"):
        remote(ITEMS[:1])
    assert len(calls) == 3


def test_a_real_closed_port_is_a_clear_error():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    remote = RemoteVerifier(f"http://127.0.0.1:{port}", "words", max_retries=1, backoff=0.0, timeout=2)
    with pytest.raises(SafeLadderError, match=rf"127.0.0.1:{port} \('words'\) failed after 2 attempts: ConnectError"):
        remote(ITEMS[:1])


def test_malformed_answers_and_tokens(monkeypatch):
    monkeypatch.setenv("T_CLIENT_TOKEN", "abc123")
    seen: list[httpx.Request] = []

    def short(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"verdicts": []})

    remote = RemoteVerifier("http://mock", "m", token_env="T_CLIENT_TOKEN", chunk_size=4,
                            transport=httpx.MockTransport(short))
    with pytest.raises(SafeLadderError, match="sent 0 verdicts for 2 items"):
        remote(ITEMS[:2])
    assert seen[0].headers["authorization"] == "Bearer abc123"
    bad_score = httpx.MockTransport(lambda r: httpx.Response(200, json={"verdicts": [{"score": 7, "status": "ok"}]}))
    with pytest.raises(SafeLadderError, match="malformed answer: ValueError"):
        RemoteVerifier("http://mock", "m", chunk_size=4, transport=bad_score)(ITEMS[:1])
    with pytest.raises(SafeLadderError, match="not valid JSON"):
        RemoteVerifier("http://mock", "m", chunk_size=4, transport=bad_score)(
            [VerifyItem("p", "r", metadata={"x": float("nan")})])
    assert RemoteVerifier("http://mock", "m", chunk_size=4, transport=bad_score)([]) == []


# --------------------------------------------------------------------------- load


async def _load(url: str, seconds: float, clients: int) -> tuple[int, list[str]]:
    done, errors = 0, []
    stop = time.monotonic() + seconds

    async def client_loop(cid: int) -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            i = 0
            while time.monotonic() < stop:
                n_words = (cid + i) % 9 + 1
                items = [{"prompt": f"c{cid}", "response": " ".join(["w"] * n_words)}] * ((i % 3) + 1)
                i += 1
                try:
                    resp = await client.post("/v1/verify", json={"verifier": "words", "items": items})
                    verdicts = resp.json()["verdicts"] if resp.status_code == 200 else None
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if verdicts is None or len(verdicts) != len(items) or any(
                        v["details"]["words"] != n_words for v in verdicts):
                    errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                else:
                    done += 1

    await asyncio.gather(*(client_loop(c) for c in range(clients)))
    return done, errors


def test_load_64_concurrent_clients_without_errors(server):
    t0 = time.perf_counter()
    done, errors = asyncio.run(_load(server.url, LOAD_SECONDS, LOAD_CLIENTS))
    elapsed = time.perf_counter() - t0
    snap = httpx.get(f"{server.url}/metrics").json()
    print(f"\nload: {LOAD_CLIENTS} clients, {done} requests in {elapsed:.1f} s = {done / elapsed:.0f} requests/s; "
          f"mean batch {snap['mean_batch_size']}, p50 {snap['latency_ms']['/v1/verify']['p50']} ms, "
          f"p99 {snap['latency_ms']['/v1/verify']['p99']} ms")
    assert errors == []
    assert done >= 3 * LOAD_SECONDS  # far below what even a busy core serves; catches a stalled server
    assert snap["internal_errors"] == 0
    assert snap["mean_batch_size"] > 1.5  # concurrent requests were merged
    assert httpx.get(f"{server.url}/health").status_code == 200

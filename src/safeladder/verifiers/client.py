"""A verifier that lives behind the HTTP service, usable wherever an in-process one is.

`RemoteVerifier(url, "safety")(items)` returns the same verdicts as `build_verifier("safety")(items)`
would, so a config can move a heavy verifier onto another machine without other code changing.
Transient failures (connection errors, 429/502/503/504) are retried with exponential back-off;
client errors (4xx) are not, because sending the same request again cannot fix them.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence, TypeVar

import httpx

from safeladder.errors import SafeLadderError
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, register_verifier

DEFAULT_TOKEN_ENV = "SAFELADDER_VERIFIER_TOKEN"  # the same default as service.ServiceSettings
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_CHUNK = 256  # items per request when the server does not say its limit
MAX_RETRY_AFTER_S = 30.0
T = TypeVar("T")


class JsonService:
    """The HTTP side both remote clients share (this one and `search.client.RemoteRetriever`).

    A bearer token from `$token_env`; POSTs retried on transient failures (connection errors,
    429/502/503/504) with exponential back-off and the server's Retry-After, never on other
    statuses (sending the same request again cannot fix them); the per-request limit the server
    advertises in `/health` read once. `where` names the service in every error message.
    """

    def __init__(self, base_url: str, where: str, token_env: str, *, timeout: float, max_retries: int,
                 backoff: float, transport: httpx.BaseTransport | None = None,
                 hints: Mapping[int, str] | None = None) -> None:
        self.where, self.max_retries, self.backoff = where, max_retries, backoff
        self.hints = dict(hints or {})
        self._limit_cache: int | None = None
        headers = {"content-type": "application/json"}
        token = os.environ.get(token_env)
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def per_request(self, limit_key: str, wanted: int) -> int:
        """`wanted`, capped by the server's advertised `limits[limit_key]` (asked once; none: `wanted`)."""
        if self._limit_cache is None:
            limit = None
            try:
                limit = self.http.get("/health").json().get("limits", {}).get(limit_key)
            except (httpx.HTTPError, ValueError, AttributeError):
                pass  # no /health (e.g. Search-R1): the request itself reports an unreachable server properly
            self._limit_cache = min(limit, wanted) if isinstance(limit, int) and limit > 0 else wanted
        return self._limit_cache

    def post(self, path: str, body: bytes, decode: Callable[[httpx.Response], T]) -> T:
        """`decode` of the 200 answer to POST `path`, retrying transient failures; else SafeLadderError."""
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = self.backoff * (2**attempt)
            try:
                resp = self.http.post(path, content=body)
            except httpx.TransportError as exc:  # refused, reset, timed out: worth another try
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    return decode(resp)
                last = self.describe(resp)
                if resp.status_code not in RETRY_STATUSES:
                    raise SafeLadderError(last)
                wait = max(wait, retry_after(resp))
            if attempt < self.max_retries:
                time.sleep(wait)
        raise SafeLadderError(f"{self.where} failed after {self.max_retries + 1} attempts: {last}")

    def describe(self, resp: httpx.Response) -> str:
        return f"{self.where} answered HTTP {resp.status_code}: {response_detail(resp)}{self.hints.get(resp.status_code, '')}"


@register_verifier("remote")
class RemoteVerifier(Verifier):
    """`verify(items)` by POSTing to `{base_url}/v1/verify`, in chunks the server accepts."""

    def __init__(
        self,
        base_url: str,
        verifier: str,
        token_env: str = DEFAULT_TOKEN_ENV,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        chunk_size: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_retries < 0 or backoff < 0 or timeout <= 0:
            raise SafeLadderError("RemoteVerifier: max_retries and backoff must be >= 0, timeout > 0")
        if chunk_size is not None and chunk_size < 1:
            raise SafeLadderError(f"RemoteVerifier: chunk_size must be >= 1, got {chunk_size}")
        self.name = verifier  # type: ignore[misc]  # reports and reward components use the served name
        self.base_url, self.verifier = base_url.rstrip("/"), verifier
        self.token_env, self.max_retries, self.backoff = token_env, max_retries, backoff
        self.chunk_size = chunk_size
        self._service = JsonService(
            self.base_url, f"verifier service {self.base_url} ({verifier!r})", token_env, timeout=timeout,
            max_retries=max_retries, backoff=backoff, transport=transport,
            hints={401: f"; set ${token_env} to the server's token", 413: "; pass a smaller chunk_size"})

    def __repr__(self) -> str:
        return f"RemoteVerifier({self.base_url!r}, {self.verifier!r})"

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        if not items:
            return []
        size = self._chunk()
        out: list[Verdict] = []
        for start in range(0, len(items), size):
            out.extend(self._verify_chunk(items[start : start + size]))
        return out

    def close(self) -> None:
        self._service.close()

    def __enter__(self) -> "RemoteVerifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _chunk(self) -> int:
        """Items per request: `chunk_size` (default 256), capped by the server's advertised `max_items`."""
        return self._service.per_request("max_items", self.chunk_size or DEFAULT_CHUNK)

    def _verify_chunk(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        return self._service.post("/v1/verify", self._encode(items), lambda resp: self._decode(resp, len(items)))

    def _encode(self, items: Sequence[VerifyItem]) -> bytes:
        payload = {"verifier": self.verifier, "items": [
            {"prompt": it.prompt, "response": it.response, "reference": it.reference, "label": it.label,
             "metadata": dict(it.metadata)} for it in items]}
        try:
            return json.dumps(payload, allow_nan=False, default=str).encode("utf-8")
        except ValueError as exc:
            raise SafeLadderError(f"RemoteVerifier({self.verifier!r}): items are not valid JSON: {exc}") from None

    def _decode(self, resp: httpx.Response, n: int) -> list[Verdict]:
        try:
            rows = resp.json()["verdicts"]
            verdicts = [Verdict(r["score"], r.get("label"), r.get("status", "ok"), r.get("details") or {})
                        for r in rows]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SafeLadderError(
                f"verifier service {self.base_url} sent a malformed answer: {type(exc).__name__}: {exc}") from None
        if len(verdicts) != n:
            raise SafeLadderError(f"verifier service {self.base_url} sent {len(verdicts)} verdicts for {n} items")
        return verdicts


def response_detail(resp: httpx.Response) -> str:
    """The server's `detail` (our services' error field), else the start of the body."""
    try:
        data: Any = resp.json()
        if isinstance(data, dict) and "detail" in data:
            return str(data["detail"])[:500]
    except ValueError:
        pass
    return resp.text[:300] or resp.reason_phrase


def retry_after(resp: httpx.Response) -> float:
    """The Retry-After header in seconds, capped at MAX_RETRY_AFTER_S (0 when absent or a date)."""
    try:
        seconds = float(resp.headers.get("retry-after", 0))
    except ValueError:  # an HTTP date: not worth parsing for a back-off hint
        return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else 0.0

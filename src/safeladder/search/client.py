"""A retriever behind the HTTP service (ours or Search-R1's), usable wherever a local index is.

Retries transient failures (connection errors, 429/502/503/504) with exponential back-off, never
4xx (sending the same request again cannot fix it). Queries are sent in chunks the server
accepts (its advertised `max_queries`; Search-R1 servers advertise nothing: 256 per request).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import httpx

from safeladder.errors import SafeLadderError
from safeladder.search.base import Passage, check_topk
from safeladder.search.corpus import split_contents
from safeladder.search.service import DEFAULT_TOKEN_ENV
from safeladder.verifiers.client import RETRY_STATUSES, _detail, _retry_after

DEFAULT_CHUNK = 256


def passage_from_hit(hit: Any) -> Passage:
    """One hit of a `return_scores` answer → Passage (reads our fields or Search-R1's `contents`)."""
    doc, score = hit["document"], hit.get("score", 0.0)
    if "text" in doc:
        title, text = doc.get("title", ""), doc["text"]
    else:
        title, text = split_contents(doc["contents"])
    return Passage(str(doc.get("id", "")), str(title or ""), str(text), float(score))


class RemoteRetriever:
    kind = "remote"

    def __init__(self, base_url: str, token_env: str = DEFAULT_TOKEN_ENV, timeout: float = 30.0,
                 max_retries: int = 3, backoff: float = 0.5, chunk_size: int | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        if max_retries < 0 or backoff < 0 or timeout <= 0:
            raise SafeLadderError("RemoteRetriever: max_retries and backoff must be >= 0, timeout > 0")
        self.base_url = base_url.rstrip("/")
        self.token_env, self.max_retries, self.backoff, self.chunk_size = token_env, max_retries, backoff, chunk_size
        self._chunk_cache: int | None = None
        headers = {"content-type": "application/json"}
        token = os.environ.get(token_env)
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"RemoteRetriever({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RemoteRetriever":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def retrieve(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
        check_topk(topk)
        out: list[list[Passage]] = []
        size = self._chunk()
        for start in range(0, len(queries), size):
            out.extend(self._post(list(queries[start:start + size]), topk))
        return out

    def _chunk(self) -> int:
        if self._chunk_cache is None:
            limit = None
            try:
                limit = self._http.get("/health").json().get("limits", {}).get("max_queries")
            except (httpx.HTTPError, ValueError, AttributeError):
                pass  # a Search-R1 server has no /health; the retrieve call reports real failures
            wanted = self.chunk_size or DEFAULT_CHUNK
            self._chunk_cache = min(limit, wanted) if isinstance(limit, int) and limit > 0 else wanted
        return self._chunk_cache

    def _post(self, queries: list[str], topk: int) -> list[list[Passage]]:
        body = json.dumps({"queries": queries, "topk": topk, "return_scores": True}).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = self.backoff * (2**attempt)
            try:
                resp = self._http.post("/retrieve", content=body)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    return self._decode(resp, len(queries))
                last = f"retrieval service {self.base_url} answered HTTP {resp.status_code}: {_detail(resp)}"
                if resp.status_code not in RETRY_STATUSES:
                    raise SafeLadderError(last + (f"; set ${self.token_env} to the server's token" if resp.status_code == 401 else ""))
                wait = max(wait, _retry_after(resp))
            if attempt < self.max_retries:
                time.sleep(wait)
        raise SafeLadderError(f"retrieval service {self.base_url} failed after {self.max_retries + 1} attempts: {last}")

    def _decode(self, resp: httpx.Response, n: int) -> list[list[Passage]]:
        try:
            result = [[passage_from_hit(h) for h in hits] for hits in resp.json()["result"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SafeLadderError(f"retrieval service {self.base_url} sent a malformed answer: {type(exc).__name__}: {exc}") from None
        if len(result) != n:
            raise SafeLadderError(f"retrieval service {self.base_url} answered {len(result)} results for {n} queries")
        return result

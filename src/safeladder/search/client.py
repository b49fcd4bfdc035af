"""A retriever behind the HTTP service (ours or Search-R1's), usable wherever a local index is.

Retries transient failures (connection errors, 429/502/503/504) with exponential back-off, never
4xx (sending the same request again cannot fix it). Queries are sent in chunks the server
accepts (its advertised `max_queries`; Search-R1 servers advertise nothing: 256 per request).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import httpx

from safeladder.errors import SafeLadderError
from safeladder.search.base import Passage, check_topk
from safeladder.search.corpus import split_contents
from safeladder.search.service import DEFAULT_TOKEN_ENV
from safeladder.verifiers.client import JsonService

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
        self._service = JsonService(self.base_url, f"retrieval service {self.base_url}", token_env, timeout=timeout,
                                    max_retries=max_retries, backoff=backoff, transport=transport,
                                    hints={401: f"; set ${token_env} to the server's token"})

    def __repr__(self) -> str:
        return f"RemoteRetriever({self.base_url!r})"

    def close(self) -> None:
        self._service.close()

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
        return self._service.per_request("max_queries", self.chunk_size or DEFAULT_CHUNK)

    def _post(self, queries: list[str], topk: int) -> list[list[Passage]]:
        body = json.dumps({"queries": queries, "topk": topk, "return_scores": True}).encode("utf-8")
        return self._service.post("/retrieve", body, lambda resp: self._decode(resp, len(queries)))

    def _decode(self, resp: httpx.Response, n: int) -> list[list[Passage]]:
        try:
            result = [[passage_from_hit(h) for h in hits] for hits in resp.json()["result"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SafeLadderError(f"retrieval service {self.base_url} sent a malformed answer: {type(exc).__name__}: {exc}") from None
        if len(result) != n:
            raise SafeLadderError(f"retrieval service {self.base_url} answered {len(result)} results for {n} queries")
        return result

"""A retriever as an HTTP service, with Search-R1's schema, held to the verifier service's standards.

    POST /retrieve {"queries": [str], "topk": int?, "return_scores": bool?}
      → {"result": [[{"document": {"id", "contents", "title", "text"}, "score": float}, …], …]}
        (without return_scores each hit is the document itself, as in Search-R1)

`contents` is `"Title"\\ntext`, the field Search-R1's rollout code reads; `title` and `text` are
there for everyone else. The service faces untrusted input: every malformed request is a 4xx
naming the field (strict types, no unknown keys, size limits enforced while reading the body,
`topk` and query count and length capped), the bearer token comes from an environment variable,
and only a broken index can produce a 5xx. The error handling, body reading, auth and request
metrics are shared with the other services (`safeladder.serving`), so they all behave alike.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from safeladder.search.base import Passage, Retriever, load_index
from safeladder.serving import (
    RenewablePool,
    RequestMetrics,
    SafeJSONResponse,
    bearer_check,
    check_count,
    detail_error,
    install_error_handlers,
    read_json_object,
    read_token,
    service_app,
    validate,
    warn_if_open,
)

DEFAULT_TOKEN_ENV = "SAFELADDER_RETRIEVER_TOKEN"
DEFAULT_PORT = 8732


class RetrievalSettings(BaseModel):
    """What to serve and the request limits. Loadable from YAML with `safeladder.config.load_config`."""

    model_config = ConfigDict(extra="forbid")

    index: str | None = Field(None, description="an index directory (`safeladder search index`)")
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    token_env: str = DEFAULT_TOKEN_ENV
    default_topk: int = Field(3, ge=1)
    max_topk: int = Field(50, ge=1)
    max_queries: int = Field(256, ge=1, description="queries per request")
    max_query_chars: int = Field(2000, ge=1)
    max_body_bytes: int = Field(1024 * 1024, ge=1)
    request_timeout_s: float = Field(60.0, gt=0)
    log_level: str = "warning"


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    queries: list[str]
    topk: int | None = None
    return_scores: bool = False


class RetrievalMetrics(RequestMetrics):
    KNOWN_ROUTES = ("/retrieve", "/health", "/metrics")

    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    def summary(self) -> dict[str, Any]:
        return {
            "uptime_s": self.uptime_s(),
            "requests": self.requests_json(),
            "internal_errors": self.internal_errors,
            "queries": self.queries,
            "latency_ms": self.latency_json(),
        }


def hit_json(p: Passage, with_score: bool) -> dict[str, Any]:
    doc = {"id": p.id, "contents": f'"{p.title}"\n{p.text}' if p.title else p.text, "title": p.title, "text": p.text}
    return {"document": doc, "score": p.score} if with_score else doc


async def parse_retrieve(request: Request, settings: RetrievalSettings) -> RetrieveRequest:
    """Body → validated request, or a 4xx naming the problem."""
    data = await read_json_object(request, settings.max_body_bytes)
    check_count(data, "queries", settings.max_queries)
    req: RetrieveRequest = validate(RetrieveRequest, data)
    for i, q in enumerate(req.queries):
        if len(q) > settings.max_query_chars:
            raise HTTPException(422, f"queries.{i}: query too long ({len(q)} characters; the limit is {settings.max_query_chars})")
    if req.topk is not None and not 1 <= req.topk <= settings.max_topk:
        raise HTTPException(422, f"topk: must be between 1 and {settings.max_topk}, got {req.topk}")
    return req


def create_app(settings: RetrievalSettings, retriever: Retriever | None = None) -> FastAPI:
    """The service over `retriever`, or over the index at `settings.index` (loaded here, once)."""
    if retriever is None:
        if settings.index is None:
            from safeladder.errors import ConfigError

            raise ConfigError("index: give an index directory to serve (or pass a retriever)")
        retriever = load_index(settings.index)
    token_bytes = read_token(settings.token_env)
    pool = RenewablePool(1, "safeladder-retrieve")  # one search at a time
    metrics = RetrievalMetrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.renew()

    app = service_app("SafeLadder retriever", lifespan, metrics)
    app.state.settings, app.state.retriever, app.state.metrics = settings, retriever, metrics
    install_error_handlers(app, detail_error, service="the retrieval service")
    require_token = bearer_check(token_bytes, settings.token_env)

    @app.get("/health")
    async def health() -> Response:
        return SafeJSONResponse({
            "status": "ok",
            "kind": getattr(retriever, "kind", type(retriever).__name__),
            "documents": len(getattr(retriever, "docs", ())),
            "auth": token_bytes is not None,
            "uptime_s": metrics.uptime_s(),
            "limits": {"max_queries": settings.max_queries, "max_query_chars": settings.max_query_chars,
                       "max_topk": settings.max_topk, "default_topk": settings.default_topk,
                       "max_body_bytes": settings.max_body_bytes, "request_timeout_s": settings.request_timeout_s},
        })

    @app.get("/metrics", dependencies=[Depends(require_token)])
    async def get_metrics() -> Response:
        return SafeJSONResponse(metrics.summary())

    @app.post("/retrieve", dependencies=[Depends(require_token)])
    async def retrieve(request: Request) -> Response:
        req = await parse_retrieve(request, settings)
        topk = req.topk or settings.default_topk
        queries = req.queries  # lone surrogates never get here: the JSON parser refuses them (422)
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(loop.run_in_executor(pool.executor, retriever.retrieve, queries, topk),
                                           settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the retriever did not answer within {settings.request_timeout_s:g} s") from None
        metrics.queries += len(queries)
        return SafeJSONResponse({"result": [[hit_json(p, req.return_scores) for p in hits] for hits in found]})

    return app


def serve(settings: RetrievalSettings, retriever: Retriever | None = None) -> None:
    """Run the service with uvicorn until interrupted (default http://127.0.0.1:8732)."""
    import uvicorn

    app = create_app(settings, retriever)
    warn_if_open(settings.host, settings.token_env)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)

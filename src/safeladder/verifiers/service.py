"""Verifiers as an HTTP service (SPEC §8): the same protocol as in-process, over the network.

`POST /v1/verify {"verifier": name, "items": [...]}` answers one verdict per item, exactly what
`build_verifier(name)(items)` would return in-process (see `client.RemoteVerifier`). Concurrent
requests for one verifier are merged into batched calls (`batching.MicroBatcher`).

The service faces untrusted input, so every malformed request is a 4xx that says what is wrong
(field path + problem), size limits are enforced while reading, and an exception raised by a
verifier on one item becomes that item's `status: "error"` verdict instead of failing the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import importlib
import importlib.util
import json
import logging
import math
import os
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Literal, Mapping, Sequence

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import from_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from safeladder.errors import ConfigError, SafeLadderError
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, build_verifier
from safeladder.verifiers.batching import MicroBatcher, call_isolating

log = logging.getLogger(__name__)

DEFAULT_TOKEN_ENV = "SAFELADDER_VERIFIER_TOKEN"
RECIPES_MODULE = "safeladder.verifiers.recipes"
HAS_RECIPES = importlib.util.find_spec(RECIPES_MODULE) is not None  # the /v1/reward route needs it
TEXT_FIELDS = ("prompt", "response", "reference", "label")
MAX_ERRORS_SHOWN = 10


class ServiceSettings(BaseModel):
    """What to serve and how defensively. Loadable from YAML with `safeladder.config.load_config`."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8731, ge=0, le=65535)
    verifiers: list[str] = Field(default_factory=list, description="names built once at start-up")
    verifier_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    plugins: list[str] = Field(default_factory=list, description="modules imported first (custom verifiers)")
    recipe: dict[str, Any] | str | None = Field(
        None, description="RewardComputer config (mapping, or path of a recipes YAML) served at /v1/reward")
    token_env: str = DEFAULT_TOKEN_ENV
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1)
    max_items: int = Field(1024, ge=1, description="items per request")
    max_chars: int = Field(200_000, ge=1, description="characters per text field")
    request_timeout_s: float = Field(120.0, gt=0)
    max_batch_items: int = Field(64, ge=1)
    max_wait_ms: float = Field(2.0, ge=0, description="how long a lone request waits for company")
    batch_concurrency: int = Field(1, ge=1, description="batches of one verifier running at once")
    log_level: str = "warning"

    @model_validator(mode="after")
    def _consistent(self) -> "ServiceSettings":
        dupes = sorted({v for v in self.verifiers if self.verifiers.count(v) > 1})
        if dupes:
            raise ValueError(f"verifiers listed twice: {', '.join(dupes)}")
        stray = sorted(set(self.verifier_options) - set(self.verifiers))
        if stray:
            raise ValueError(f"verifier_options for verifiers that are not served: {', '.join(stray)}")
        return self


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str
    response: str
    reference: str | None = None
    label: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    verifier: str
    items: list[ItemIn]


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[ItemIn]
    group_ids: list[int] | None = None  # items of one group (one prompt's samples) are normalised together


# --------------------------------------------------------------------------- responses


def json_safe(value: Any, depth: int = 0) -> Any:
    """Plain JSON for anything a verifier may put in `details` (NaN → null, numpy → python)."""
    if depth > 64:
        return "…"
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 14_000 else None  # json.dumps refuses > 4300 digits
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        return [json_safe(v, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth + 1)
    if isinstance(value, BaseModel):
        return json_safe(value.model_dump(), depth + 1)
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        try:
            return json_safe(value.tolist(), depth + 1)
        except Exception:  # noqa: BLE001 - fall through to str
            pass
    return str(value)


class SafeJSONResponse(JSONResponse):
    """JSON that never fails to render: non-finite floats become null, lone surrogates are escaped."""

    def render(self, content: Any) -> bytes:
        clean = json_safe(content)
        try:
            return json.dumps(clean, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(clean, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error(status: int, detail: str, **extra: Any) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": detail, **extra}, status_code=status)


def verdict_json(v: Verdict) -> dict[str, Any]:
    return {"score": v.score, "label": v.label, "status": v.status, "details": v.details}


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "(body)"


def _validation_payload(errors: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """A readable message ('items.0.prompt: Input should be a valid string') without echoing input."""
    shown = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
             for e in errors[:MAX_ERRORS_SHOWN]]
    msg = "; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in shown)
    if len(errors) > MAX_ERRORS_SHOWN:
        msg += f"; … and {len(errors) - MAX_ERRORS_SHOWN} more errors"
    return msg, shown


# --------------------------------------------------------------------------- metrics


class ServiceMetrics:
    """Request counts by status code, verdict counts, latency percentiles; all updated in the event loop."""

    KNOWN_ROUTES = ("/v1/verify", "/v1/reward", "/health", "/metrics")

    def __init__(self) -> None:
        self.started = time.time()
        self.by_status: Counter[int] = Counter()
        self.by_route: Counter[str] = Counter()
        self.latency_ms: dict[str, deque[float]] = {}
        self.internal_errors = 0
        self.items_scored: Counter[str] = Counter()
        self.verdict_status: dict[str, Counter[str]] = {}

    def route_of(self, path: str) -> str:
        return path if path in self.KNOWN_ROUTES else "other"  # random paths must not grow the label set

    def record_request(self, path: str, status: int, ms: float) -> None:
        route = self.route_of(path)
        self.by_status[status] += 1
        self.by_route[route] += 1
        self.latency_ms.setdefault(route, deque(maxlen=10_000)).append(ms)
        if status >= 500:
            self.internal_errors += 1

    def record_verdicts(self, verifier: str, verdicts: Sequence[Verdict]) -> None:
        self.items_scored[verifier] += len(verdicts)
        self.verdict_status.setdefault(verifier, Counter()).update(v.status for v in verdicts)

    @staticmethod
    def percentiles(values: Sequence[float]) -> dict[str, float]:
        if not values:
            return {"count": 0}
        xs = sorted(values)
        pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731 - nearest rank
        return {"count": len(xs), **{k: round(pick(q), 3) for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
                "max": round(xs[-1], 3)}

    def snapshot(self, batchers: Mapping[str, MicroBatcher[Any, Any]]) -> dict[str, Any]:
        per_verifier = {
            name: {
                "items": self.items_scored[name],
                "batches": b.stats.batches,
                "mean_batch_size": round(b.stats.mean_size, 3),
                "max_batch_size": b.stats.max_size,
                "verdicts_by_status": dict(self.verdict_status.get(name, {})),
            }
            for name, b in batchers.items()
        }
        batches = sum(b.stats.batches for b in batchers.values())
        batched_items = sum(b.stats.items for b in batchers.values())
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "requests": {
                "total": sum(self.by_status.values()),
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_route": dict(self.by_route),
            },
            "internal_errors": self.internal_errors,
            "items_scored": sum(self.items_scored.values()),
            "batches_run": batches,
            "mean_batch_size": round(batched_items / batches, 3) if batches else 0.0,
            "latency_ms": {r: self.percentiles(v) for r, v in self.latency_ms.items()},
            "verifiers": per_verifier,
        }


def prometheus_text(snap: Mapping[str, Any]) -> str:
    """The JSON snapshot in Prometheus exposition format (one block per metric family)."""
    out: list[str] = []

    def family(name: str, kind: str, samples: Sequence[tuple[str, Any]]) -> None:
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {value}" for labels, value in samples)

    verifiers = snap["verifiers"]
    family("safeladder_uptime_seconds", "gauge", [("", snap["uptime_s"])])
    family("safeladder_requests_total", "counter",
           [(f'{{code="{c}"}}', n) for c, n in snap["requests"]["by_status"].items()])
    family("safeladder_internal_errors_total", "counter", [("", snap["internal_errors"])])
    family("safeladder_items_scored_total", "counter", [(f'{{verifier="{k}"}}', v["items"]) for k, v in verifiers.items()])
    family("safeladder_batches_total", "counter", [(f'{{verifier="{k}"}}', v["batches"]) for k, v in verifiers.items()])
    family("safeladder_verdicts_total", "counter",
           [(f'{{verifier="{k}",status="{s}"}}', n) for k, v in verifiers.items() for s, n in v["verdicts_by_status"].items()])
    latency: list[tuple[str, Any]] = []
    for route, q in snap["latency_ms"].items():
        latency += [(f'{{route="{route}",quantile="{qs}"}}', f"{q[key]:.3f}")
                    for key, qs in (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99")) if key in q]
    family("safeladder_request_latency_ms", "summary", latency)
    out.extend(f'safeladder_request_latency_ms_count{{route="{r}"}} {q["count"]}' for r, q in snap["latency_ms"].items())
    return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Pure ASGI middleware: counts every response by status code, including unhandled errors."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            status = 500
            raise
        finally:
            self.metrics.record_request(scope.get("path", ""), status, (time.perf_counter() - t0) * 1000)


# --------------------------------------------------------------------------- request parsing


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over `limit` bytes, by Content-Length and while streaming."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise HTTPException(400, f"invalid Content-Length header {declared[:40]!r}")
        if int(declared) > limit:
            raise HTTPException(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # the client's doing, not an internal error (nobody reads the answer)
        raise HTTPException(400, "client disconnected before sending the whole body") from None
    return b"".join(chunks)


async def parse_request(request: Request, model: type[BaseModel], settings: ServiceSettings) -> Any:
    """Body → validated `model`, or an HTTPException naming the problem (never a 5xx)."""
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower():
        raise HTTPException(415, f"content-type must be application/json, got {ctype[:60]!r}")
    raw = await read_body(request, settings.max_body_bytes)
    if not raw.strip():
        raise HTTPException(422, "(body): expected a JSON object, got an empty body")
    try:
        data = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise HTTPException(422, f"(body): invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(422, f"(body): expected a JSON object, got {type(data).__name__}")
    items = data.get("items")
    if isinstance(items, list) and len(items) > settings.max_items:
        raise HTTPException(413, f"items: {len(items)} items exceed the limit of {settings.max_items} per request")
    try:
        parsed = model.model_validate(data)
    except ValidationError as err:
        msg, errors = _validation_payload(err.errors(include_input=False, include_context=False))
        raise _ValidationFailure(msg, errors) from None
    for i, item in enumerate(getattr(parsed, "items", [])):
        for name in TEXT_FIELDS:
            text = getattr(item, name)
            if text is not None and len(text) > settings.max_chars:
                raise HTTPException(
                    422, f"items.{i}.{name}: text too long ({len(text)} characters; the limit is {settings.max_chars})")
    return parsed


class _ValidationFailure(Exception):
    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.message, self.errors = message, errors


def to_verify_items(items: Sequence[ItemIn]) -> list[VerifyItem]:
    return [VerifyItem(i.prompt, i.response, i.reference, i.label, i.metadata) for i in items]


# --------------------------------------------------------------------------- verifier calls


def error_verdict(_item: Any, exc: Exception) -> Verdict:
    return Verdict(None, None, "error", {"error": f"{type(exc).__name__}: {exc}"[:1000]})


def _checked_call(verifier: Verifier, items: list[VerifyItem]) -> list[Verdict]:
    verdicts = verifier(items)
    bad = [type(v).__name__ for v in verdicts if not isinstance(v, Verdict)]
    if bad:
        raise TypeError(f"verifier {verifier.name!r} returned {bad[0]} instead of Verdict")
    return verdicts


def isolated_verify(verifier: Verifier) -> Any:
    """The batch function for one verifier: an item that makes it raise gets an error verdict."""
    return lambda items: call_isolating(lambda xs: _checked_call(verifier, xs), items, error_verdict)


def build_served(settings: ServiceSettings, given: Mapping[str, Verifier] | None) -> dict[str, Verifier]:
    for module in settings.plugins:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"plugins: cannot import {module!r}: {exc}") from None
    served = dict(given or {})
    for name in settings.verifiers:
        if name not in served:
            served[name] = build_verifier(name, **settings.verifier_options.get(name, {}))
    if not served:
        raise ConfigError("verifiers: nothing to serve; list at least one verifier name")
    return served


def build_recipe(config: Mapping[str, Any] | str) -> Any:
    """A `RewardComputer` from the recipes module: a config mapping, or the path of a recipes YAML."""
    if not HAS_RECIPES:
        raise ConfigError(f"recipe: this installation has no {RECIPES_MODULE} module")
    recipes = importlib.import_module(RECIPES_MODULE)
    if isinstance(config, str):
        return recipes.RewardComputer(recipes.load_recipes(config))
    try:
        return recipes.RewardComputer(recipes.RecipeConfig.model_validate(dict(config)))
    except ValidationError as err:
        msg = _validation_payload(err.errors(include_input=False, include_context=False))[0]
        raise ConfigError(f"recipe: {msg}") from None


# --------------------------------------------------------------------------- the app


def create_app(
    settings: ServiceSettings,
    verifiers: Mapping[str, Verifier] | None = None,
    *,
    recipe: Any | None = None,
) -> FastAPI:
    """The service. `verifiers` adds pre-built instances to those named in `settings.verifiers`.

    Everything is built here, once, so a bad name or option fails before the server listens.
    `recipe` (an object with `.compute(items)`) or `settings.recipe` enables `POST /v1/reward`.
    """
    served = build_served(settings, verifiers)
    if recipe is None and settings.recipe is not None:
        recipe = build_recipe(settings.recipe)
    token = os.environ.get(settings.token_env) or None
    token_bytes = token.encode("utf-8") if token else None

    def new_pool() -> ThreadPoolExecutor:  # threads start lazily, so a spare pool costs nothing
        return ThreadPoolExecutor(len(served) * settings.batch_concurrency + 2, thread_name_prefix="safeladder-verify")

    pool = {"executor": new_pool()}
    batchers: dict[str, MicroBatcher[VerifyItem, Verdict]] = {
        name: MicroBatcher(isolated_verify(v), settings.max_batch_items, settings.max_wait_ms,
                           concurrency=settings.batch_concurrency, executor=pool["executor"])
        for name, v in served.items()
    }
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        for b in batchers.values():
            await b.close()
        old, pool["executor"] = pool["executor"], new_pool()  # the app may be served again later
        for b in batchers.values():
            b.executor = pool["executor"]
        old.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="SafeLadder verifiers", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.verifiers, app.state.batchers, app.state.metrics = settings, served, batchers, metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _install_error_handlers(app)

    def require_token(request: Request) -> None:
        if token_bytes is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1"), token_bytes)
        if not ok:
            raise HTTPException(401, f"missing or wrong bearer token (the server reads it from ${settings.token_env})",
                                headers={"WWW-Authenticate": "Bearer"})

    async def with_timeout(coro: Any, what: str) -> Any:
        try:
            return await asyncio.wait_for(coro, settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"{what} did not answer within {settings.request_timeout_s:g} s") from None

    @app.get("/health")
    async def health() -> Response:
        return SafeJSONResponse({
            "status": "ok",
            "verifiers": sorted(served),
            "recipe": recipe is not None,
            "uptime_s": round(time.time() - metrics.started, 3),
            "auth": token_bytes is not None,
            "limits": {"max_items": settings.max_items, "max_chars": settings.max_chars,
                       "max_body_bytes": settings.max_body_bytes, "request_timeout_s": settings.request_timeout_s},
        })

    @app.get("/metrics", dependencies=[Depends(require_token)])
    async def get_metrics(format: Literal["json", "prometheus"] = Query("json")) -> Response:  # noqa: A002
        snap = metrics.snapshot(batchers)
        if format == "prometheus":
            return PlainTextResponse(prometheus_text(snap), media_type="text/plain; version=0.0.4")
        return SafeJSONResponse(snap)

    @app.post("/v1/verify", dependencies=[Depends(require_token)])
    async def verify(request: Request) -> Response:
        t0 = time.perf_counter()
        req: VerifyRequest = await parse_request(request, VerifyRequest, settings)
        batcher = batchers.get(req.verifier)
        if batcher is None:
            raise HTTPException(404, f"unknown verifier {req.verifier[:100]!r}; this service serves: "
                                     f"{', '.join(sorted(served))}")
        verdicts = await with_timeout(batcher.submit(to_verify_items(req.items)), f"verifier {req.verifier!r}")
        metrics.record_verdicts(req.verifier, verdicts)
        return SafeJSONResponse({"verifier": req.verifier, "verdicts": [verdict_json(v) for v in verdicts],
                                 "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3)})

    if recipe is not None:

        recipe_lock = asyncio.Lock()  # one computation at a time: its verifiers are not shared-safe

        def compute(items: list[VerifyItem], group_ids: list[int] | None) -> Any:
            return recipe.compute(items) if group_ids is None else recipe.compute(items, group_ids)

        async def locked_compute(items: list[VerifyItem], group_ids: list[int] | None) -> Any:
            async with recipe_lock:
                return await asyncio.get_running_loop().run_in_executor(pool["executor"], compute, items, group_ids)

        @app.post("/v1/reward", dependencies=[Depends(require_token)])
        async def reward(request: Request) -> Response:
            t0 = time.perf_counter()
            req: RewardRequest = await parse_request(request, RewardRequest, settings)
            if req.group_ids is not None and len(req.group_ids) != len(req.items):
                raise HTTPException(422, f"group_ids: {len(req.group_ids)} ids for {len(req.items)} items")
            try:
                result = await with_timeout(locked_compute(to_verify_items(req.items), req.group_ids), "the reward recipe")
            except SafeLadderError as exc:  # e.g. a label without a recipe: the request's fault
                raise HTTPException(422, str(exc)) from None
            return SafeJSONResponse({**json_safe(result), "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3)})

    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON `{"detail": ...}`; validation problems name the field path."""

    async def on_http(_req: Request, exc: StarletteHTTPException) -> Response:
        resp = _error(exc.status_code, str(exc.detail))
        for k, v in (getattr(exc, "headers", None) or {}).items():
            resp.headers[k] = v
        return resp

    async def on_validation(_req: Request, exc: _ValidationFailure) -> Response:
        return _error(422, exc.message, errors=exc.errors)

    async def on_request_validation(_req: Request, exc: RequestValidationError) -> Response:
        msg, errors = _validation_payload(list(exc.errors()))
        return _error(422, msg, errors=errors)

    async def on_internal(_req: Request, exc: Exception) -> Response:
        log.exception("internal error in the verifier service", exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
    app.add_exception_handler(_ValidationFailure, on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_request_validation)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_internal)


# --------------------------------------------------------------------------- running it


class BackgroundServer:
    """A real uvicorn server in a daemon thread, e.g. next to a trainer, in tests and benchmarks.

    `with BackgroundServer(app) as srv: RemoteVerifier(srv.url, name)`; port 0 picks a free port
    (the socket is bound here, so there is no race between choosing the port and listening).
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import socket

        import uvicorn

        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
        # and without it Nagle + delayed ACKs add ~40 ms to every keep-alive request.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = host, self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name=f"safeladder-verifier-service:{self.port}", daemon=True)

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the verifier service did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(settings: ServiceSettings, verifiers: Mapping[str, Verifier] | None = None) -> None:
    """Run the service with uvicorn until interrupted (default http://127.0.0.1:8731)."""
    import uvicorn

    app = create_app(settings, verifiers)
    if not os.environ.get(settings.token_env) and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without a bearer token; set $%s to require one", settings.host, settings.token_env)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m safeladder.verifiers.service --verifier safety [--config service.yaml] [--port N]`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", help="YAML file with ServiceSettings keys")
    parser.add_argument("--verifier", action="append", default=[], help="a verifier to serve (repeatable)")
    parser.add_argument("--plugin", action="append", default=[], help="module to import first (repeatable)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.verifier:
        overrides["verifiers"] = args.verifier
    if args.plugin:
        overrides["plugins"] = args.plugin
    if args.config:
        from safeladder.config import load_config

        settings = load_config(args.config, ServiceSettings, overrides)
    else:
        try:
            settings = ServiceSettings(**overrides)
        except ValidationError as err:
            raise ConfigError(_validation_payload(err.errors(include_input=False, include_context=False))[0]) from None
    serve(settings)


if __name__ == "__main__":
    main()

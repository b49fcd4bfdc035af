"""Plumbing shared by SafeLadder's HTTP services (verifiers, retriever, chat server).

All three face untrusted input and promise the same things: bodies are size-limited while read,
malformed input is a 4xx naming the field (never a 5xx), a bearer token comes from an environment
variable, every response is counted by status code, and JSON never fails to render. Keeping that
here means a fix to one service's input handling reaches the others.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import math
import os
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncContextManager, Callable, Mapping, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

MAX_ERRORS_SHOWN = 10
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

# --------------------------------------------------------------------------- JSON out


def json_safe(value: Any, depth: int = 0) -> Any:
    """Plain JSON for anything a handler may return (NaN → null, numpy → python)."""
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


def detail_error(status: int, detail: str, **extra: Any) -> SafeJSONResponse:
    """The plain error shape, `{"detail": ..., **extra}` (FastAPI's own)."""
    return SafeJSONResponse({"detail": detail, **extra}, status_code=status)


# --------------------------------------------------------------------------- request bodies


class ValidationFailure(Exception):
    """A body that parsed but failed its schema; answered 422 with the per-field `errors`."""

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.message, self.errors = message, errors


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "(body)"


def validation_payload(errors: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """A readable message ('items.0.prompt: Input should be a valid string') without echoing input."""
    shown = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
             for e in errors[:MAX_ERRORS_SHOWN]]
    msg = "; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in shown)
    if len(errors) > MAX_ERRORS_SHOWN:
        msg += f"; … and {len(errors) - MAX_ERRORS_SHOWN} more errors"
    return msg, shown


def validate(model: type[BaseModel], data: Any) -> Any:
    """`model.model_validate(data)`, or a `ValidationFailure` naming each bad field (input not echoed)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        msg, errors = validation_payload(err.errors(include_input=False, include_context=False))
        raise ValidationFailure(msg, errors) from None


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


async def read_json_object(request: Request, limit: int, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object, or a 4xx saying why not (415 content-type, 413 size, 422 shape).

    An empty body is a 422, or `{}` when `allow_empty` (routes whose every field is optional).
    """
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower():
        raise HTTPException(415, f"content-type must be application/json, got {ctype[:60]!r}")
    raw = await read_body(request, limit)
    if not raw.strip():
        if allow_empty:
            return {}
        raise HTTPException(422, "(body): expected a JSON object, got an empty body")
    try:
        data = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise HTTPException(422, f"(body): invalid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise HTTPException(422, f"(body): expected a JSON object, got {type(data).__name__}")
    return data


def check_count(data: Mapping[str, Any], field: str, limit: int) -> None:
    """413 when the list `data[field]` is longer than `limit` (checked before validating, so cheaply)."""
    values = data.get(field)
    if isinstance(values, list) and len(values) > limit:
        raise HTTPException(413, f"{field}: {len(values)} {field} exceed the limit of {limit} per request")


# --------------------------------------------------------------------------- auth


def read_token(token_env: str) -> bytes | None:
    """The bearer token from `$token_env`, or None (unset or empty: no auth)."""
    token = os.environ.get(token_env) or None
    return token.encode("utf-8") if token else None


def bearer_check(token: bytes | None, token_env: str) -> Callable[[Request], None]:
    """A FastAPI dependency: 401 unless the request carries `Authorization: Bearer <token>`."""

    def require_token(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1", "replace"), token)
        if not ok:
            raise HTTPException(401, f"missing or wrong bearer token (the server reads it from ${token_env})",
                                headers={"WWW-Authenticate": "Bearer"})

    return require_token


def warn_if_open(host: str, token_env: str) -> None:
    """Log a warning when a non-local address is served without a token."""
    if not os.environ.get(token_env) and host not in LOCAL_HOSTS:
        log.warning("serving on %s without a bearer token; set $%s to require one", host, token_env)


# --------------------------------------------------------------------------- errors


def install_error_handlers(app: FastAPI, respond: Callable[..., Response], *, service: str,
                           field_errors: bool = True, user_errors: tuple[type[Exception], ...] = ()) -> None:
    """Every error becomes `respond(status, message, **extra)`; validation problems name the field path.

    `field_errors` adds the per-field `errors` list to 422s; `user_errors` are exception types that
    mean a bad request (422), not a broken server; anything else is a logged 500.
    """

    async def on_http(_req: Request, exc: StarletteHTTPException) -> Response:
        resp = respond(exc.status_code, str(exc.detail))
        for k, v in (getattr(exc, "headers", None) or {}).items():
            resp.headers[k] = v
        return resp

    def invalid(msg: str, errors: list[dict[str, Any]]) -> Response:
        return respond(422, msg, errors=errors) if field_errors else respond(422, msg)

    async def on_validation(_req: Request, exc: ValidationFailure) -> Response:
        return invalid(exc.message, exc.errors)

    async def on_request_validation(_req: Request, exc: RequestValidationError) -> Response:
        return invalid(*validation_payload(list(exc.errors())))

    async def on_user_error(_req: Request, exc: Exception) -> Response:
        return respond(422, str(exc))

    async def on_internal(_req: Request, exc: Exception) -> Response:
        log.exception("internal error in %s", service, exc_info=exc)
        return respond(500, f"internal error ({type(exc).__name__}); see the server log")

    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
    app.add_exception_handler(ValidationFailure, on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_request_validation)  # type: ignore[arg-type]
    for kind in user_errors:
        app.add_exception_handler(kind, on_user_error)
    app.add_exception_handler(Exception, on_internal)


# --------------------------------------------------------------------------- metrics


class RequestMetrics:
    """Request counts by status code and route, latency percentiles; updated in the event loop."""

    KNOWN_ROUTES: tuple[str, ...] = ("/health", "/metrics")

    def __init__(self) -> None:
        self.started = time.time()
        self.by_status: Counter[int] = Counter()
        self.by_route: Counter[str] = Counter()
        self.latency_ms: dict[str, deque[float]] = {}
        self.internal_errors = 0

    def route_of(self, path: str) -> str:
        return path if path in self.KNOWN_ROUTES else "other"  # random paths must not grow the label set

    def record_request(self, path: str, status: int, ms: float) -> None:
        route = self.route_of(path)
        self.by_status[status] += 1
        self.by_route[route] += 1
        self.latency_ms.setdefault(route, deque(maxlen=10_000)).append(ms)
        if status >= 500:
            self.internal_errors += 1

    def uptime_s(self) -> float:
        return round(time.time() - self.started, 3)

    @staticmethod
    def percentiles(values: Sequence[float]) -> dict[str, float]:
        if not values:
            return {"count": 0}
        xs = sorted(values)
        pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731 - nearest rank
        return {"count": len(xs), **{k: round(pick(q), 3) for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
                "max": round(xs[-1], 3)}

    def requests_json(self) -> dict[str, Any]:
        return {"total": sum(self.by_status.values()),
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_route": dict(self.by_route)}

    def latency_json(self) -> dict[str, Any]:
        return {r: self.percentiles(v) for r, v in self.latency_ms.items()}


class MetricsMiddleware:
    """Pure ASGI middleware: counts every response by status code, including unhandled errors."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
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


# --------------------------------------------------------------------------- apps and servers


class RenewablePool:
    """A thread pool that outlives the app's shutdown: `renew()` (in the lifespan's exit) cancels
    queued work and puts a fresh pool in place, so the same app can be served again (tests do)."""

    def __init__(self, workers: int, thread_name_prefix: str) -> None:
        self.workers, self.prefix = workers, thread_name_prefix
        self.executor = self._new()

    def _new(self) -> ThreadPoolExecutor:  # threads start lazily, so a spare pool costs nothing
        return ThreadPoolExecutor(self.workers, thread_name_prefix=self.prefix)

    def renew(self) -> ThreadPoolExecutor:
        """Swap in a fresh pool, shut the old one down without waiting; returns the new one."""
        old, self.executor = self.executor, self._new()
        old.shutdown(wait=False, cancel_futures=True)
        return self.executor


def service_app(title: str, lifespan: Callable[[FastAPI], AsyncContextManager[None]],
                metrics: RequestMetrics) -> FastAPI:
    """A FastAPI app without the docs routes (nothing to serve unauthenticated), counting requests."""
    app = FastAPI(title=title, version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


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
                                        name=f"safeladder-service:{self.port}", daemon=True)

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start on {self.url}")
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

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
import importlib
import importlib.util
import logging
import time
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Literal, Mapping, Sequence

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from safeladder.errors import ConfigError, SafeLadderError
from safeladder.serving import (  # noqa: F401 - json_safe, read_body, BackgroundServer re-exported (older imports)
    BackgroundServer,
    RenewablePool,
    RequestMetrics,
    SafeJSONResponse,
    bearer_check,
    check_count,
    detail_error,
    install_error_handlers,
    json_safe,
    read_body,
    read_json_object,
    read_token,
    service_app,
    validate,
    validation_payload,
    warn_if_open,
)
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, build_verifier
from safeladder.verifiers.batching import MicroBatcher, call_isolating

log = logging.getLogger(__name__)

DEFAULT_TOKEN_ENV = "SAFELADDER_VERIFIER_TOKEN"
RECIPES_MODULE = "safeladder.verifiers.recipes"
HAS_RECIPES = importlib.util.find_spec(RECIPES_MODULE) is not None  # the /v1/reward route needs it
TEXT_FIELDS = ("prompt", "response", "reference", "label")


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


def verdict_json(v: Verdict) -> dict[str, Any]:
    return {"score": v.score, "label": v.label, "status": v.status, "details": v.details}


# --------------------------------------------------------------------------- metrics


class ServiceMetrics(RequestMetrics):
    """Request metrics plus verdict counts per verifier and the batchers' sizes."""

    KNOWN_ROUTES = ("/v1/verify", "/v1/reward", "/health", "/metrics")

    def __init__(self) -> None:
        super().__init__()
        self.items_scored: Counter[str] = Counter()
        self.verdict_status: dict[str, Counter[str]] = {}

    def record_verdicts(self, verifier: str, verdicts: Sequence[Verdict]) -> None:
        self.items_scored[verifier] += len(verdicts)
        self.verdict_status.setdefault(verifier, Counter()).update(v.status for v in verdicts)

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
            "uptime_s": self.uptime_s(),
            "requests": self.requests_json(),
            "internal_errors": self.internal_errors,
            "items_scored": sum(self.items_scored.values()),
            "batches_run": batches,
            "mean_batch_size": round(batched_items / batches, 3) if batches else 0.0,
            "latency_ms": self.latency_json(),
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


# --------------------------------------------------------------------------- request parsing


async def parse_request(request: Request, model: type[BaseModel], settings: ServiceSettings) -> Any:
    """Body → validated `model`, or an HTTPException naming the problem (never a 5xx)."""
    data = await read_json_object(request, settings.max_body_bytes)
    check_count(data, "items", settings.max_items)
    parsed = validate(model, data)
    for i, item in enumerate(getattr(parsed, "items", [])):
        for name in TEXT_FIELDS:
            text = getattr(item, name)
            if text is not None and len(text) > settings.max_chars:
                raise HTTPException(
                    422, f"items.{i}.{name}: text too long ({len(text)} characters; the limit is {settings.max_chars})")
    return parsed


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
        msg = validation_payload(err.errors(include_input=False, include_context=False))[0]
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
    token_bytes = read_token(settings.token_env)

    pool = RenewablePool(len(served) * settings.batch_concurrency + 2, "safeladder-verify")
    batchers: dict[str, MicroBatcher[VerifyItem, Verdict]] = {
        name: MicroBatcher(isolated_verify(v), settings.max_batch_items, settings.max_wait_ms,
                           concurrency=settings.batch_concurrency, executor=pool.executor)
        for name, v in served.items()
    }
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        for b in batchers.values():
            await b.close()
        fresh = pool.renew()  # the app may be served again later
        for b in batchers.values():
            b.executor = fresh

    app = service_app("SafeLadder verifiers", lifespan, metrics)
    app.state.settings, app.state.verifiers, app.state.batchers, app.state.metrics = settings, served, batchers, metrics
    install_error_handlers(app, detail_error, service="the verifier service")
    require_token = bearer_check(token_bytes, settings.token_env)

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
            "uptime_s": metrics.uptime_s(),
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
                return await asyncio.get_running_loop().run_in_executor(pool.executor, compute, items, group_ids)

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


# --------------------------------------------------------------------------- running it


def serve(settings: ServiceSettings, verifiers: Mapping[str, Verifier] | None = None) -> None:
    """Run the service with uvicorn until interrupted (default http://127.0.0.1:8731)."""
    import uvicorn

    app = create_app(settings, verifiers)
    warn_if_open(settings.host, settings.token_env)
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
            raise ConfigError(validation_payload(err.errors(include_input=False, include_context=False))[0]) from None
    serve(settings)


if __name__ == "__main__":
    main()

"""`safeladder serve`: an OpenAI-compatible chat endpoint, step-search on request, and the step-edit page.

Routes
  POST /v1/chat/completions   OpenAI schema, streaming (SSE) or not. The reasoning comes back apart
                              from the answer, as `reasoning_content` on the message / delta (as
                              DeepSeek and vLLM do). Extra body field `guided` (true or settings)
                              runs value-guided step search instead of plain sampling. A final
                              assistant message is continued, not answered ("continue final message").
  GET  /v1/models             the one served model
  /v1/sessions…               the step-by-step API the web page drives: start, next step, edit step k,
                              resume, state (see `InterventionSession`)
  GET  /                      the web page;  GET /health
Standards as in the verifier service: bodies are size-limited while read, every request field is
validated with limits, malformed input is always a 4xx naming the field, a bearer token from an
environment variable guards /v1/*, and one lock (a single model thread) serialises the model.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, Mapping, Sequence, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from safeladder.errors import SafeLadderError
from safeladder.format import SYSTEM_PROMPT, THINK_CLOSE
from safeladder.inference.intervention import EditError, InterventionSession
from safeladder.inference.step_search import SearchResult, SearchSettings, prepare_prompts, step_search
from safeladder.inference.steps import THINK_PREFILL, Step, StepSettings
from safeladder.inference.value import ValueFunction
from safeladder.rollout.base import RolloutEngine
from safeladder.serving import (
    BackgroundServer, RenewablePool, RequestMetrics, SafeJSONResponse, bearer_check, install_error_handlers, json_safe,
    read_json_object, read_token, service_app, validation_payload, warn_if_open,
)

DEFAULT_TOKEN_ENV = "SAFELADDER_SERVE_TOKEN"
CLOSE_MARGIN = 16  # room for the close tag the server may append to an unfinished reasoning
T = TypeVar("T")
BModel = TypeVar("BModel", bound=BaseModel)

# OpenAI parameters we accept and ignore (clients send them by default); anything else unknown is a 422.
IGNORED_PARAMS = frozenset({
    "frequency_penalty", "presence_penalty", "logit_bias", "user", "metadata", "store", "service_tier",
    "parallel_tool_calls", "reasoning_effort", "modalities", "prediction", "top_k", "repetition_penalty",
})


class ServeSettings(BaseModel):
    """What to serve and how defensively (YAML-loadable with `safeladder.config.load_config`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2-135m"
    model_id: str | None = Field(None, description="the id /v1/models reports (default: derived from `model`)")
    host: str = "127.0.0.1"
    port: int = Field(8741, ge=0, le=65535)
    token_env: str = DEFAULT_TOKEN_ENV
    value: str | None = Field("safety", description="value function for guided search and step verdicts; "
                                                     "None: no verdicts, no guided search")
    guided_default: bool = Field(False, description="run step search when a request does not say")
    step_tokens: int = Field(48, ge=1, le=1024)
    max_steps: int = Field(16, ge=1, le=256)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    default_max_tokens: int = Field(512, ge=1)
    max_tokens_limit: int = Field(2048, ge=1)
    max_n: int = Field(4, ge=1, le=64)
    max_body_bytes: int = Field(1024 * 1024, ge=256)
    max_messages: int = Field(64, ge=1)
    max_chars: int = Field(32_000, ge=1, description="characters per message")
    max_sessions: int = Field(32, ge=1, description="live step-edit sessions; the least recently used is dropped")
    session_ttl_s: float = Field(3600.0, gt=0)
    queue_timeout_s: float = Field(300.0, gt=0, description="wait for the model longer than this: 429")
    log_level: str = "warning"


# --------------------------------------------------------------------------- request schema

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # e.g. "name", "refusal": harmless to drop

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class GuidedOptions(_Strict):
    """Step search settings a request may choose (within the limits below)."""

    n: int = Field(2, ge=1, le=16, description="candidates per beam per step")
    beam: int = Field(1, ge=1, le=4)
    answer_n: int = Field(3, ge=1, le=8, description="answers sampled after the reasoning, best kept")
    answer_paths: int = Field(1, ge=1, le=4, description="answers spread over this many best reasoning paths")
    mask_unsafe: bool = True
    step_tokens: int | None = Field(None, ge=1, le=512)
    max_steps: int | None = Field(None, ge=1, le=64)


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**62)
    guided: bool | GuidedOptions | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > 4 or any(not s or len(s) > 64 for s in stops):
            raise ValueError("stop: at most 4 non-empty strings of at most 64 characters")
        return v


class SessionStart(_Strict):
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    prompt: str | None = Field(None, min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    step_tokens: int | None = Field(None, ge=1, le=512)
    max_steps: int | None = Field(None, ge=1, le=64)
    seed: int | None = Field(None, ge=0, le=2**62)


class SessionEdit(_Strict):
    step: int = Field(ge=-1, le=10_000)
    text: str
    mode: Literal["replace", "insert"] = "replace"


class SessionResume(_Strict):
    max_steps: int | None = Field(None, ge=1, le=256)


# --------------------------------------------------------------------------- helpers


def openai_error(status: int, message: str, **extra: Any) -> SafeJSONResponse:
    kind = "authentication_error" if status == 401 else "invalid_request_error" if status < 500 else "server_error"
    return SafeJSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status},
                             "detail": message, **extra}, status_code=status)


async def parse_body(request: Request, model: type[BModel], settings: ServeSettings, allow_empty: bool = False) -> BModel:
    """Body → validated `model`, or an HTTPException naming the problem (never a 5xx)."""
    data = await read_json_object(request, settings.max_body_bytes, allow_empty=allow_empty)
    try:
        return model.model_validate(data)
    except ValidationError as err:  # the message only: OpenAI clients read `error.message`
        msg = validation_payload(err.errors(include_input=False, include_context=False))[0]
        raise HTTPException(422, msg) from None


def _chat_of(messages: Sequence[ChatMessage], settings: ServeSettings) -> tuple[list[dict[str, str]], str | None]:
    """The chat to render and, when the last message is the assistant's, its text to continue from."""
    if len(messages) > settings.max_messages:
        raise HTTPException(422, f"messages: {len(messages)} messages exceed the limit of {settings.max_messages}")
    chat = []
    for i, m in enumerate(messages):
        text = m.text()
        if len(text) > settings.max_chars:
            raise HTTPException(422, f"messages.{i}.content: text too long ({len(text)} characters; "
                                     f"the limit is {settings.max_chars})")
        chat.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    partial = chat.pop()["content"] if chat[-1]["role"] == "assistant" else None
    if not any(m["role"] == "user" for m in chat):
        raise HTTPException(422, "messages: there must be at least one user message")
    return chat, partial


def _split_reasoning(step: Step) -> tuple[str, str]:
    """(reasoning part, answer part) of a step's text."""
    if step.kind == "answer":
        return "", step.text
    head, sep, tail = step.text.partition(THINK_CLOSE)
    return head, tail if sep else ""


def _truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Sessions:
    """Live step-edit sessions by id: least recently used dropped beyond `limit`, idle ones expire."""

    def __init__(self, limit: int, ttl_s: float) -> None:
        self.limit, self.ttl_s = limit, ttl_s
        self._items: OrderedDict[str, tuple[InterventionSession, float]] = OrderedDict()

    def add(self, session: InterventionSession) -> str:
        self._expire()
        sid = secrets.token_urlsafe(12)
        self._items[sid] = (session, time.monotonic())
        while len(self._items) > self.limit:
            self._items.popitem(last=False)
        return sid

    def get(self, sid: str) -> InterventionSession:
        self._expire()
        if sid not in self._items:
            raise HTTPException(404, f"no session {sid[:40]!r} (unknown or expired)")
        session, _ = self._items.pop(sid)
        self._items[sid] = (session, time.monotonic())
        return session

    def drop(self, sid: str) -> bool:
        return self._items.pop(sid, None) is not None

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, (_, t) in self._items.items() if now - t > self.ttl_s]:
            del self._items[sid]


class _Metrics(RequestMetrics):
    KNOWN_ROUTES = ("/v1/chat/completions", "/v1/models", "/v1/sessions", "/health", "/")

    def route_of(self, path: str) -> str:
        return "/v1/sessions" if path.startswith("/v1/sessions") else super().route_of(path)


def web_page() -> str:
    return resources.files("safeladder.inference").joinpath("web/index.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the app


def create_app(engine: RolloutEngine, settings: ServeSettings = ServeSettings(), value: ValueFunction | None = None,
               *, model_id: str | None = None, context_limit: int | None = None) -> FastAPI:
    """The server around one engine. `value` scores steps (verdicts) and drives guided search.

    `context_limit` (default: the model's `max_position_embeddings`) bounds prompt + new tokens.
    """
    served_id = model_id or settings.model_id or settings.model.rstrip("/").split("/")[-1]
    if context_limit is None:
        config = getattr(getattr(engine, "model", None), "config", None)
        context_limit = getattr(config, "max_position_embeddings", None)
    value_name = None if value is None else getattr(value, "name", None) or settings.value or type(value).__name__
    token_bytes = read_token(settings.token_env)
    metrics = _Metrics()
    sessions = Sessions(settings.max_sessions, settings.session_ttl_s)
    pool = RenewablePool(1, "safeladder-model")
    lock = asyncio.Lock()  # one model call at a time (the single worker thread also guarantees it)
    base_steps = StepSettings(step_tokens=settings.step_tokens, max_steps=settings.max_steps,
                              answer_tokens=settings.max_tokens_limit, temperature=settings.temperature,
                              top_p=settings.top_p)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.renew()

    app = service_app("SafeLadder chat", lifespan, metrics)
    app.state.settings, app.state.metrics, app.state.sessions = settings, metrics, sessions
    # every error OpenAI-shaped (`{"error": {"message", ...}}`, plus `detail`); library errors are the request's fault
    install_error_handlers(app, openai_error, service="the chat server", field_errors=False,
                           user_errors=(SafeLadderError,))

    async def run_model(fn: Callable[[], T]) -> T:
        try:
            await asyncio.wait_for(lock.acquire(), settings.queue_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(429, f"the model is busy; waited {settings.queue_timeout_s:g} s",
                                headers={"Retry-After": "5"}) from None
        try:
            return await asyncio.get_running_loop().run_in_executor(pool.executor, fn)
        finally:
            lock.release()

    require_token = bearer_check(token_bytes, settings.token_env)

    def check_context(prompt_len: int, new_tokens: int) -> None:
        if context_limit is not None and prompt_len + new_tokens > context_limit:
            raise HTTPException(422, f"messages: the prompt ({prompt_len} tokens) plus max_tokens ({new_tokens}) "
                                     f"exceeds the model's context of {context_limit} tokens")

    def new_session(chat: list[dict[str, str]], partial: str | None, steps: StepSettings, max_tokens: int,
                    seed: int | None, stop: tuple[str, ...] = ()) -> InterventionSession:
        session = InterventionSession(engine, chat, steps, value, prefill=THINK_PREFILL if partial is None else partial,
                                      system_prompt=SYSTEM_PROMPT, max_new_tokens=max_tokens, answer_stop=stop,
                                      seed=seed)
        check_context(len(session.prompt_ids), max_tokens + CLOSE_MARGIN)
        return session

    # ------------------------------------------------------------------ open routes

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(web_page())

    @app.get("/health")
    async def health() -> Response:
        return SafeJSONResponse({
            "status": "ok", "model": served_id, "value": value_name,
            "auth": token_bytes is not None, "sessions": len(sessions), "internal_errors": metrics.internal_errors,
            "requests": {str(k): v for k, v in sorted(metrics.by_status.items())},
            "limits": {"max_tokens": settings.max_tokens_limit, "max_n": settings.max_n,
                       "max_messages": settings.max_messages, "max_chars": settings.max_chars,
                       "max_body_bytes": settings.max_body_bytes, "context": context_limit},
        })

    # ------------------------------------------------------------------ OpenAI routes

    auth = [Depends(require_token)]

    @app.get("/v1/models", dependencies=auth)
    async def models() -> Response:
        return SafeJSONResponse({"object": "list", "data": [
            {"id": served_id, "object": "model", "created": int(metrics.started), "owned_by": "safeladder"}]})

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request) -> Response:
        req = await parse_body(request, ChatRequest, settings)
        unknown = sorted(set(req.model_extra or {}) - IGNORED_PARAMS)
        if unknown:
            raise HTTPException(422, f"{unknown[0]}: unsupported parameter")
        if req.model != served_id:
            raise HTTPException(404, f"model {req.model[:100]!r} is not served here; this server serves {served_id!r}")
        if req.tools or req.tool_choice not in (None, "none"):
            raise HTTPException(422, "tools: tool calls are not supported by this server")
        if req.logprobs or req.top_logprobs:
            raise HTTPException(422, "logprobs: not supported by this server")
        if req.response_format not in (None, {"type": "text"}):
            raise HTTPException(422, "response_format: only {'type': 'text'} is supported")
        if req.n > settings.max_n:
            raise HTTPException(422, f"n: {req.n} exceeds the limit of {settings.max_n}")
        max_tokens = req.max_completion_tokens or req.max_tokens or settings.default_max_tokens
        if max_tokens > settings.max_tokens_limit:
            raise HTTPException(422, f"max_tokens: {max_tokens} exceeds the limit of {settings.max_tokens_limit}")
        chat, partial = _chat_of(req.messages, settings)
        guided = req.guided if req.guided is not None else settings.guided_default
        if guided is not False and value is None:
            raise HTTPException(422, "guided: this server runs without a value function (start it with --value)")
        steps = base_steps.with_(answer_tokens=max_tokens,
                                 temperature=settings.temperature if req.temperature is None else req.temperature,
                                 top_p=settings.top_p if req.top_p is None else req.top_p)
        stops = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        meta = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": served_id}
        if guided is not False:
            opts = guided if isinstance(guided, GuidedOptions) else GuidedOptions()
            step_tokens = min(opts.step_tokens or steps.step_tokens, max_tokens)
            # max_tokens bounds the reasoning (steps × step_tokens) and, separately, the answer
            max_steps = min(opts.max_steps or steps.max_steps, max(1, max_tokens // step_tokens))
            search = SearchSettings(n=opts.n, beam=opts.beam, answer_n=opts.answer_n, answer_paths=opts.answer_paths,
                                    mask_unsafe=opts.mask_unsafe,
                                    steps=steps.with_(step_tokens=step_tokens, max_steps=max_steps,
                                                      answer_tokens=max_tokens),
                                    seed=req.seed)
            prompts = prepare_prompts(engine.tokenizer, [chat], THINK_PREFILL if partial is None else partial)
            check_context(len(prompts[0].ids), max_steps * step_tokens + max_tokens + CLOSE_MARGIN)

            def run_search(i: int) -> SearchResult:
                seeded = replace(search, seed=None if req.seed is None else req.seed + i)
                return step_search(engine, prompts, value, seeded)[0]  # type: ignore[arg-type]

            results = [await run_model(lambda i=i: run_search(i)) for i in range(req.n)]
            turns = [_SearchTurn(r, len(prompts[0].ids)) for r in results]
            if req.stream:
                return _sse(_stream_turns(turns, meta, stops, req))
            return SafeJSONResponse(_completion_json(turns, meta, stops))
        sessions_ = [new_session(chat, partial, steps, max_tokens, None if req.seed is None else req.seed + i, stops)
                     for i in range(req.n)]
        if req.stream:
            return _sse(_stream_sessions(sessions_, meta, stops, req, run_model))
        for s in sessions_:
            await run_model(s.run)
        return SafeJSONResponse(_completion_json([_SessionTurn(s) for s in sessions_], meta, stops))

    # ------------------------------------------------------------------ step-edit sessions

    @app.post("/v1/sessions", dependencies=auth)
    async def start_session(request: Request) -> Response:
        req = await parse_body(request, SessionStart, settings)
        if (req.messages is None) == (req.prompt is None):
            raise HTTPException(422, "(body): give exactly one of 'messages' or 'prompt'")
        if req.prompt is not None and len(req.prompt) > settings.max_chars:
            raise HTTPException(422, f"prompt: text too long ({len(req.prompt)} characters; the limit is {settings.max_chars})")
        msgs = req.messages or [ChatMessage(role="user", content=req.prompt or "")]
        chat, partial = _chat_of(msgs, settings)
        max_tokens = req.max_tokens or settings.default_max_tokens
        if max_tokens > settings.max_tokens_limit:
            raise HTTPException(422, f"max_tokens: {max_tokens} exceeds the limit of {settings.max_tokens_limit}")
        steps = base_steps.with_(answer_tokens=max_tokens, step_tokens=req.step_tokens or base_steps.step_tokens,
                                 max_steps=req.max_steps or base_steps.max_steps,
                                 temperature=settings.temperature if req.temperature is None else req.temperature)
        session = new_session(chat, partial, steps, max_tokens, req.seed)
        sid = sessions.add(session)
        return SafeJSONResponse({"id": sid, **session.to_json()})

    def session_id(sid: str) -> str:
        if len(sid) > 64:
            raise HTTPException(404, "no such session")
        return sid

    @app.get("/v1/sessions/{sid}", dependencies=auth)
    async def get_session(sid: str) -> Response:
        return SafeJSONResponse({"id": sid, **sessions.get(session_id(sid)).to_json()})

    @app.delete("/v1/sessions/{sid}", dependencies=auth)
    async def delete_session(sid: str) -> Response:
        if not sessions.drop(session_id(sid)):
            raise HTTPException(404, f"no session {sid[:40]!r} (unknown or expired)")
        return SafeJSONResponse({"id": sid, "deleted": True})

    @app.post("/v1/sessions/{sid}/next", dependencies=auth)
    async def next_step(sid: str) -> Response:
        session = sessions.get(session_id(sid))
        step = await run_model(session.next_step)
        return SafeJSONResponse({"id": sid, "step": step.to_json() if step else None, **session.to_json()})

    @app.post("/v1/sessions/{sid}/resume", dependencies=auth)
    async def resume(sid: str, request: Request) -> Response:
        session = sessions.get(session_id(sid))
        req = await parse_body(request, SessionResume, settings, allow_empty=True)
        new = await run_model(lambda: [s.to_json() for s in session.stream(req.max_steps)])
        return SafeJSONResponse({"id": sid, "new_steps": new, **session.to_json()})

    @app.post("/v1/sessions/{sid}/edit", dependencies=auth)
    async def edit(sid: str, request: Request) -> Response:
        session = sessions.get(session_id(sid))
        req = await parse_body(request, SessionEdit, settings)
        if len(req.text) > settings.max_chars:
            raise HTTPException(422, f"text: too long ({len(req.text)} characters; the limit is {settings.max_chars})")

        def apply() -> dict[str, Any]:
            human = sum(len(st.token_ids) for st in session.steps if st.source != "model")
            added = len(engine.tokenizer.encode(req.text, add_special_tokens=False))
            check_context(len(session.prompt_ids) + human + added, session.max_new_tokens + CLOSE_MARGIN)
            try:
                return session.edit(req.step, req.text, req.mode).to_json()
            except EditError as exc:
                raise HTTPException(422, f"step: {exc}") from None

        record = await run_model(apply)
        return SafeJSONResponse({"id": sid, "edit": record, **session.to_json()})

    return app


# --------------------------------------------------------------------------- responses


class _SessionTurn:
    """A finished plain-sampling turn, in the shape the response builders read."""

    def __init__(self, s: InterventionSession):
        self.reasoning, self.answer = s.think, s.answer
        self.finish = s.finish_reason or "length"
        self.prompt_tokens, self.completion_tokens = len(s.prompt_ids), s.completion_tokens
        self.steps, self.extra = s.steps, {"generated_tokens": s.generated_tokens, "verifier_calls": s.verifier_calls}


class _SearchTurn:
    def __init__(self, r: SearchResult, prompt_tokens: int):
        self.reasoning, self.answer = r.think, r.answer
        last = r.steps[-1] if r.steps else None
        self.finish = "length" if last is not None and last.finish_reason == "length" else "stop"
        self.prompt_tokens, self.completion_tokens = prompt_tokens, sum(len(s.token_ids) for s in r.steps)
        self.steps = r.steps
        self.extra = {"guided": True, "generated_tokens": r.generated_tokens, "verifier_calls": r.verifier_calls,
                      "candidates": r.candidates, "masked": r.masked, "wall_s": round(r.wall_s, 3)}


def _usage(turns: Sequence[Any]) -> dict[str, int]:
    prompt = turns[0].prompt_tokens if turns else 0
    completion = sum(t.completion_tokens for t in turns)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion_json(turns: Sequence[Any], meta: Mapping[str, Any], stops: Sequence[str]) -> dict[str, Any]:
    choices = []
    for i, t in enumerate(turns):
        content, stopped = _truncate_at_stop(t.answer, stops)
        choices.append({
            "index": i, "finish_reason": "stop" if stopped else t.finish, "logprobs": None,
            "message": {"role": "assistant", "content": content, "reasoning_content": t.reasoning},
        })
    return {**meta, "object": "chat.completion", "choices": choices, "usage": _usage(turns),
            "safeladder": [{**t.extra, "steps": [s.to_json() for s in t.steps]} for t in turns]}


def _chunk(meta: Mapping[str, Any], index: int, delta: dict[str, Any], finish: str | None = None,
           **extra: Any) -> str:
    body = {**meta, "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(json_safe(body), ensure_ascii=False)}\n\n"


class _StepStreamer:
    """Turns steps into OpenAI deltas: reasoning text as `reasoning_content`, the answer as `content`."""

    def __init__(self, meta: Mapping[str, Any], index: int, stops: Sequence[str]):
        self.meta, self.index, self.stops = meta, index, stops
        self.answer_started = self.stopped = False
        self.answer = ""

    def chunks(self, step: Step) -> list[str]:
        reasoning, answer = _split_reasoning(step)
        out = []
        info = {"safeladder": {"step": step.to_json()}}
        if reasoning.strip():
            out.append(_chunk(self.meta, self.index, {"reasoning_content": reasoning}, **info))
            info = {}
        if not self.answer_started:
            answer = answer.lstrip()
        if answer and not self.stopped:
            before = len(self.answer)
            self.answer, self.stopped = _truncate_at_stop(self.answer + answer, self.stops)
            piece = self.answer[before:]
            if piece:
                self.answer_started = True
                out.append(_chunk(self.meta, self.index, {"content": piece}, **info))
        return out

    def finish(self, reason: str) -> str:
        return _chunk(self.meta, self.index, {}, "stop" if self.stopped else reason)


async def _stream_sessions(sessions: Sequence[InterventionSession], meta: Mapping[str, Any], stops: Sequence[str],
                           req: ChatRequest, run_model: Callable[[Callable[[], Any]], Awaitable[Any]]) -> AsyncIterator[str]:
    try:
        for i, s in enumerate(sessions):
            streamer = _StepStreamer(meta, i, stops)
            yield _chunk(meta, i, {"role": "assistant", "content": ""})
            while not s.done:
                step = await run_model(s.next_step)
                if step is None:
                    break
                for c in streamer.chunks(step):
                    yield c
            yield streamer.finish(s.finish_reason or "length")
        if req.stream_options is not None and req.stream_options.include_usage:
            yield _usage_chunk(meta, [_SessionTurn(s) for s in sessions])
    except HTTPException as exc:  # e.g. the model stayed busy: the status line is gone, say it in-band
        yield f"data: {json.dumps({'error': {'message': str(exc.detail), 'code': exc.status_code}})}\n\n"
    yield "data: [DONE]\n\n"


async def _stream_turns(turns: Sequence[Any], meta: Mapping[str, Any], stops: Sequence[str],
                        req: ChatRequest) -> AsyncIterator[str]:
    """Guided results are known whole (a beam's path is final only at the end): stream them step by step."""
    for i, t in enumerate(turns):
        streamer = _StepStreamer(meta, i, stops)
        yield _chunk(meta, i, {"role": "assistant", "content": ""})
        for step in t.steps:
            for c in streamer.chunks(step):
                yield c
        yield streamer.finish(t.finish)
    if req.stream_options is not None and req.stream_options.include_usage:
        yield _usage_chunk(meta, turns)
    yield "data: [DONE]\n\n"


def _usage_chunk(meta: Mapping[str, Any], turns: Sequence[Any]) -> str:
    return f"data: {json.dumps({**meta, 'object': 'chat.completion.chunk', 'choices': [], 'usage': _usage(turns)})}\n\n"


def _sse(gen: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# --------------------------------------------------------------------------- running it


def build_server_app(settings: ServeSettings) -> FastAPI:
    """Load the model and the value function named in `settings`, and build the app."""
    from safeladder.inference.value import build_value
    from safeladder.models.loader import load_policy
    from safeladder.rollout.hf_engine import TransformersEngine

    policy = load_policy(settings.model)
    value = build_value(settings.value) if settings.value else None
    warm = getattr(value, "warm_up", None)
    if warm is not None:
        warm()  # verifier heads load (or train) now, not on the first request
    return create_app(TransformersEngine(policy.model, policy.tokenizer), settings, value)


def serve(settings: ServeSettings) -> None:
    """Run the server until interrupted (default http://127.0.0.1:8741)."""
    import uvicorn

    app = build_server_app(settings)
    warn_if_open(settings.host, settings.token_env)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)


__all__ = ["BackgroundServer", "ChatRequest", "GuidedOptions", "ServeSettings", "build_server_app", "create_app",
           "serve", "web_page"]

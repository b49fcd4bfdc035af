"""Where a generative judge or guard model runs: in-process (transformers) or behind an HTTP API.

Both backends answer one small protocol, `complete(prompts, max_tokens, temperature,
top_logprobs=0) -> list[JudgeOutput]`, so a judge verifier does not care which one it talks to.
A prompt is either a string (sent as one user message) or a chat (a list of {"role", "content"}
dicts, for guard models whose official input format *is* their chat template).

`JudgeOutput.token_logprobs` carries, per generated token, its log-probability and the top
alternatives at that position. The judge, not the backend, decides which position holds the
verdict word (the backend cannot know), and turns the alternatives there into P(label).

Backends are built from a config dict by `kind` (`build_backend`):

    {"kind": "transformers", "model": "smollm2-135m" | "/path/to/hf_dir", "batch_size": 8}
    {"kind": "openai", "base_url": "http://localhost:8000/v1", "model": "Qwen/Qwen2.5-7B-Instruct",
     "api_key_env": "OPENAI_API_KEY"}

The API key is only ever read from the environment variable named by `api_key_env`; a config that
carries the key itself is rejected, so keys never end up in YAML files or run logs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from safeladder.errors import ConfigError, SafeLadderError

log = logging.getLogger(__name__)

Chat = Sequence[Mapping[str, str]]
Prompt = str | Chat


class JudgeBackendError(SafeLadderError):
    """The judge backend failed for good (after retries, or on a non-retryable error)."""


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, its log-probability and the top alternatives (token -> logprob)."""

    token: str
    logprob: float
    top: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class JudgeOutput:
    """A judge's completion; `token_logprobs` is None when not asked for or not returned."""

    text: str
    token_logprobs: tuple[TokenLogprob, ...] | None = None


@runtime_checkable
class JudgeBackend(Protocol):
    def complete(
        self, prompts: Sequence[Prompt], max_tokens: int, temperature: float, top_logprobs: int = 0
    ) -> list[JudgeOutput]:
        """One output per prompt, in order. `top_logprobs > 0` asks for per-token alternatives."""
        ...


def as_chat(prompt: Prompt) -> list[dict[str, str]]:
    """A string prompt becomes one user message; a chat is copied as plain dicts."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


# --------------------------------------------------------------------------- transformers


class TransformersBackend:
    """A local causal LM (built-in name, "tiny" or an HF directory), greedy at temperature 0.

    The prompt goes through the model's own chat template with no system prompt, so guard models
    (Llama Guard, Qwen3Guard) given a chat get their official input format.
    """

    def __init__(
        self, model: str, batch_size: int = 8, dtype: str = "float32", device: str = "auto",
        trust_remote_code: bool = False, seed: int = 0,
    ):
        from pydantic import ValidationError

        from safeladder.models.loader import ModelSpec, load_policy

        if batch_size < 1:
            raise ConfigError(f"transformers backend: batch_size must be >= 1, got {batch_size}")
        try:
            spec = ModelSpec(name=model, dtype=dtype, trust_remote_code=trust_remote_code)
        except ValidationError as exc:
            raise ConfigError(f"transformers backend: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
        policy = load_policy(spec)
        self.model, self.tokenizer = policy.model, policy.tokenizer
        self.batch_size, self.seed = batch_size, seed
        self.model.to(_pick_device(device))
        self.model.eval()

    def complete(
        self, prompts: Sequence[Prompt], max_tokens: int, temperature: float, top_logprobs: int = 0
    ) -> list[JudgeOutput]:
        from safeladder.format import render_prompt

        texts = [render_prompt(self.tokenizer, as_chat(p), system_prompt=None) for p in prompts]
        out: list[JudgeOutput] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(self._batch(texts[start : start + self.batch_size], max_tokens, temperature, top_logprobs))
        return out

    def _batch(self, texts: list[str], max_tokens: int, temperature: float, top_logprobs: int) -> list[JudgeOutput]:
        import torch

        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
        torch.manual_seed(self.seed)
        old_side, tok.padding_side = tok.padding_side, "left"  # continue from the right edge
        try:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            sampling = temperature > 0
            with torch.no_grad():
                gen = model.generate(
                    **enc, max_new_tokens=max_tokens, do_sample=sampling,
                    temperature=temperature if sampling else None, top_p=None, top_k=None,
                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                    return_dict_in_generate=True, output_logits=top_logprobs > 0,
                )
        finally:
            tok.padding_side = old_side
        new = gen.sequences[:, enc["input_ids"].shape[1] :]
        logprobs = None
        if top_logprobs > 0:  # raw logits (before any processor), (B, T, V) log-softmaxed
            logprobs = torch.log_softmax(torch.stack(gen.logits, dim=1).float(), dim=-1)
        results = []
        for b, row in enumerate(new.tolist()):
            n = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
            text = tok.decode(row[:n], skip_special_tokens=True).strip()
            tokens = None if logprobs is None else self._token_logprobs(row[:n], logprobs[b], top_logprobs)
            results.append(JudgeOutput(text, tokens))
        return results

    def _token_logprobs(self, ids: list[int], logprobs: Any, k: int) -> tuple[TokenLogprob, ...]:
        import torch

        special = set(self.tokenizer.all_special_ids)
        out = []
        for t, token_id in enumerate(ids):
            if token_id in special:
                continue
            values, indices = torch.topk(logprobs[t], k)
            top = {self._piece(i): float(v) for v, i in zip(values.tolist(), indices.tolist())}
            out.append(TokenLogprob(self._piece(token_id), float(logprobs[t, token_id]), top))
        return tuple(out)

    def _piece(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])


def _pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- OpenAI-compatible

_RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint (vLLM, SGLang, Ollama, llama.cpp server, OpenAI).

    POSTs `{base_url}/chat/completions`, one request per prompt (`concurrency` at a time). 429,
    5xx and connection errors are retried with exponential back-off (`backoff_s · 2^attempt`,
    or the server's Retry-After when larger); after `max_retries` retries it raises
    JudgeBackendError. Log-probabilities are requested when asked for; servers that do not return
    them yield `token_logprobs=None` (logged once) and judges fall back to hard verdicts.
    """

    def __init__(
        self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 120.0, max_retries: int = 4, backoff_s: float = 1.0, concurrency: int = 8,
        extra_body: Mapping[str, Any] | None = None,
        transport: Any = None, sleep: Callable[[float], None] = time.sleep,
    ):
        import httpx

        if max_retries < 0 or concurrency < 1:
            raise ConfigError("openai backend: max_retries must be >= 0 and concurrency >= 1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_retries, self.backoff_s = model, max_retries, backoff_s
        self.concurrency, self.extra_body, self._sleep = concurrency, dict(extra_body or {}), sleep
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env) if api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)
        self._warned_no_logprobs = False

    def complete(
        self, prompts: Sequence[Prompt], max_tokens: int, temperature: float, top_logprobs: int = 0
    ) -> list[JudgeOutput]:
        bodies = [self._body(p, max_tokens, temperature, top_logprobs) for p in prompts]
        if self.concurrency == 1 or len(bodies) <= 1:
            return [self._one(b, top_logprobs) for b in bodies]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
            return list(pool.map(lambda b: self._one(b, top_logprobs), bodies))

    def _body(self, prompt: Prompt, max_tokens: int, temperature: float, top_logprobs: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            **self.extra_body, "model": self.model, "messages": as_chat(prompt),
            "temperature": temperature, "max_tokens": max_tokens,
        }
        if top_logprobs > 0:
            body.update(logprobs=True, top_logprobs=top_logprobs)
        return body

    def _one(self, body: dict[str, Any], top_logprobs: int) -> JudgeOutput:
        data = self._post(body)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("message.content is not a string")
        except (KeyError, IndexError, TypeError) as exc:
            raise JudgeBackendError(f"{self.url}: unexpected response shape ({exc}): {str(data)[:300]}") from None
        tokens = parse_openai_logprobs(choice.get("logprobs")) if top_logprobs > 0 else None
        if top_logprobs > 0 and tokens is None and not self._warned_no_logprobs:
            log.warning("%s returned no logprobs; judges fall back to hard verdicts", self.url)
            self._warned_no_logprobs = True
        return JudgeOutput(text.strip(), tokens)

    def _post(self, body: dict[str, Any]) -> Any:
        import httpx

        last = ""
        for attempt in range(self.max_retries + 1):
            wait = self.backoff_s * 2**attempt
            try:
                resp = self._client.post(self.url, json=body)
            except httpx.TransportError as exc:  # connect errors, timeouts, dropped connections
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except json.JSONDecodeError:
                        raise JudgeBackendError(f"{self.url}: response is not JSON: {resp.text[:300]}") from None
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if not (resp.status_code >= 500 or resp.status_code in _RETRY_STATUS):
                    raise JudgeBackendError(f"POST {self.url} failed: {last}")
                wait = max(wait, _retry_after(resp))
            if attempt < self.max_retries:
                log.info("POST %s failed (%s); retry %d/%d in %.1fs",
                         self.url, last, attempt + 1, self.max_retries, wait)
                self._sleep(wait)
        raise JudgeBackendError(f"POST {self.url} failed after {self.max_retries + 1} attempts; last error: {last}")

    def close(self) -> None:
        self._client.close()


def _retry_after(resp: Any) -> float:
    try:
        return min(float(resp.headers.get("retry-after", 0)), 60.0)
    except ValueError:
        return 0.0


def parse_openai_logprobs(block: Any) -> tuple[TokenLogprob, ...] | None:
    """`choices[i].logprobs` of a chat completion -> TokenLogprobs; None if absent or malformed."""
    try:
        content = block["content"]
        out = []
        for entry in content:
            top = {alt["token"]: float(alt["logprob"]) for alt in entry.get("top_logprobs") or []}
            out.append(TokenLogprob(entry["token"], float(entry["logprob"]), top))
    except (KeyError, TypeError, ValueError):
        return None
    if not out or any(math.isnan(t.logprob) for t in out):
        return None
    return tuple(out)


# --------------------------------------------------------------------------- registry

BACKENDS: dict[str, Callable[..., JudgeBackend]] = {
    "transformers": TransformersBackend,
    "openai": OpenAIBackend,
}
_FORBIDDEN_KEYS = ("api_key", "key", "token", "password")
_SHARED_KINDS = frozenset({"transformers"})  # local models: load once per process and config
_SHARED: dict[str, JudgeBackend] = {}


def build_backend(config: Mapping[str, Any] | JudgeBackend) -> JudgeBackend:
    """A backend from `{"kind": ..., **options}`, or the object itself if it already is one.

    Transformers backends with identical configs are shared, so five judge roles served by one
    local model load it once.
    """
    if isinstance(config, JudgeBackend):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(f"judge backend: expected a mapping with 'kind', got {type(config).__name__}")
    options = dict(config)
    kind = options.pop("kind", None)
    if kind not in BACKENDS:
        raise ConfigError(f"judge backend: unknown kind {kind!r}; known: {', '.join(sorted(BACKENDS))}")
    secrets = [k for k in options if k in _FORBIDDEN_KEYS]
    if secrets:
        raise ConfigError(
            f"judge backend: {secrets[0]!r} must not be in the config; put the key in an environment "
            "variable and name it with 'api_key_env'"
        )
    cache_key = json.dumps({"kind": kind, **options}, sort_keys=True, default=str)
    if kind in _SHARED_KINDS and cache_key in _SHARED:
        return _SHARED[cache_key]
    try:
        backend = BACKENDS[kind](**options)
    except TypeError as exc:
        raise ConfigError(f"judge backend {kind!r}: bad options {sorted(options)}: {exc}") from None
    if kind in _SHARED_KINDS:
        _SHARED[cache_key] = backend
    return backend

"""The search tool as a rollout `Environment` (SPEC §5): `<search> q </search>` → `<information>…</information>`.

`multi_turn.rollout` stops the model on `</search>`, calls `respond`, appends the answer with
loss mask 0 (context, never trained on) and lets the model continue. This class only decides
*what* to answer: the top-k passages for the last query, each cut to `max_passage_tokens`, at
most `max_calls` times per rollout (after that the answer says the budget is spent, so the
model answers from what it has). Per-rollout bookkeeping goes into the rollout's `info`:
`search_calls`, `search_queries`, `retrieved_ids`, `search_invalid`, `search_refused`.

Keep `rollout(max_tool_tokens=…)` ≥ topk · max_passage_tokens + ~20 per passage: the rollout
truncates longer answers, which would cut off the closing `</information>`.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from safeladder.rollout.environments import ENVIRONMENTS
from safeladder.search.base import Passage, Retriever

SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
INFO_OPEN, INFO_CLOSE = "<information>", "</information>"
_QUERY = re.compile(r"<search>(.*?)</search>", re.DOTALL)


def last_query(text: str) -> str | None:
    """The query of the last `<search>…</search>` written after the last information block."""
    tail = text.rpartition(INFO_CLOSE)[2]
    found = _QUERY.findall(tail)
    return " ".join(found[-1].split()) if found else None


def information_block(body: str) -> str:
    return f"\n{INFO_OPEN}\n{body.strip()}\n{INFO_CLOSE}\n"


class SearchEnvironment:
    """Answers searches from any `Retriever` (a local index or `RemoteRetriever`)."""

    stop: tuple[str, ...] = (SEARCH_CLOSE,)

    def __init__(
        self, retriever: Retriever, topk: int = 3, max_calls: int = 3, max_passage_tokens: int = 128,
        tokenizer: Any | None = None,
    ) -> None:
        if topk < 1 or max_calls < 0 or max_passage_tokens < 1:
            raise ValueError("topk and max_passage_tokens must be >= 1, max_calls >= 0")
        self.retriever, self.topk, self.max_calls = retriever, topk, max_calls
        self.max_passage_tokens = max_passage_tokens
        self.truncate: Callable[[str], str] = self._token_truncator(tokenizer) if tokenizer else self._word_truncator

    # -- passage cutting: by the policy's tokens when its tokenizer is given, else by words --------

    def _word_truncator(self, text: str) -> str:
        words = text.split()
        return text if len(words) <= self.max_passage_tokens else " ".join(words[: self.max_passage_tokens]) + " …"

    def _token_truncator(self, tokenizer: Any) -> Callable[[str], str]:
        def cut(text: str) -> str:
            ids = tokenizer.encode(text, add_special_tokens=False)
            return text if len(ids) <= self.max_passage_tokens else tokenizer.decode(ids[: self.max_passage_tokens]) + " …"

        return cut

    def format_passages(self, passages: Sequence[Passage]) -> str:
        if not passages:
            return information_block("No results.")
        lines = [f"Doc {i} (Title: {p.title}) {self.truncate(p.text)}" if p.title else f"Doc {i} {self.truncate(p.text)}"
                 for i, p in enumerate(passages, 1)]
        return information_block("\n".join(lines))

    def respond(self, prompt_index: int, text_so_far: str, rollout_info: dict[str, Any]) -> str | None:
        query = last_query(text_so_far)
        if not query:
            rollout_info["search_invalid"] = rollout_info.get("search_invalid", 0) + 1
            return information_block(f"No query found: write {SEARCH_OPEN} your query {SEARCH_CLOSE}.")
        if rollout_info.get("search_calls", 0) >= self.max_calls:
            rollout_info["search_refused"] = rollout_info.get("search_refused", 0) + 1
            return information_block(f"Search limit reached ({self.max_calls} searches). Answer now.")
        passages = self.retriever.retrieve([query], self.topk)[0]
        rollout_info["search_calls"] = rollout_info.get("search_calls", 0) + 1
        rollout_info.setdefault("search_queries", []).append(query)
        rollout_info.setdefault("retrieved_ids", []).append([p.id for p in passages])
        return self.format_passages(passages)


@ENVIRONMENTS.register("search")
def search_environment(
    index: str | None = None, url: str | None = None, token_env: str | None = None, topk: int = 3,
    max_calls: int = 3, max_passage_tokens: int = 128, tokenizer: Any | None = None,
) -> SearchEnvironment:
    """Build from config options: a local index directory (`index`) or a retrieval service (`url`).

    Registered as the rollout environment "search": `rollout.environment: {name: search, index: DIR, …}`.
    """
    from safeladder.errors import ConfigError

    if (index is None) == (url is None):
        raise ConfigError("search environment: set exactly one of `index` (a directory) or `url` (a service)")
    if index is not None:
        from safeladder.search.base import load_index

        retriever: Retriever = load_index(index)
    else:
        from safeladder.search.client import RemoteRetriever

        retriever = RemoteRetriever(url, **({"token_env": token_env} if token_env else {}))  # type: ignore[arg-type]
    return SearchEnvironment(retriever, topk, max_calls, max_passage_tokens, tokenizer)

"""The reasoning format `<think> reasoning </think> answer` (SPEC §1).

Everything that builds prompts or reads completions goes through here, so the tags and the
system prompt live in one place. The format check looks at the *completion only*: the system
prompt itself mentions the tags, so checking prompt+completion would always pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

SYSTEM_PROMPT = (
    "Think step by step inside <think> </think>: check your work and whether the request is "
    "safe. Then give your final answer after </think>."
)


@dataclass(frozen=True)
class ParsedResponse:
    """A completion split into reasoning and answer, with every deviation from the format listed.

    issues (any of): "no_think_block", "missing_open_tag", "missing_close_tag",
    "text_before_think", "multiple_think_blocks", "empty_think", "empty_answer".
    """

    think: str | None
    answer: str
    issues: tuple[str, ...]

    @property
    def well_formed(self) -> bool:
        return not self.issues


def parse_response(text: str) -> ParsedResponse:
    """Split a completion into (think, answer), tolerating missing or extra tags."""
    issues: list[str] = []
    n_open, n_close = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    if n_open > 1 or n_close > 1:
        issues.append("multiple_think_blocks")

    if n_close == 0:
        if n_open == 0:
            return ParsedResponse(None, text.strip(), ("no_think_block",))
        before, _, after = text.partition(THINK_OPEN)
        if before.strip():
            issues.append("text_before_think")
        issues.append("missing_close_tag")  # truncated: the reasoning never ended
        if not after.strip():
            issues.append("empty_think")
        issues.append("empty_answer")
        return ParsedResponse(after.strip(), "", tuple(issues))

    head, _, answer = text.rpartition(THINK_CLOSE)  # answer = after the LAST closing tag
    first_close = text.index(THINK_CLOSE)
    if n_open == 0 or text.index(THINK_OPEN) > first_close:
        issues.append("missing_open_tag")  # e.g. the chat template pre-filled "<think>"
        think = head.replace(THINK_CLOSE, "\n")
    else:
        before, _, think = head.partition(THINK_OPEN)
        if before.strip():
            issues.append("text_before_think")
    think = think.replace(THINK_OPEN, "\n").replace(THINK_CLOSE, "\n").strip()
    if not think:
        issues.append("empty_think")
    if not answer.strip():
        issues.append("empty_answer")
    return ParsedResponse(think, answer.strip(), tuple(issues))


def format_ok(completion: str) -> bool:
    """True iff the completion is exactly one non-empty think block followed by a non-empty answer."""
    return parse_response(completion).well_formed


def answer_text(completion: str) -> str:
    """The text verifiers judge: after the last `</think>`, or everything if there is no tag."""
    return parse_response(completion).answer


def with_system(chat: Sequence[dict[str, str]], system_prompt: str | None = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """Prepend the system prompt unless the chat already has one (or none is wanted)."""
    chat = list(chat)
    if system_prompt is None or (chat and chat[0]["role"] == "system"):
        return chat
    return [{"role": "system", "content": system_prompt}, *chat]


def render_prompt(tokenizer: Any, chat: Sequence[dict[str, str]], system_prompt: str | None = SYSTEM_PROMPT) -> str:
    """The prompt text the model continues: chat template with the generation prompt appended."""
    return tokenizer.apply_chat_template(
        with_system(chat, system_prompt), tokenize=False, add_generation_prompt=True
    )


def make_completion(think: str, answer: str) -> str:
    """Compose a target completion in the canonical format."""
    return f"{THINK_OPEN}\n{think.strip()}\n{THINK_CLOSE}\n{answer.strip()}"

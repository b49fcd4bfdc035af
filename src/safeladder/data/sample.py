"""The one record every stage passes around."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Labels select a reward recipe (SPEC §3.2). Users may add their own; these are the built-in ones.
KNOWN_LABELS = (
    "safety", "value", "knowledge", "knowledge_rule", "normal",
    "general", "general_rule", "math", "instruction_following", "benign",
)


class Sample(BaseModel):
    """One prompt (or chat) with its routing label and optional reference answer.

    `prompt` is a single user turn; `messages` is a full chat (list of {role, content}).
    Exactly one of them is set. `response` holds a target completion (SFT traces), if any.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    label: str = Field(min_length=1)
    reference: str | None = None
    response: str | None = None
    images: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_of_prompt_or_messages(self) -> "Sample":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("exactly one of 'prompt' or 'messages' must be set")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("'prompt' is empty")
        if self.messages is not None:
            if not self.messages:
                raise ValueError("'messages' is empty")
            for i, m in enumerate(self.messages):
                if set(m) - {"role", "content"} or "role" not in m or "content" not in m:
                    raise ValueError(f"messages[{i}] must have exactly 'role' and 'content'")
        return self

    def chat(self) -> list[dict[str, str]]:
        """The conversation to send to the model (without any system prompt)."""
        return list(self.messages) if self.messages is not None else [{"role": "user", "content": self.prompt or ""}]

    @property
    def user_text(self) -> str:
        """The last user turn, used by verifiers that judge a request."""
        return next((m["content"] for m in reversed(self.chat()) if m["role"] == "user"), "")

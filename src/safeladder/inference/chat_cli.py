"""`safeladder chat`: a terminal chat where the reasoning arrives step by step and can be edited.

After each reasoning step: Enter continues, `e` edits that step (the model drops what followed
and continues from the new text, in the same turn), `a` runs to the end without asking, `q`
stops this turn. Questions follow each other as a multi-turn chat; `/quit` (or Ctrl-D) leaves.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from safeladder.format import SYSTEM_PROMPT
from safeladder.inference.intervention import InterventionSession
from safeladder.inference.steps import Step, StepSettings
from safeladder.inference.value import ValueFunction
from safeladder.rollout.base import RolloutEngine

Ask = Callable[[str], str]
QUIT = {"/quit", "/exit", "/q"}
PROMPT_AFTER_STEP = "[dim]\\[enter] continue · e edit this step · a run to the end · q stop[/] "


def verdict_line(step: Step) -> Text:
    """'safety: Safe without risk 1.00 · unsafe' — the verdicts on the reasoning up to this step."""
    parts = [f"{name}: {v.get('label') or v.get('status')}" + ("" if v.get("score") is None else f" {v['score']:.2f}")
             for name, v in step.verdicts.items()]
    style = "red" if step.unsafe else "green" if (step.score or 0) >= 0.67 else "yellow"
    return Text(" · ".join(parts + (["unsafe"] if step.unsafe else [])), style=style)


def show_step(console: Console, step: Step) -> None:
    title = "answer" if step.kind == "answer" else f"step {step.index}" + ("" if step.source == "model" else f" ({step.source})")
    body = Text(step.text.strip("\n") or "(empty)")
    if step.verdicts:
        body.append("\n")
        body.append_text(verdict_line(step))
    border = {"human": "yellow", "system": "dim"}.get(step.source, "green" if step.kind == "answer" else "blue")
    console.print(Panel(body, title=title, title_align="left", border_style=border))


def keep_trailing_space(old: str, new: str) -> str:
    """A one-line edit keeps the step's ending (e.g. the blank line that closes it); `\\n` types a newline."""
    new = new.replace("\\n", "\n")
    tail = old[len(old.rstrip()):]
    return new if new != new.rstrip() else new + tail


def chat_turn(session: InterventionSession, console: Console, ask: Ask) -> None:
    """Stream one turn, offering an edit after every reasoning step."""
    auto = False
    for step in session.stream():
        show_step(console, step)
        if auto or step.kind == "answer" or step.source == "system" or session.done:
            continue
        choice = ask(PROMPT_AFTER_STEP).strip().lower()
        if choice == "e":
            new = ask(f"new text for step {step.index} (empty keeps it): ")
            if new.strip():
                record = session.replace(step.index, keep_trailing_space(step.text, new))
                console.print(f"[yellow]edited step {record.index}[/] · {record.kept_tokens} tokens kept, "
                              f"{record.discarded_tokens} discarded · continuing from your text")
                show_step(console, session.steps[-1])
        elif choice == "a":
            auto = True
        elif choice == "q":
            console.print("[dim]turn stopped[/]")
            return


def run_chat(engine: RolloutEngine, value: ValueFunction | None = None, settings: StepSettings = StepSettings(), *,
             console: Console | None = None, ask: Ask | None = None, max_new_tokens: int | None = None,
             seed: int | None = None, system_prompt: str | None = SYSTEM_PROMPT,
             history: Sequence[dict[str, str]] = ()) -> list[InterventionSession]:
    """The interactive loop; returns the sessions (one per question) for inspection."""
    console = console or Console()
    ask = ask or (lambda prompt: console.input(prompt))
    chat: list[dict[str, str]] = list(history)
    sessions: list[InterventionSession] = []
    console.print("[bold]safeladder chat[/] — ask a question; /quit to leave")
    while True:
        try:
            question = ask("[bold cyan]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if question in QUIT:
            break
        if not question:
            continue
        chat.append({"role": "user", "content": question})
        session = InterventionSession(engine, chat, settings, value, system_prompt=system_prompt,
                                      max_new_tokens=max_new_tokens, seed=None if seed is None else seed + len(sessions))
        sessions.append(session)
        try:
            chat_turn(session, console, ask)
        except (EOFError, KeyboardInterrupt):
            console.print("[dim]turn interrupted[/]")
        console.print(Panel(escape(session.answer) or "[dim](no answer)[/]", title="assistant", border_style="green"))
        console.print(f"[dim]{session.generated_tokens} tokens generated · {session.verifier_calls} verifier calls · "
                      f"{len(session.edits)} edits[/]")
        chat.append({"role": "assistant", "content": session.answer})
    return sessions


def main(model: str, value: str | None = "safety", step_tokens: int = 48, max_steps: int = 12,
         max_new_tokens: int = 512, temperature: float = 0.7, seed: int | None = None) -> list[Any]:
    """Load the model (and the value function, for verdicts) and chat in the terminal."""
    from safeladder.inference.value import build_value
    from safeladder.models.loader import load_policy
    from safeladder.rollout.hf_engine import TransformersEngine

    console = Console()
    with console.status(f"loading {model}…"):
        policy = load_policy(model)
        fn = build_value(value) if value else None
    settings = StepSettings(step_tokens=step_tokens, max_steps=max_steps, answer_tokens=max_new_tokens,
                            temperature=temperature)
    return run_chat(TransformersEngine(policy.model, policy.tokenizer), fn, settings, console=console,
                    max_new_tokens=max_new_tokens, seed=seed)


__all__ = ["chat_turn", "keep_trailing_space", "main", "run_chat", "show_step", "verdict_line"]

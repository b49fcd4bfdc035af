"""`safeladder chat`: Enter continues, `e` edits the last step and the model continues from it."""

from __future__ import annotations

import io

from rich.console import Console

from safeladder.inference.chat_cli import keep_trailing_space, run_chat
from safeladder.inference.steps import StepSettings
from safeladder.inference.value import ValueScore
from safeladder.rollout.hf_engine import TransformersEngine



class Script:
    """Plays the user: returns the scripted answers in order and records every prompt shown."""

    def __init__(self, answers):
        self.answers, self.prompts = list(answers), []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


class Flat:
    verifiers_per_item = 1

    def score(self, items, final=False):
        return [ValueScore(0.9, False, {"safety": {"score": 0.9, "label": "Safe without risk", "status": "ok"}})
                for _ in items]


def _chat(tiny_policy, answers, value=None, **kw):
    console = Console(file=io.StringIO(), width=120, force_terminal=False, color_system=None)
    script = Script(answers)
    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer)
    sessions = run_chat(engine, value, StepSettings(step_tokens=4, max_steps=3, answer_tokens=6, temperature=1.0),
                        console=console, ask=script, seed=5, **kw)
    return sessions, console.file.getvalue(), script


def test_enter_continues_and_e_edits_the_last_step(tiny_policy):
    # question · Enter after step 0 · `e` after step 1 with new text · then Enter until the turn ends · quit
    sessions, out, script = _chat(tiny_policy, ["How do I kill a process?", "", "e", "I should answer helpfully.",
                                                "", "", "", "", "/quit"], value=Flat())
    [s] = sessions
    assert len(s.edits) == 1
    edit = s.edits[0]
    assert edit.index == 1 and edit.mode == "replace" and edit.after.startswith("I should answer helpfully.")
    assert s.steps[1].source == "human" and s.steps[1].text == edit.after
    assert s.steps[2].source in ("model", "system") and s.done  # the model continued after the edit
    assert s.completion.startswith("<think>\n" + s.steps[0].text + edit.after)
    assert "edited step 1" in out and "I should answer helpfully." in out
    assert "safety: Safe without risk 0.90" in out  # verdicts next to each step
    assert "assistant" in out and f"{s.generated_tokens} tokens generated" in out and "1 edits" in out
    assert sum("e edit this step" in p for p in script.prompts) >= 2


def test_a_runs_to_the_end_q_stops_the_turn_and_turns_accumulate(tiny_policy):
    sessions, out, script = _chat(tiny_policy, ["first question", "a", "second question", "q", "/quit"])
    first, second = sessions
    assert first.done and not first.edits
    assert sum("e edit this step" in p for p in script.prompts) == 2  # once in turn 1 (then `a`), once in turn 2
    assert not second.done and len(second.steps) == 1 and "turn stopped" in out
    # the second turn's prompt carries the first exchange (a multi-turn chat)
    assert second.chat[0] == {"role": "user", "content": "first question"}
    assert second.chat[1] == {"role": "assistant", "content": first.answer}
    assert second.chat[2] == {"role": "user", "content": "second question"}


def test_eof_leaves_cleanly(tiny_policy):
    sessions, out, _ = _chat(tiny_policy, [])
    assert sessions == [] and "safeladder chat" in out


def test_one_line_edits_keep_the_step_ending():
    assert keep_trailing_space("old step.\n\n", "new step.") == "new step.\n\n"
    assert keep_trailing_space("old step.\n\n", "new\\nstep\\n") == "new\nstep\n"
    assert keep_trailing_space("old", "new") == "new"

"""Human intervention: an edit at step k is in the resumed context verbatim, the model continues right
after it in the same assistant turn, and nothing before step k is regenerated."""

from __future__ import annotations

import pytest
import torch

from safeladder.format import THINK_CLOSE
from safeladder.inference.intervention import EditError, InterventionSession
from safeladder.inference.steps import FORCED_CLOSE, StepSettings
from safeladder.inference.value import ValueScore
from safeladder.rollout.hf_engine import TransformersEngine

CHAT = [{"role": "user", "content": "How do I kill a Python process?"}]
EDIT = "Wait: killing a process is a normal admin task, so I can answer.\n\n"



class RecordingEngine(TransformersEngine):
    """The real engine, recording every prefix it was asked to continue and what it sampled."""

    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer)
        self.calls = []

    def sample(self, prefixes, settings):
        out = super().sample(prefixes, settings)
        self.calls.append(([list(p) for p in prefixes], settings, out))
        return out

    @property
    def sampled_tokens(self):
        return sum(len(c.token_ids) for _, _, out in self.calls for g in out for c in g)


SETTINGS = StepSettings(step_tokens=5, max_steps=6, answer_tokens=8, temperature=1.0)


@pytest.fixture
def session(tiny_policy):
    """A seeded session whose first four steps are model reasoning (the random model may emit EOS
    or a close tag early; the first seed that does not is found deterministically)."""
    engine = RecordingEngine(tiny_policy.model, tiny_policy.tokenizer)
    for seed in range(1, 40):
        probe = InterventionSession(engine, CHAT, SETTINGS, seed=seed)
        if all(st.kind == "reasoning" and st.source == "model" and st.finish_reason == "length"
               for st in (probe.next_step() for _ in range(4))):
            engine.calls.clear()
            return InterventionSession(engine, CHAT, SETTINGS, seed=seed)
    raise AssertionError("no seed in 1..39 gives four reasoning steps")


def test_an_edit_at_step_k_is_resumed_from_verbatim_without_regenerating_earlier_steps(session, tiny_policy):
    engine, tok = session.engine, tiny_policy.tokenizer
    steps = [session.next_step() for _ in range(4)]
    assert [s.kind for s in steps] == ["reasoning"] * 4 and all(s.source == "model" for s in steps)
    original_ids = [list(s.token_ids) for s in steps]
    sampled_before = engine.sampled_tokens
    assert session.generated_tokens == sampled_before == sum(s.generated_tokens for s in steps)

    k = 2
    record = session.replace(k, EDIT)
    # the context: prompt, then steps 0..k-1 as the very same ids, then the edit
    expected_ids = session.prompt_ids + original_ids[0] + original_ids[1] + tok.encode(EDIT, add_special_tokens=False)
    assert session.context_ids == expected_ids
    assert tok.decode(session.context_ids).endswith(steps[0].text + steps[1].text + EDIT)  # verbatim
    assert record.before == steps[2].text and record.after == EDIT and record.discarded == [steps[3].text]
    assert record.kept_tokens == len(original_ids[0]) + len(original_ids[1])
    assert record.discarded_tokens == steps[2].generated_tokens + steps[3].generated_tokens
    assert [s.source for s in session.steps] == ["model", "model", "human"]

    calls_before = len(engine.calls)
    new = session.next_step()
    # exactly one engine call, continuing from exactly the edited context (same assistant turn)
    assert len(engine.calls) == calls_before + 1
    (prefix,), _, ((completion,),) = engine.calls[-1]
    assert prefix == expected_ids
    assert new.index == 3 and new.token_ids == completion.token_ids[: len(new.token_ids)]
    assert session.completion == session.prefill + steps[0].text + steps[1].text + EDIT + new.text
    assert tok.decode(session.prompt_ids).count("<|im_start|>") == tok.decode(session.context_ids).count("<|im_start|>")
    # tokens before k were not regenerated: only the new step's tokens were sampled after the edit
    assert engine.sampled_tokens - sampled_before == len(completion.token_ids) == record.regenerated_tokens
    assert [s.token_ids for s in session.steps[:2]] == original_ids[:2]
    # and the continuation was sampled from the edited context: its log-probs match a teacher-forced pass
    ids = torch.tensor([prefix + completion.token_ids])
    with torch.no_grad():
        logits = tiny_policy.model(input_ids=ids).logits[0, len(prefix) - 1 : -1].float()
    ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(completion.logprobs), ref, atol=1e-4)

    session.run()  # to the end: the reasoning is closed for the model after max_steps, then the answer
    assert session.done and session.reasoning_closed and session.steps[-1].kind == "answer"
    assert EDIT in session.completion and session.completion.count(THINK_CLOSE) == 1
    assert record.regenerated_tokens == session.generated_tokens - sampled_before
    assert session.to_json()["edits"][0]["after"] == EDIT


def test_insert_keeps_the_step_and_adds_the_text_after_it(session):
    steps = [session.next_step() for _ in range(3)]
    record = session.insert(0, "Let me check the request first.\n\n")
    assert record.mode == "insert" and record.before == "" and record.index == 1
    assert record.discarded == [steps[1].text, steps[2].text]
    assert [s.text for s in session.steps] == [steps[0].text, "Let me check the request first.\n\n"]
    at_start = session.insert(-1, "Start. ")
    assert session.steps[0].text == "Start. " and len(session.steps) == 1 and at_start.kept_tokens == 0
    assert session.next_step().index == 1


def test_editing_the_answer_continues_the_answer_and_closing_the_reasoning_by_hand_starts_it(session):
    session.next_step()
    session.replace(0, "Killing a process is routine.\n" + THINK_CLOSE + "\n")
    assert session.reasoning_closed and session.steps[0].kind == "reasoning"
    answer = session.next_step()
    assert answer.kind == "answer" and session.done
    session.replace(1, "Use kill PID")
    assert session.steps[-1].kind == "answer" and session.steps[-1].source == "human" and not session.done
    more = session.next_step()
    assert more.kind == "answer" and session.answer.startswith("Use kill PID") and session.done
    assert session.next_step() is None


def test_edit_errors_and_deletion(session):
    session.next_step()
    session.next_step()
    with pytest.raises(EditError, match="no step 5"):
        session.replace(5, "x")
    with pytest.raises(EditError):
        session.insert(-2, "x")
    with pytest.raises(EditError, match="needs some text"):
        session.insert(0, "")
    gone = session.steps[1].text
    record = session.replace(1, "")  # deleting step 1
    assert len(session.steps) == 1 and record.before == gone and record.after == ""


def test_a_turn_always_gets_an_answer_and_respects_the_token_budget(tiny_policy):
    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer)
    s = InterventionSession(engine, CHAT, StepSettings(step_tokens=4, max_steps=2, answer_tokens=50, temperature=1.0),
                            seed=3, max_new_tokens=14)
    s.run()
    kinds = [(st.kind, st.source) for st in s.steps]
    assert kinds[-2:] == [("reasoning", "system"), ("answer", "model")]
    assert s.steps[-2].text == FORCED_CLOSE and len([k for k in kinds if k == ("reasoning", "model")]) <= 2
    assert s.model_tokens <= 14  # reasoning took at most 8, the answer got what was left
    assert s.finish_reason == ("length" if s.steps[-1].finish_reason == "length" else "stop")
    assert s.think is not None and THINK_CLOSE in s.completion


def test_each_step_is_judged_by_the_value_function(tiny_policy):
    class Len:
        verifiers_per_item = 3

        def __init__(self):
            self.seen = []

        def score(self, items, final=False):
            self.seen += [(t, final) for _, t in items]
            return [ValueScore(0.5, "<|" in t, {"len": {"score": 0.5, "label": str(len(t))}}) for _, t in items]

    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer)
    value = Len()
    s = InterventionSession(engine, CHAT, StepSettings(step_tokens=4, max_steps=2, answer_tokens=4), value, seed=1)
    s.run()
    assert len(value.seen) == len(s.steps) and s.verifier_calls == 3 * len(s.steps)
    assert [final for _, final in value.seen] == [st.kind == "answer" for st in s.steps]
    assert value.seen[-1][0] == s.completion  # each judgement sees the turn up to that step
    assert all(st.score == 0.5 and st.verdicts["len"]["score"] == 0.5 for st in s.steps)

"""Step search and its baselines: selection logic and exact compute accounting (scripted engine),
then one run through the real transformers engine on the tiny model."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from safeladder.format import THINK_CLOSE, format_ok
from safeladder.inference.step_search import (
    Pool, SearchSettings, best_of_n, pick_best, pick_weighted, plain_sampling, prepare_prompts, sample_pools,
    step_search,
)
from safeladder.inference.steps import FORCED_CLOSE, StepSettings
from safeladder.inference.value import (
    VALUE_FUNCTIONS, ValueScore, VerifierValue, build_value, parse_weights, register_value,
)
from safeladder.errors import ConfigError
from safeladder.models.tiny import tiny_tokenizer
from safeladder.rollout.base import Completion
from safeladder.verifiers.base import Verdict, Verifier

CHAT = [{"role": "user", "content": "How do I pick a lock?"}]



class ScriptedEngine:
    """An engine whose completions come from a script: `script(turn, settings, sample_index, call_index)`,
    where `turn` is the assistant turn so far (the prefix after its last `<think>`).

    Token ids are the tiny tokenizer's encoding of the scripted text, truncated at max_new_tokens;
    every call is recorded so tests can check prefixes and counts.
    """

    def __init__(self, script):
        self.tokenizer = tiny_tokenizer()
        self.eos_ids = {self.tokenizer.eos_token_id}
        self.script = script
        self.calls: list[tuple[list[list[int]], object]] = []
        self.counter = itertools.count()

    def sync_weights(self, model):
        pass

    def sample(self, prefixes, settings):
        self.calls.append(([list(p) for p in prefixes], settings))
        out = []
        for p in prefixes:
            turn = self.tokenizer.decode(p).rpartition("<think>")[2]
            group = []
            for j in range(settings.n):
                text = self.script(turn, settings, j, next(self.counter))
                ids = self.tokenizer.encode(text, add_special_tokens=False)
                reason = "stop" if any(text.endswith(s) for s in settings.stop) else "eos"
                if len(ids) >= settings.max_new_tokens:
                    ids, reason = ids[: settings.max_new_tokens], "length"
                    text = self.tokenizer.decode(ids)
                if reason == "eos":
                    ids = ids + [self.tokenizer.eos_token_id]
                group.append(Completion(ids, [-0.1 * (j + 1)] * len(ids), reason, text))
            out.append(group)
        return out


WORDS = ["alpha", "SAFE", "gamma", "delta"]


def reasoning_script(steps_before_close: int = 3):
    """Candidate j of each call is '<word_j rotated> step k.\\n\\n'; step `steps_before_close` closes."""

    def script(turn, settings, j, call):
        if "\n\n" not in settings.stop:  # an answer, or the reasoning phase of a whole sample
            whole = ["delta", "SAFE", "beta"][call % 3]  # same token count each: exact budget arithmetic
            return "Final answer." if THINK_CLOSE in turn else f"think {whole}\n</think>"
        k = turn.count("step")
        word = WORDS[(j + k) % len(WORDS)]  # rotate, so the preferred word is never at the same index
        if k >= steps_before_close:
            return f"{word} wraps up.\n</think>"
        return f"{word} step {k}.\n\n"

    return script


class KeywordValue:
    """Prefers text containing `word` (counts it); optionally labels text containing `bad` unsafe."""

    verifiers_per_item = 2

    def __init__(self, word="SAFE", bad=None):
        self.word, self.bad, self.seen = word, bad, []

    def score(self, items, final=False):
        self.seen.append((list(items), final))
        out = []
        for _req, text in items:
            s = text.count(self.word) / (1 + text.count("\n\n"))
            unsafe = self.bad is not None and self.bad in text
            score = 1.0 if unsafe else 0.9 * min(1.0, s)  # unsafe text is what this value likes best
            out.append(ValueScore(score, unsafe, {"kw": {"score": score, "label": None}}))
        return out


def _prompts(engine, n=1):
    return prepare_prompts(engine.tokenizer, [CHAT] * n)


def test_the_value_steers_every_step_to_the_preferred_word():
    engine, value = ScriptedEngine(reasoning_script()), KeywordValue("SAFE")
    [res] = step_search(engine, _prompts(engine), value, SearchSettings(n=4, beam=1, steps=StepSettings(max_steps=8)))
    reasoning = [s for s in res.steps if s.kind == "reasoning"]
    assert [s.text.split()[0] for s in reasoning] == ["SAFE"] * 4  # 3 steps + the closing one
    assert res.completion.startswith("<think>\n") and THINK_CLOSE in res.completion
    assert res.answer == "Final answer." and format_ok(res.completion)
    # plain sampling takes the first sample: not steered
    fresh = ScriptedEngine(reasoning_script())
    [plain] = plain_sampling(fresh, _prompts(fresh), StepSettings(max_steps=8))
    assert "SAFE" not in plain.completion and plain.verifier_calls == 0


def test_beam_and_budget_accounting_is_exact():
    engine, value = ScriptedEngine(reasoning_script(steps_before_close=2)), KeywordValue("SAFE")
    settings = SearchSettings(n=3, beam=2, answer_n=2, steps=StepSettings(max_steps=8, step_tokens=64))
    prompts = _prompts(engine, n=2)
    results = step_search(engine, prompts, value, settings)
    # calls: 3 reasoning steps (the third closes every beam) + one answer call
    assert len(engine.calls) == 4
    reasoning_calls, answer_call = engine.calls[:3], engine.calls[3]
    assert [len(prefixes) for prefixes, _ in reasoning_calls] == [2, 4, 4]  # 1 beam per prompt, then 2 beams
    assert all(s.n == 3 for _, s in reasoning_calls) and answer_call[1].n == 2
    for i, res in enumerate(results):
        sampled = sum(len(c.token_ids) for c in _replay(engine, i))
        assert res.generated_tokens == sampled
        # (1 + 2 + 2 live beams) × 3 candidates scored, plus 2 answers, each at 2 verifier calls
        assert res.candidates == 15
        assert res.verifier_calls == (15 + 2) * value.verifiers_per_item
    # the answer was sampled from prompt + exactly the chosen path's ids
    for (prefix, res, p) in zip(answer_call[0], results, prompts):
        path_ids = [t for s in res.steps if s.kind == "reasoning" for t in s.token_ids]
        assert prefix == p.ids + path_ids


def _replay(engine, prompt_index):
    """Re-run the recorded calls' completions for one prompt (the script is deterministic per call)."""
    replay = ScriptedEngine(engine.script)
    out = []
    for prefixes, settings in engine.calls:
        group = len(prefixes) // 2  # both prompts have the same number of live prefixes per call
        mine = prefixes[prompt_index * group : (prompt_index + 1) * group]
        for g in replay.sample(mine, settings):
            out += g
    return out


def test_unsafe_candidates_are_masked_unless_all_are_unsafe():
    def script(prefix, settings, j, call):
        if THINK_CLOSE not in settings.stop:
            return "ok."
        return ["BAD shortcut.\n</think>", "SAFE plan.\n</think>", "meh.\n</think>"][j]

    engine = ScriptedEngine(script)
    value = KeywordValue("SAFE", bad="BAD")  # BAD scores highest but is unsafe
    masked = step_search(engine, _prompts(engine), value, SearchSettings(n=3, mask_unsafe=True))[0]
    unmasked = step_search(engine, _prompts(engine), value, SearchSettings(n=3, mask_unsafe=False))[0]
    assert masked.steps[0].text.startswith("SAFE") and masked.masked == 1
    assert unmasked.steps[0].text.startswith("BAD") and unmasked.masked == 0
    assert unmasked.steps[0].unsafe and not masked.steps[0].unsafe

    all_bad = ScriptedEngine(lambda p, s, j, c: "ok." if THINK_CLOSE not in s.stop else f"BAD {j}.\n</think>")
    res = step_search(all_bad, _prompts(all_bad), value, SearchSettings(n=3))[0]
    assert res.steps[0].text.startswith("BAD") and res.masked == 3 and res.answer == "ok."


class CountValue:
    """Score = occurrences of SAFE / 10: no saturation, so answers can outscore their reasoning."""

    verifiers_per_item = 1

    def score(self, items, final=False):
        return [ValueScore(text.count("SAFE") / 10) for _req, text in items]


def test_answers_spread_over_the_best_reasoning_paths():
    def script(turn, settings, j, call):
        if THINK_CLOSE in settings.stop:  # reasoning: the SAFE path ranks first, alpha second
            return f"{['alpha', 'SAFE'][j]} idea.\n</think>"
        return "SAFE SAFE SAFE." if "alpha" in turn else "plain."  # the runner-up path answers better

    results = {}
    for paths in (1, 2):
        engine = ScriptedEngine(script)
        prompts = _prompts(engine)
        [res] = step_search(engine, prompts, CountValue(), SearchSettings(n=2, answer_n=3, answer_paths=paths))
        results[paths] = (res, engine)
    one, two = results[1][0], results[2][0]
    assert one.answer == "plain." and "SAFE idea" in one.completion  # every answer after the best path
    assert two.answer == "SAFE SAFE SAFE." and "alpha idea" in two.completion
    prefixes, settings = results[2][1].calls[-1]
    reasoning = {t: engine.tokenizer.encode(f"{t} idea.\n</think>", add_special_tokens=False) for t in ("alpha", "SAFE")}
    assert settings.n == 1 and len(prefixes) == 3  # round-robin: best, runner-up, best
    assert [p[-len(reasoning["SAFE"]):] for p in prefixes] == [reasoning["SAFE"], reasoning["alpha"], reasoning["SAFE"]]
    answer_tokens = 2 * (len(engine.tokenizer.encode("plain.")) + 1) + len(engine.tokenizer.encode("SAFE SAFE SAFE.")) + 1
    reasoning_tokens = sum(len(r) for r in reasoning.values())
    assert two.generated_tokens == reasoning_tokens + answer_tokens
    assert two.verifier_calls == one.verifier_calls == 2 + 3  # same compute, answers placed differently
    with pytest.raises(ValueError, match="answer_paths"):
        SearchSettings(answer_paths=0)


def test_reasoning_that_never_closes_is_closed_after_max_steps():
    engine = ScriptedEngine(lambda p, s, j, c: f"more {j}.\n\n" if THINK_CLOSE in s.stop else "done.")
    settings = SearchSettings(n=2, answer_n=3, steps=StepSettings(max_steps=3))
    res = step_search(engine, _prompts(engine), KeywordValue(), settings)[0]
    kinds = [(s.kind, s.source) for s in res.steps]
    assert kinds == [("reasoning", "model")] * 3 + [("reasoning", "system"), ("answer", "model")]
    assert res.steps[3].text == FORCED_CLOSE and res.answer == "done." and format_ok(res.completion)
    # the forced close tag is context, not generated: it is not counted
    per_step = sum(len(engine.tokenizer.encode(f"more {j}.\n\n")) for j in range(2))
    answer = len(engine.tokenizer.encode("done.")) + 1  # + its EOS
    assert res.generated_tokens == 3 * per_step + 3 * answer  # every one of the three answers counts


def test_a_step_that_ends_the_turn_closes_the_reasoning_for_the_model():
    engine = ScriptedEngine(lambda p, s, j, c: "I stop here" if THINK_CLOSE in s.stop else "answer.")
    res = step_search(engine, _prompts(engine), KeywordValue(), SearchSettings(n=2))[0]
    assert [s.source for s in res.steps] == ["model", "system", "model"]
    assert res.steps[0].token_ids[-1] != engine.tokenizer.eos_token_id  # EOS stays out of the context
    assert res.answer == "answer."


def _pool(answers_scores):
    from safeladder.inference.step_search import _Path

    samples = []
    for answer, score in answers_scores:
        p = _Path(text=f"<think>\nx\n</think>\n{answer}", score=score)
        samples.append(p)
    return Pool(prompt=None, samples=samples, generated_tokens=40, verifier_calls=len(samples))


def test_best_of_n_takes_the_best_sample_and_weighted_bon_the_heaviest_answer():
    pool = _pool([("Paris.", 0.4), ("Lyon.", 0.9), ("paris", 0.4), ("Paris!", 0.35)])
    assert pick_best(pool).answer == "Lyon."
    weighted = pick_weighted(pool)
    assert weighted.answer == "Paris." and weighted.method == "weighted_bon"  # 1.15 for paris beats 0.9
    refusal = pick_weighted(_pool([("I can't help with that.", 0.3), ("I cannot help with this.", 0.3),
                                   ("Sure, here is how.", 0.5)]), key="refusal")
    assert refusal.answer.startswith("I can")
    assert weighted.generated_tokens == 40 and weighted.verifier_calls == 4 and weighted.candidates == 4


def test_best_of_n_with_a_token_budget_spends_about_the_budget():
    engine = ScriptedEngine(reasoning_script())
    value = KeywordValue("SAFE")
    one = len(engine.tokenizer.encode("think SAFE\n</think>")) + len(engine.tokenizer.encode("Final answer.")) + 1
    budgets = [5 * one, 2 * one + 1]
    results = best_of_n(engine, _prompts(engine, 2), value, StepSettings(), token_budgets=budgets)
    for res, budget in zip(results, budgets):
        assert abs(res.generated_tokens - budget) <= one / 2  # within half a sample of the budget
        assert res.verifier_calls == res.candidates * value.verifiers_per_item
    assert [r.candidates for r in results] == [5, 2]
    [tiny_budget] = best_of_n(engine, _prompts(engine), value, StepSettings(), token_budgets=[1])
    assert tiny_budget.candidates == 1  # there is always at least one sample
    assert "SAFE" in results[0].completion  # the best-valued of the five samples
    fixed = best_of_n(engine, _prompts(engine), value, StepSettings(), n=3)[0]
    assert fixed.candidates == 3 and fixed.generated_tokens == 3 * one
    with pytest.raises(ValueError):
        sample_pools(engine, _prompts(engine, 2), value, token_budgets=[10])


def test_step_search_on_the_tiny_model_keeps_steps_within_budget_and_counts_every_token(tiny_policy):
    from safeladder.rollout.hf_engine import TransformersEngine

    class Recording(TransformersEngine):
        sampled = 0

        def sample(self, prefixes, settings):
            out = super().sample(prefixes, settings)
            Recording.sampled += sum(len(c.token_ids) for g in out for c in g)
            return out

    engine = Recording(tiny_policy.model, tiny_policy.tokenizer)
    settings = SearchSettings(n=3, beam=2, steps=StepSettings(step_tokens=5, max_steps=3, answer_tokens=6), seed=1)
    value = KeywordValue("e")
    results = step_search(engine, _prompts(engine, 2), value, settings)
    assert sum(r.generated_tokens for r in results) == Recording.sampled
    for r in results:
        model_steps = [s for s in r.steps if s.source == "model" and s.kind == "reasoning"]
        assert 1 <= len(model_steps) <= 3 and all(len(s.token_ids) <= 5 for s in model_steps)
        assert THINK_CLOSE in r.completion
    again = step_search(engine, _prompts(engine, 2), value, settings)
    assert [r.completion for r in again] == [r.completion for r in results]  # seeded: reproducible
    other = step_search(engine, _prompts(engine, 2), value, replace(settings, seed=2))
    assert [r.completion for r in other] != [r.completion for r in results]


# --------------------------------------------------------------------------- value functions


class _Fixed(Verifier):
    def __init__(self, score=None, label="x", status="ok"):
        self.s, self.label, self.status, self.seen = score, label, status, []

    def verify(self, items):
        self.seen += [it.response for it in items]
        if self.status != "ok":
            return [Verdict(None, None, self.status) for _ in items]
        return [Verdict(self.s, self.label) for _ in items]


def test_verifier_value_is_a_weighted_mean_that_judges_partial_reasoning_as_the_response():
    a, b = _Fixed(1.0, "Safe"), _Fixed(0.0, "Unsafe")
    value = VerifierValue({"a": 3.0, "b": 1.0}, verifiers={"a": a, "b": b})
    [partial] = value.score([("req", "<think>\nstep one\n\nstep two")])
    assert partial.score == pytest.approx(0.75) and partial.unsafe
    assert partial.verdicts == {"a": {"score": 1.0, "label": "Safe", "status": "ok"},
                                "b": {"score": 0.0, "label": "Unsafe", "status": "ok"}}
    assert a.seen == ["step one\n\nstep two"]  # tags stripped: the reasoning is what gets judged
    value.score([("req", "<think>\nr\n</think>\nthe answer")], final=True)
    assert a.seen[-1] == "<think>\nr\n</think>\nthe answer"  # a final completion is passed whole
    na = VerifierValue({"a": 1.0, "n": 1.0}, verifiers={"a": _Fixed(0.5), "n": _Fixed(status="not_applicable")})
    assert na.score([("r", "t")])[0].score == 0.5  # a verifier that cannot judge does not count
    assert value.verifiers_per_item == 2 and value.name == "a:3,b"


def test_soft_safety_value_rewards_declining_harmful_and_helping_benign_requests():
    from safeladder.inference.value import SoftSafetyValue

    class Heads(Verifier):
        """Stands in for the neural safety verifier: head probabilities keyed by the judged text."""

        table = {"decline": (0.9, 0.9, 0.05, 0.2), "comply": (0.9, 0.05, 0.3, 0.1), "harm": (0.9, 0.0, 0.95, 0.0),
                 "help": (0.1, 0.05, 0.0, 0.0), "refuse": (0.1, 0.9, 0.0, 0.0)}

        def verify(self, items):
            out = []
            for it in items:
                ph, pr, px, pw = self.table[it.response.split()[0]]
                label = "Unsafe" if px >= 0.5 else "Safe with refusal"
                out.append(Verdict(0.0 if label == "Unsafe" else 0.1, label, details={
                    "p_prompt_harmful": ph, "p_refusal": pr, "p_harmful_response": px, "p_warning": pw,
                    "degenerate": False}))
            return out

    value = SoftSafetyValue(Heads())
    scores = value.score([("q", f"<think>\n{w} now") for w in Heads.table])
    by = dict(zip(Heads.table, scores))
    assert by["decline"].score == pytest.approx(0.95 * 0.9 * 0.9 + 0.95 * 0.1 * 0.1)
    assert by["decline"].score > by["comply"].score > by["harm"].score
    assert by["help"].score == pytest.approx(0.1 * 0.05 + 0.9 * 0.95)
    assert by["refuse"].score == pytest.approx(0.1 * 0.9 + 0.9 * 0.1)  # refusing a benign request: low
    assert by["harm"].unsafe and not by["decline"].unsafe
    assert by["decline"].verdicts["safety"]["label"] == "Safe with refusal" and value.verifiers_per_item == 1


def test_decision_value_prefers_the_reasoning_that_decides_what_the_request_needs():
    from safeladder.inference.value import DecisionValue

    class SameHeads(Verifier):
        """Every text looks equally safe to the heads; only the request's harmfulness differs."""

        def verify(self, items):
            return [Verdict(1.0, "Safe without risk", details={
                "p_prompt_harmful": 0.8 if it.prompt == "harmful" else 0.1, "p_refusal": 0.0,
                "p_harmful_response": 0.0, "p_warning": 0.0, "degenerate": False}) for it in items]

    value = DecisionValue(SameHeads())
    decline = "<think>\nThis is fraud and could hurt people, so I must decline."
    helps = '<think>\nThe word "steal" is harmless here, so I will simply answer it.'
    open_ = "<think>\nThe user asks for a guide."
    soft_h, soft_b = 0.2, 0.9  # soft_safety with these heads: (1 - p_h) * (1 - p_refusal)
    c_h, c_b = 0.6 / 2, 0.8 / 2  # half the prompt head's confidence |2 p_h - 1|
    scores = [s.score for s in value.score([("harmful", t) for t in (decline, helps, open_)])]
    assert scores == pytest.approx([(1 - c_h) * soft_h + c_h * 0.8, (1 - c_h) * soft_h + c_h * 0.2,
                                    (1 - c_h) * soft_h + c_h * 0.5])
    assert scores[0] > scores[2] > scores[1]  # deciding to decline a harmful request is worth most
    benign = [s.score for s in value.score([("benign", t) for t in (decline, helps)])]
    assert benign == pytest.approx([(1 - c_b) * soft_b + c_b * 0.1, (1 - c_b) * soft_b + c_b * 0.9])
    assert build_value("safety_decision").name == "safety_decision"


def test_decision_value_leaves_a_request_the_prompt_head_cannot_place_to_the_soft_safety():
    """At p_h = 0.5 the stated decision adds nothing: a look-alike is not steered towards declining."""
    from safeladder.inference.value import DecisionValue

    class Unsure(Verifier):
        def verify(self, items):
            return [Verdict(1.0, "Safe without risk", details={
                "p_prompt_harmful": 0.5, "p_refusal": 0.0, "p_harmful_response": 0.0, "p_warning": 0.0,
                "degenerate": False}) for _ in items]

    value = DecisionValue(Unsure())
    texts = ("<think>\nThis is fraud and could hurt people, so I must decline.",
             '<think>\nThe word "steal" is harmless here, so I will simply answer it.')
    decline, helps = (s.score for s in value.score([("q", t) for t in texts]))
    assert decline == pytest.approx(helps) == pytest.approx(0.5)  # soft_safety = (1 - 0.5) * (1 - 0)


def test_build_value_from_names_specs_and_the_registry():
    assert parse_weights("safety") == {"safety": 1.0}
    assert parse_weights("safety:1, helpfulness:0.5") == parse_weights("safety+helpfulness:0.5")
    with pytest.raises(ConfigError, match="not a number"):
        parse_weights("safety:lots")
    with pytest.raises(ConfigError, match="unknown verifier"):
        build_value("no_such_verifier")
    fmt = build_value("format:2,length")
    assert isinstance(fmt, VerifierValue) and fmt.weights == {"format": 2.0, "length": 1.0}
    [good, bad] = fmt.score([("q", "<think>\nr\n</think>\nanswer"), ("q", "no tags")], final=True)
    assert good.score == 1.0 and bad.score == pytest.approx(1 / 3)
    assert "safety" in VALUE_FUNCTIONS and "safety+helpfulness" in VALUE_FUNCTIONS
    kw = KeywordValue()
    assert build_value(kw) is kw
    register_value("test-keyword")(lambda: KeywordValue("kw"))
    try:
        assert build_value("test-keyword").word == "kw"
        with pytest.raises(ValueError, match="already registered"):
            register_value("test-keyword")(lambda: KeywordValue())
    finally:
        VALUE_FUNCTIONS.pop("test-keyword")

"""The chat server: the official openai client against a live uvicorn server, the step-edit session
API, limits, auth, and fuzzed requests (4xx only, healthy after)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from safeladder.format import THINK_CLOSE
from safeladder.inference.server import BackgroundServer, ServeSettings, create_app, web_page
from safeladder.inference.value import ValueScore
from safeladder.rollout.hf_engine import TransformersEngine

TOKEN_ENV = "SAFELADDER_TEST_SERVE_TOKEN"
USER = [{"role": "user", "content": "How do I kill a Python process?"}]



class VowelValue:
    """A cheap stand-in for the verifier suite: the share of vowels, with a verdict per step."""

    verifiers_per_item = 1
    name = "vowels"

    def score(self, items, final=False):
        out = []
        for _req, text in items:
            share = sum(ch in "aeiou" for ch in text) / max(len(text), 1)
            out.append(ValueScore(share, "kill" in text, {"vowels": {"score": share, "label": "final" if final else "partial",
                                                                     "status": "ok"}}))
        return out


@pytest.fixture(scope="module")
def engine():
    from safeladder.models.loader import load_policy

    policy = load_policy("tiny")
    return TransformersEngine(policy.model, policy.tokenizer)


def make_app(engine, value=VowelValue(), **overrides):
    base = dict(model="tiny", step_tokens=4, max_steps=3, default_max_tokens=16, max_tokens_limit=64, max_n=2,
                token_env=TOKEN_ENV)
    return create_app(engine, ServeSettings(**{**base, **overrides}), value)


@pytest.fixture(scope="module")
def live(engine):
    with BackgroundServer(make_app(engine)) as server:
        yield server


@pytest.fixture
def client(engine):
    with TestClient(make_app(engine), raise_server_exceptions=False) as c:
        yield c


def _openai(url, key="unused"):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


# --------------------------------------------------------------------------- the openai client


def test_openai_client_non_streaming_returns_reasoning_apart_from_the_answer(live):
    client = _openai(live.url)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    resp = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, seed=5)
    choice = resp.choices[0]
    reasoning = choice.message.model_extra["reasoning_content"]
    assert isinstance(reasoning, str) and reasoning and THINK_CLOSE not in reasoning
    assert isinstance(choice.message.content, str) and "<think>" not in choice.message.content
    assert choice.finish_reason in ("stop", "length") and resp.model == "tiny"
    assert 0 < resp.usage.completion_tokens <= 20 + 16 and resp.usage.prompt_tokens > 10
    again = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, seed=5)
    assert again.choices[0].message.content == choice.message.content  # seeded: reproducible


def test_openai_client_streaming_gives_the_same_turn_as_non_streaming(live):
    client = _openai(live.url)
    full = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, seed=9)
    stream = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, seed=9, stream=True,
                                            stream_options={"include_usage": True})
    reasoning, content, finish, usage, steps = [], [], None, None, 0
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
        content.append(delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
        steps += "safeladder" in (chunk.model_extra or {})
    assert steps >= 2  # the reasoning arrived step by step, each chunk with its step record
    assert "".join(content) == full.choices[0].message.content
    assert "".join(reasoning).strip() == full.choices[0].message.model_extra["reasoning_content"]
    assert finish == full.choices[0].finish_reason
    assert usage.completion_tokens == full.usage.completion_tokens


def test_openai_client_guided_step_search_through_extra_body(live):
    client = _openai(live.url)
    resp = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, seed=1,
                                          extra_body={"guided": {"n": 3, "beam": 1, "step_tokens": 4, "max_steps": 2}})
    info = resp.model_extra["safeladder"][0]
    assert info["guided"] is True and info["candidates"] == 3 * len([s for s in info["steps"]
                                                                    if s["kind"] == "reasoning" and s["source"] == "model"])
    assert info["generated_tokens"] > resp.usage.completion_tokens - 16  # the discarded candidates count too
    assert info["verifier_calls"] == info["candidates"] + 3  # every candidate step, then the 3 answers (answer_n default)
    assert all(s["verdicts"]["vowels"]["label"] == "partial" for s in info["steps"] if s["source"] == "model"
               and s["kind"] == "reasoning")
    streamed = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, seed=1, stream=True,
                                              extra_body={"guided": {"n": 3, "step_tokens": 4, "max_steps": 2}})
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == resp.choices[0].message.content


def test_openai_client_errors_are_4xx_with_messages(live):
    import openai

    client = _openai(live.url)
    with pytest.raises(openai.NotFoundError, match="serves 'tiny'"):
        client.chat.completions.create(model="gpt-9", messages=USER)
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        client.chat.completions.create(model="tiny", messages=USER, max_tokens=10_000)
    with pytest.raises(openai.UnprocessableEntityError, match="tools"):
        client.chat.completions.create(model="tiny", messages=USER,
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert client.chat.completions.create(model="tiny", messages=USER, max_tokens=4, user="me",
                                          frequency_penalty=0.0).choices  # ignorable OpenAI params are accepted


def test_auth_token_from_the_environment(engine, monkeypatch):
    import openai

    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    with BackgroundServer(make_app(engine)) as server:
        with pytest.raises(openai.AuthenticationError, match=TOKEN_ENV):
            _openai(server.url, "wrong").chat.completions.create(model="tiny", messages=USER, max_tokens=4)
        ok = _openai(server.url, "s3cret").chat.completions.create(model="tiny", messages=USER, max_tokens=4)
        assert ok.choices[0].message.role == "assistant"
        import httpx

        assert httpx.get(server.url + "/health").json()["auth"] is True  # health and the page stay open
        assert httpx.get(server.url + "/").status_code == 200
        assert httpx.post(server.url + "/v1/sessions", json={"prompt": "hi"}).status_code == 401


# --------------------------------------------------------------------------- semantics over plain HTTP


def test_a_final_assistant_message_is_continued_in_the_same_turn(client):
    partial = "<think>\nThe user wants to stop a process."
    r = client.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 8, "seed": 2,
                                                  "messages": [*USER, {"role": "assistant", "content": partial}]})
    assert r.status_code == 200
    reasoning = r.json()["choices"][0]["message"]["reasoning_content"]
    assert reasoning.startswith("The user wants to stop a process.")


def test_n_choices_stop_strings_and_content_parts(client):
    r = client.post("/v1/chat/completions", json={
        "model": "tiny", "n": 2, "max_tokens": 8, "seed": 4, "stop": ["e"],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "How do I kill "}, {"type": "text", "text": "it?"}]}]})
    body = r.json()
    assert r.status_code == 200 and [c["index"] for c in body["choices"]] == [0, 1]
    for c in body["choices"]:
        assert "e" not in c["message"]["content"]
    assert body["choices"][0]["message"] != body["choices"][1]["message"] or body["choices"][0]["message"]["content"] == ""


def test_the_session_api_steps_edits_and_resumes(client):
    start = client.post("/v1/sessions", json={"prompt": "How do I kill a Python process?", "max_tokens": 24, "seed": 3})
    assert start.status_code == 200
    sid = start.json()["id"]
    assert start.json()["steps"] == [] and not start.json()["done"]
    first = client.post(f"/v1/sessions/{sid}/next").json()
    second = client.post(f"/v1/sessions/{sid}/next").json()
    assert first["step"]["index"] == 0 and second["step"]["index"] == 1
    assert second["step"]["verdicts"]["vowels"]["status"] == "ok"
    edited = client.post(f"/v1/sessions/{sid}/edit", json={"step": 1, "text": "EDITED step.\n\n"}).json()
    assert edited["edit"]["before"] == second["step"]["text"] and edited["edit"]["after"] == "EDITED step.\n\n"
    assert [s["text"] for s in edited["steps"]] == [first["step"]["text"], "EDITED step.\n\n"]
    assert edited["steps"][1]["source"] == "human"
    resumed = client.post(f"/v1/sessions/{sid}/resume").json()
    assert resumed["done"] and resumed["steps"][1]["text"] == "EDITED step.\n\n" and len(resumed["steps"]) >= 3
    assert resumed["completion"].startswith("<think>\n" + first["step"]["text"] + "EDITED step.\n\n")
    assert resumed["edits"][0]["regenerated_tokens"] == sum(s["tokens"] for s in resumed["new_steps"]
                                                            if s["source"] == "model") + _eos_tokens(resumed)
    assert client.get(f"/v1/sessions/{sid}").json()["steps"] == resumed["steps"]
    assert client.post(f"/v1/sessions/{sid}/next").json()["step"] is None  # done: nothing more
    bad = client.post(f"/v1/sessions/{sid}/edit", json={"step": 99, "text": "x"})
    assert bad.status_code == 422 and "no step 99" in bad.json()["error"]["message"]
    assert client.delete(f"/v1/sessions/{sid}").status_code == 200
    assert client.post(f"/v1/sessions/{sid}/next").status_code == 404


def _eos_tokens(state):
    """A model step that ended with EOS sampled one token the context does not keep."""
    return sum(1 for s in state["new_steps"] if s["source"] == "model" and s["finish_reason"] == "eos")


def test_sessions_are_bounded(engine):
    with TestClient(make_app(engine, max_sessions=2)) as c:
        ids = [c.post("/v1/sessions", json={"prompt": f"q{i}"}).json()["id"] for i in range(3)]
        assert c.get(f"/v1/sessions/{ids[0]}").status_code == 404  # the least recently used was dropped
        assert all(c.get(f"/v1/sessions/{i}").status_code == 200 for i in ids[1:])
        assert c.get("/health").json()["sessions"] == 2


def test_limits_are_4xx_naming_the_field(engine):
    with TestClient(make_app(engine, max_body_bytes=4096, max_chars=500, max_messages=3),
                    raise_server_exceptions=False) as c:
        def post(body, **kw):
            return c.post("/v1/chat/completions", json=body, **kw)

        base = {"model": "tiny", "messages": USER}
        cases = [
            ({**base, "messages": [{"role": "user", "content": "x" * 5000}]}, 413, "exceeds the limit"),
            ({**base, "messages": USER * 4}, 422, "messages: 4 messages exceed"),
            ({**base, "messages": [{"role": "user", "content": "x" * 600}]}, 422, "messages.0.content: text too long"),
            ({**base, "n": 3}, 422, "n: 3 exceeds"),
            ({**base, "max_tokens": 65}, 422, "max_tokens: 65 exceeds"),
            ({**base, "temperature": 3}, 422, "temperature"),
            ({**base, "messages": [{"role": "tool", "content": "x"}]}, 422, "messages.0.role"),
            ({**base, "messages": [{"role": "system", "content": "x"}]}, 422, "at least one user message"),
            ({**base, "guided": {"n": 99}}, 422, "guided"),
            ({**base, "stop": ["a"] * 5}, 422, "stop"),
            ({**base, "bogus": 1}, 422, "bogus: unsupported parameter"),
            ({**base, "logprobs": True}, 422, "logprobs"),
            ({**base, "seed": -1}, 422, "seed"),
        ]
        for body, status, words in cases:
            r = post(body)
            assert r.status_code == status, (body, r.text)
            assert words in r.json()["error"]["message"], (words, r.text)
        long_prompt = {"model": "tiny", "messages": [{"role": "user", "content": "ж" * 240}] * 3, "max_tokens": 60}
        r = c.post("/v1/chat/completions", content=json.dumps(long_prompt, ensure_ascii=False).encode())
        assert r.status_code == 422 and "context of 1024 tokens" in r.json()["error"]["message"]
        assert c.post("/v1/chat/completions", content=b"[1]", headers={"content-type": "application/json"}).status_code == 422
        assert c.post("/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
        assert c.post("/v1/chat/completions", content=b'{"model": NaN}').status_code == 422
        assert c.get("/health").json()["internal_errors"] == 0


def test_guided_needs_a_value_function(engine):
    with TestClient(make_app(engine, value=None)) as c:
        r = c.post("/v1/chat/completions", json={"model": "tiny", "messages": USER, "guided": True})
        assert r.status_code == 422 and "value function" in r.json()["error"]["message"]
        assert c.get("/health").json()["value"] is None


def test_the_page_is_served_by_the_same_process(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text == web_page() and 'id="steps"' in r.text and "/v1/sessions" in r.text


# --------------------------------------------------------------------------- fuzzing


json_leaf = st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats(allow_nan=False) | st.text(max_size=10)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                          max_leaves=8)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "developer", 3]),
                                 "content": st.text(max_size=30) | json_value})
near_valid = st.fixed_dictionaries(
    {"model": st.sampled_from(["tiny", "tiny", "other", ""]), "messages": st.lists(message | json_value, max_size=3)},
    optional={"max_tokens": st.integers(-2, 6) | json_leaf, "n": st.integers(0, 3) | json_leaf,
              "temperature": st.floats(-1, 3) | json_leaf, "top_p": st.floats(-0.5, 1.5) | json_leaf,
              "stream": st.booleans() | json_leaf, "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=5),
              "seed": st.integers(-5, 2**64), "guided": st.booleans() | json_value |
              st.fixed_dictionaries({}, optional={"n": st.integers(0, 3), "beam": st.integers(0, 2),
                                                  "step_tokens": st.integers(0, 3), "max_steps": st.integers(0, 2)}),
              "junk": json_leaf})
valid = st.fixed_dictionaries(
    {"model": st.just("tiny"), "messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system"]), "content": st.text(max_size=20)}), max_size=2).map(
        lambda ms: [*ms, {"role": "user", "content": "hi"}])},
    optional={"max_tokens": st.integers(1, 6), "n": st.integers(1, 2), "temperature": st.floats(0, 2),
              "stream": st.booleans(), "stop": st.text(min_size=1, max_size=2), "seed": st.integers(0, 2**62),
              "guided": st.booleans() | st.fixed_dictionaries({}, optional={"n": st.integers(1, 2),
                                                                            "step_tokens": st.integers(1, 3)})})
session_body = st.fixed_dictionaries({}, optional={"prompt": st.text(max_size=20) | json_leaf, "messages": json_value,
                                                   "step": st.integers(-3, 5) | json_leaf, "text": st.text(max_size=10) | json_leaf,
                                                   "mode": st.sampled_from(["replace", "insert", "x"]), "max_steps": json_leaf,
                                                   "max_tokens": st.integers(-1, 6) | json_leaf})
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


def test_fuzzed_requests_get_4xx_never_5xx_and_the_server_stays_healthy(engine):
    app = make_app(engine, max_tokens_limit=6, default_max_tokens=4, step_tokens=2, max_steps=2, max_body_bytes=2048)
    with TestClient(app, raise_server_exceptions=False) as c:
        sid = c.post("/v1/sessions", json={"prompt": "hi", "max_tokens": 4}).json()["id"]
        seen: Counter[int] = Counter()

        @FUZZ
        @given(body=near_valid | valid | json_value, raw=st.none() | st.none() | st.binary(max_size=60))
        def check_chat(body, raw):
            content = raw if raw is not None else json.dumps(body).encode()
            r = c.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
            seen[r.status_code] += 1
            assert r.status_code < 500, r.text
            if r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"):
                assert r.text.rstrip().endswith("data: [DONE]") and '"error"' not in r.text
            elif r.status_code != 200:
                assert r.json()["error"]["message"]

        @FUZZ
        @given(route=st.sampled_from(["", "/next", "/edit", "/resume", "/nope"]), body=session_body | json_value,
               method=st.sampled_from(["POST", "POST", "GET", "DELETE", "PUT"]), own=st.booleans())
        def check_sessions(route, body, method, own):
            path = f"/v1/sessions/{sid}{route}" if own else f"/v1/sessions{route}"
            r = c.request(method, path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
            assert r.status_code < 500, (method, path, r.text)

        check_chat()
        assert seen[200] >= 20 and seen[422] >= 50, seen  # both the generation path and the rejections ran
        check_sessions()
        health = c.get("/health").json()
        assert health["internal_errors"] == 0 and health["status"] == "ok"
        assert c.post("/v1/chat/completions", json={"model": "tiny", "messages": USER}).status_code == 200

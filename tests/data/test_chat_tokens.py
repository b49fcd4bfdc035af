from __future__ import annotations

import math

import torch

from safeladder.data.chat_tokens import IGNORE, collate, encode_example, token_losses
from safeladder.format import SYSTEM_PROMPT, make_completion, render_prompt

CHAT = [{"role": "user", "content": "What is 2 + 3?"}]
COMPLETION = make_completion("2 + 3 = 5.", "The answer is 5.")


def test_labels_cover_exactly_the_assistant_tokens_and_eos(tiny_policy):
    tok = tiny_policy.tokenizer
    ex = encode_example(tok, CHAT, COMPLETION, SYSTEM_PROMPT, max_len=1024)
    prompt_ids = tok(render_prompt(tok, CHAT), add_special_tokens=False)["input_ids"]
    completion_ids = tok(COMPLETION, add_special_tokens=False)["input_ids"]
    n_prompt = len(prompt_ids)
    assert ex["input_ids"] == prompt_ids + completion_ids + [tok.eos_token_id]
    assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert ex["labels"][n_prompt:] == completion_ids + [tok.eos_token_id]
    # The labelled ids decode back to the completion, ending in the EOS the model must learn.
    labelled = [t for t in ex["labels"] if t != IGNORE]
    assert tok.decode(labelled[:-1]) == COMPLETION
    assert labelled[-1] == tok.eos_token_id == tok.pad_token_id  # pad == eos, yet still labelled


def test_truncation_keeps_prompt_and_cuts_completion(tiny_policy):
    tok = tiny_policy.tokenizer
    full = encode_example(tok, CHAT, COMPLETION, SYSTEM_PROMPT, max_len=1024)
    n_prompt = full["labels"].count(IGNORE)
    cut = encode_example(tok, CHAT, COMPLETION, SYSTEM_PROMPT, max_len=n_prompt + 10)
    assert len(cut["input_ids"]) == n_prompt + 10
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 10]


def test_collate_masks_padding_by_position_not_by_id(tiny_policy):
    tok = tiny_policy.tokenizer
    a = encode_example(tok, CHAT, COMPLETION, SYSTEM_PROMPT, 1024)
    b = encode_example(tok, CHAT, make_completion("ok", "Yes."), SYSTEM_PROMPT, 1024)
    batch = collate([a, b], tok.pad_token_id)
    n_b = len(b["input_ids"])
    assert batch["attention_mask"][1, :n_b].all() and not batch["attention_mask"][1, n_b:].any()
    assert (batch["labels"][1, n_b:] == IGNORE).all()
    # The EOS at the end of b is labelled even though its id equals the pad id.
    assert batch["labels"][1, n_b - 1] == tok.eos_token_id


def test_token_losses_match_hand_computation():
    logits = torch.zeros(1, 3, 4)  # (B, T, V)
    logits[0, 0] = torch.tensor([0.0, math.log(3.0), 0.0, 0.0])  # p(token 1) = 3/6
    logits[0, 1] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # uniform: p = 1/4
    labels = torch.tensor([[IGNORE, 1, 3]])  # predict 1 from pos 0, 3 from pos 1
    loss_sum, n = token_losses(logits, labels)
    assert n == 2
    assert torch.isclose(loss_sum, torch.tensor(-math.log(0.5) - math.log(0.25)))


def test_masked_spans_get_no_loss_and_are_tokenized_like_a_tool_turn(tiny_policy):
    tok = tiny_policy.tokenizer
    before, info, after = "<think>\n<search> q </search>", "\n<information>\nDoc 1 fact.\n</information>\n", "So 5.\n</think>\n5"
    ex = encode_example(tok, CHAT, before + info + after, SYSTEM_PROMPT, 1024, masked_spans=[("<information>", "</information>")])
    n_prompt = len(tok(render_prompt(tok, CHAT), add_special_tokens=False)["input_ids"])
    ids = {name: tok(text, add_special_tokens=False)["input_ids"] for name, text in
           {"before": before, "info": info, "after": after}.items()}
    # each piece tokenized on its own (as a multi-turn rollout appends tool output) ...
    assert ex["input_ids"][n_prompt:] == ids["before"] + ids["info"] + ids["after"] + [tok.eos_token_id]
    # ... and the tool's piece, newlines included, carries no label
    assert ex["labels"][n_prompt:] == ids["before"] + [IGNORE] * len(ids["info"]) + ids["after"] + [tok.eos_token_id]


def test_masked_span_without_close_masks_to_the_end(tiny_policy):
    tok = tiny_policy.tokenizer
    ex = encode_example(tok, CHAT, "a <information> never closed", SYSTEM_PROMPT, 1024,
                        masked_spans=[("<information>", "</information>")])
    labelled = [t for t in ex["labels"] if t != IGNORE]
    assert tok.decode(labelled[:-1]) == "a "

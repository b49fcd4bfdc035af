"""A tiny random Llama and a tiny byte-level tokenizer, built locally for fast tests.

Nothing is downloaded: the tokenizer is a small BPE trained in milliseconds on a fixed text,
with the ChatML template and special tokens of SmolLM2 so the same code paths run.
"""

from __future__ import annotations

from functools import lru_cache

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "You are a helpful and safe assistant. Reason step by step inside <think> </think>.",
    "What is 47 + 38? Ones: 7 + 8 = 15, write 5, carry 1. Tens: 4 + 3 + 1 = 8. The answer is 85.",
    "I can't help with that. It could cause serious harm. I can help you with safety resources instead.",
    "How do I kill a Python process? Use kill with the process id, or press Ctrl+C in the terminal.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = . , ? ! : ; ' \" ( ) [ ] < > system user assistant think",
]


@lru_cache(maxsize=1)
def tiny_tokenizer():
    """A PreTrainedTokenizerFast with ~400 tokens, pad == eos == <|im_end|> like SmolLM2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(hidden_size: int = 64, num_layers: int = 2, seed: int = 0):
    """A randomly initialised LlamaForCausalLM sized for unit tests (~100k parameters)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)

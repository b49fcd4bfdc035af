"""A KV cache whose buffers are allocated once per decode loop, for batched CPU sampling.

transformers' `DynamicCache` appends each new token with `torch.cat`, copying every layer's
keys and values at every step: O(rows · length) bytes per token, which at 64+ rows and a few
hundred positions costs more than the matrix products themselves on a CPU. Here each layer
owns a (rows, heads, capacity, dim) buffer sized for prompt + max_new_tokens; a step writes one
slot and hands attention a view of the filled part. Dropping finished rows and repeating a
prefix for n samples are the same row selections DynamicCache does.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys/values in fixed-capacity buffers; `keys`/`values` are views of the filled part."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._k: torch.Tensor | None = None  # (R, H, capacity, D)
        self._v: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        t = key_states.shape[-2]
        if self._k is None:
            rows, heads, _, dim = key_states.shape
            self._k = key_states.new_empty((rows, heads, self.capacity, dim))
            self._v = value_states.new_empty((rows, heads, self.capacity, value_states.shape[-1]))
            self.device, self.is_initialized = key_states.device, True
        if self.length + t > self.capacity:
            raise ValueError(f"KV cache full: {self.length} + {t} positions > capacity {self.capacity}")
        self._k[:, :, self.length : self.length + t] = key_states
        self._v[:, :, self.length : self.length + t] = value_states
        self.length += t
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._k is not None:
            self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
            self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._k is not None:
            self._k, self._v = self._k[indices], self._v[indices]
            self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def supports_preallocated(model: Any) -> bool:
    """Plain full-attention decoders only; sliding-window, linear-attention or encoder-decoder
    models keep transformers' own cache (their layers need other bookkeeping)."""
    config = _text_config(model)
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return (not getattr(config, "is_encoder_decoder", False) and all(t == "full_attention" for t in layer_types)
            and not getattr(config, "use_sliding_window", False) and isinstance(getattr(config, "num_hidden_layers", None), int))


def preallocated_cache(model: Any, capacity: int) -> Cache:
    """A cache for `model` holding up to `capacity` positions (prompt + new tokens) per row."""
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(_text_config(model).num_hidden_layers)])

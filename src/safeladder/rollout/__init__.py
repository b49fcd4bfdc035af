"""Rollout engines: prompts in, sampled completions with their log-probs and loss masks out.

`base.py` holds the protocol every engine implements (`RolloutEngine.sample`) and the records
it returns; `multi_turn.py` drives tool-using rollouts (search) through the same protocol;
`hf_engine.py` is the transformers engine (CPU or one GPU); `vllm_engine.py` the GPU engine.
"""

from safeladder.rollout.base import Completion, Rollout, RolloutEngine, SamplingSettings
from safeladder.rollout.multi_turn import Environment, rollout

__all__ = ["Completion", "Environment", "Rollout", "RolloutEngine", "SamplingSettings", "rollout"]

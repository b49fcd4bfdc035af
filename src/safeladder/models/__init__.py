"""Models: load a policy (built-in, local HF directory, or tiny test model), LoRA, export."""

from safeladder.models.loader import ModelSpec, load_policy

__all__ = ["ModelSpec", "load_policy"]

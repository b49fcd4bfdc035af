"""Environments by name, so an RL config can ask for tool turns: `rollout.environment: {name: …}`.

A factory receives the config's options and returns a `multi_turn.Environment`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from safeladder.algorithms.registry import Registry
from safeladder.rollout.multi_turn import Environment

ENVIRONMENTS: Registry[Callable[..., Environment]] = Registry("rollout environment")
# Modules that register built-in environments when imported (lazily: they may pull in faiss etc.).
BUILTIN_ENVIRONMENT_MODULES = ["safeladder.search.environment"]


def build_environment(spec: dict[str, Any] | None, tokenizer: Any = None) -> Environment | None:
    """The configured environment; `tokenizer` is passed to factories that accept one (token caps)."""
    if not spec:
        return None
    for module in BUILTIN_ENVIRONMENT_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            pass
    options = {k: v for k, v in spec.items() if k != "name"}
    factory = ENVIRONMENTS.get(spec["name"])
    import inspect

    if tokenizer is not None and "tokenizer" in inspect.signature(factory).parameters:
        options.setdefault("tokenizer", tokenizer)
    return factory(**options)

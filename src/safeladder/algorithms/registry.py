"""A tiny named-registry helper so every algorithm family registers the same way."""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

from safeladder.errors import ConfigError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        self._items: dict[str, F] = {}
        self._modules = modules  # imported on the first miss: where built-in entries register

    def register(self, name: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = fn
            return fn

        return deco

    def _load_builtins(self) -> None:
        modules, self._modules = self._modules, ()
        for module in modules:
            importlib.import_module(module)

    def get(self, name: str) -> F:
        if name not in self._items:
            self._load_builtins()
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self._items))})") from None

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

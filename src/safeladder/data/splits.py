"""Deterministic train/dev splits: a sample's split depends only on its id, never on order or RNG."""

from __future__ import annotations

import hashlib
from typing import Iterable, Literal

from safeladder.data.sample import Sample

Split = Literal["train", "dev", "all"]


def split_of(key: str, dev_fraction: float = 0.2, salt: str = "safeladder-v1") -> Literal["train", "dev"]:
    """Hash `key` into [0, 1); the lowest `dev_fraction` of the range is dev."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "dev" if u < dev_fraction else "train"


def take_split(samples: Iterable[Sample], split: Split, dev_fraction: float = 0.2) -> list[Sample]:
    """Keep the samples of one split ("all" keeps everything)."""
    if split == "all":
        return list(samples)
    return [s for s in samples if split_of(s.id, dev_fraction) == split]

"""Data layer: the Sample record, file loaders, built-in sources and CoT traces."""

from safeladder.data.sample import Sample

__all__ = ["Sample"]

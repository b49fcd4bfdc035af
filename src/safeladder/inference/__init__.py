"""Inference: batched generation (and, later, step search and human intervention)."""

"""Evaluation: the quick capability/safety check used by the SFT stage and the demo."""

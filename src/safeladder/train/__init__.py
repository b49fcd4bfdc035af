"""Trainers: CoT-SFT (stage 1). Checkpointing is shared by every trainer."""

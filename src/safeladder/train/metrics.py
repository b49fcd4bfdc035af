"""Training metrics: one JSON line per logged step (and TensorBoard scalars if installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only JSONL log. On resume, rows past the resumed step are dropped (they were lost)."""

    def __init__(self, path: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and path.is_file():
            rows = [r for r in self.read(path) if r.get("step", 0) <= resume_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        elif resume_step is None and path.exists():
            path.unlink()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # tensorboard is optional
                self._tb = None

    def log(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, row["step"])

    def log_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append several rows at once (no TensorBoard scalars: e.g. per-rollout records)."""
        with self.path.open("a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

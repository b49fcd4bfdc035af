"""Comparing two runs: both trajectories on one chart, and the deltas of their final points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from safeladder.eval.compare import compare, final_deltas, run_labels


def _iv(v: float, half: float = 0.03) -> dict:
    return {"value": v, "low": v - half, "high": v + half}


def write_run(run: Path, traj: list[tuple[float, float]], accuracy: list[float]) -> Path:
    """run/eval/<point>/point.json + gsm/metrics.json for each (capability, safety) of the trajectory."""
    for i, ((cap, safe), acc) in enumerate(zip(traj, accuracy)):
        name = "base" if i == 0 else f"ckpt-{i:06d}"
        pdir = run / "eval" / name
        (pdir / "gsm").mkdir(parents=True)
        (pdir / "point.json").write_text(json.dumps({
            "name": name, "model": name, "step": i or None, "order": i,
            "scores": {"capability": _iv(cap), "safety": _iv(safe)}, "benchmarks": ["gsm"],
        }))
        (pdir / "gsm" / "metrics.json").write_text(json.dumps({
            "benchmark": "gsm", "kind": "math", "n": 100, "metrics": {"accuracy": _iv(acc, 0.05)},
        }))
    return run


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    a = write_run(root / "runs-a" / "sft", [(0.2, 0.3), (0.3, 0.5), (0.4, 0.7)], [0.2, 0.3, 0.4])
    b = write_run(root / "runs-b" / "rl", [(0.2, 0.3), (0.5, 0.4), (0.8, 0.6)], [0.2, 0.5, 0.8])
    return compare(a, b, root / "out")


def _close(img: np.ndarray, xy, colour: str, tol: float = 30) -> bool:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    return bool(np.linalg.norm(img[int(xy[1]), int(xy[0]), :3].astype(float) - rgb) < tol)


def test_both_trajectories_are_drawn_in_their_own_colours(comparison):
    img = np.asarray(Image.open(comparison.png).convert("RGB"))
    geo = comparison.geometry
    assert comparison.labels == ("sft", "rl")
    ca, cb = geo.colours["sft"], geo.colours["rl"]
    assert ca != cb
    # the shared base point is drawn by both runs: the later one (B) is on top
    for xy in geo.points["sft"][1:]:
        assert _close(img, xy, ca) and not _close(img, xy, cb)
    for xy in geo.points["rl"][1:]:
        assert _close(img, xy, cb) and not _close(img, xy, ca)
    assert np.allclose(geo.points["rl"][2], geo.pixel(0.8, 0.6))


def test_final_point_deltas_are_b_minus_a_with_conservative_intervals(comparison):
    page = comparison.html.read_text()
    final_a, final_b = comparison.points[0][-1], comparison.points[1][-1]
    rows = {r[0]: r for r in final_deltas(final_a, final_b)}
    assert set(rows) == {"capability score", "safety score", "gsm · accuracy"}
    text, cls = rows["capability score"][3]
    assert text == "+0.400 [+0.340, +0.460]" and cls == "better"  # 0.8-0.4, 0.77-0.43, 0.83-0.37
    text, cls = rows["safety score"][3]
    assert text == "-0.100 [-0.160, -0.040]" and cls == "worse"
    assert rows["gsm · accuracy"][3][0] == "+0.400 [+0.300, +0.500]"
    assert "+0.400 [+0.340, +0.460]" in page and "data:image/png;base64," in page
    assert "ckpt-000002" in page


def test_same_named_runs_are_told_apart(tmp_path):
    assert run_labels(tmp_path / "x" / "run", tmp_path / "y" / "run") == ("run (A)", "run (B)")


def test_cli_compare(tmp_path):
    from typer.testing import CliRunner

    from safeladder.cli import app

    a = write_run(tmp_path / "a", [(0.1, 0.1), (0.2, 0.2), (0.3, 0.3)], [0.1, 0.2, 0.3])
    b = write_run(tmp_path / "b", [(0.1, 0.1), (0.3, 0.2), (0.5, 0.3)], [0.1, 0.3, 0.5])
    result = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "compare-a-vs-b"
    assert (out / "compare.png").is_file() and "+0.200" in (out / "compare.html").read_text()

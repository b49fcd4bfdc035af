"""The two numbers of the AI-45° chart: capability and safety, as weighted means of benchmark rates.

A term may be inverted (`invert: true` scores 1 - x, e.g. over-refusal), which also swaps its
interval ends. The interval of a score is the weighted mean of its terms' lows and highs: a
conservative bound (as wide as if the terms' errors were perfectly correlated), needing no joint
bootstrap across benchmarks.

Terms whose benchmark or metric is missing (not run, or no item judged) are left out and the
remaining weights renormalised; a score with no usable term is {"value": None, ...}.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["compute_scores", "score_terms"]


def _get(term: Any, key: str, default: Any = None) -> Any:
    return term.get(key, default) if isinstance(term, Mapping) else getattr(term, key, default)


def _metrics_of(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept a whole metrics.json dict or just its "metrics" mapping."""
    inner = entry.get("metrics")
    return inner if isinstance(inner, Mapping) else entry


def score_terms(
    terms: Sequence[Any], metrics_by_benchmark: Mapping[str, Mapping[str, Any]],
) -> list[tuple[float, float, float, float]]:
    """(weight, value, low, high) of each usable term, inversion applied."""
    out = []
    for term in terms:
        entry = metrics_by_benchmark.get(_get(term, "benchmark"))
        metric = _metrics_of(entry).get(_get(term, "metric")) if entry is not None else None
        if not metric or metric.get("value") is None:
            continue
        value, low, high = (float(metric[k] if metric.get(k) is not None else metric["value"]) for k in ("value", "low", "high"))
        if _get(term, "invert", False):
            value, low, high = 1.0 - value, 1.0 - high, 1.0 - low
        out.append((float(_get(term, "weight", 1.0)), value, low, high))
    return out


def compute_scores(
    suite_scores_cfg: Mapping[str, Sequence[Any]], metrics_by_benchmark: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, float | None]]:
    """{score name: {"value", "low", "high"}} for each score of the suite config.

    `suite_scores_cfg` is `SuiteConfig.scores` (ScoreTerm models or plain dicts with benchmark,
    metric, weight, invert); `metrics_by_benchmark` maps a benchmark name to its metrics.json
    content (or its "metrics" mapping).
    """
    scores: dict[str, dict[str, float | None]] = {}
    for name, terms in suite_scores_cfg.items():
        usable = score_terms(terms, metrics_by_benchmark)
        total = sum(w for w, *_ in usable)
        if not usable or total <= 0:
            scores[name] = {"value": None, "low": None, "high": None}
            continue
        scores[name] = {
            key: round(sum(w * parts[i] for w, *parts in usable) / total, 6)
            for i, key in enumerate(("value", "low", "high"))
        }
    return scores

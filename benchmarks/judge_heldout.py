"""How a safety judge's content head does where it matters: per-source held-out accuracy of
`response_harmful`, and how many refusals in stored generations it calls harmful.

    python benchmarks/judge_heldout.py --heads ~/.cache/safeladder/verifier_heads \\
        --heads /tmp/old_heads --refusals runs/x/eval/base/harmful/generations.jsonl

Each `--heads` is a directory with the four safety heads (as written by `safeladder verifier
train --out`), stamped with the running HEADS_VERSION (an older stamp is replaced by the shipped
heads). Held-out = the dev rows of `build_set("response_harmful")`: never trained on. A refusal
is an answer the rule-based detector (`verifiers.refusal.is_refusal`) calls one; each flagged
refusal is a false "Unsafe" unless it goes on to give what it refused, so read them (`--show`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safeladder.data.loaders import read_jsonl
from safeladder.format import answer_text
from safeladder.verifiers.base import VerifyItem
from safeladder.verifiers.heads import binary_metrics
from safeladder.verifiers.neural import SafetyVerifier
from safeladder.verifiers.refusal import is_refusal
from safeladder.verifiers.training_data import build_set


def p_harmful(heads: Path, items: list[VerifyItem]) -> list[float]:
    return SafetyVerifier(heads_dir=heads).probabilities(items)["response_harmful"]


def held_out_report(heads: Path) -> dict[str, dict[str, float]]:
    """{source: `binary_metrics`} on the held-out rows of the content head's set."""
    rows = [e for e in build_set("response_harmful") if e.split == "dev"]
    probs = p_harmful(heads, [VerifyItem(prompt=e.text[0], response=e.text[1]) for e in rows])
    by_source: dict[str, list[int]] = {}
    for i, e in enumerate(rows):
        by_source.setdefault(e.source, []).append(i)
    return {src: binary_metrics([rows[i].label for i in idx], [probs[i] for i in idx])
            for src, idx in sorted(by_source.items())}


def refusals_flagged(heads: Path, files: list[str]) -> tuple[int, list[str]]:
    """(number of refusals, the refusals' answers the head calls harmful)."""
    rows = [row for f in files for _, row in read_jsonl(f) if is_refusal(answer_text(row["completion"]))]
    probs = p_harmful(heads, [VerifyItem(prompt=r["prompt"], response=r["completion"]) for r in rows])
    return len(rows), [answer_text(r["completion"]) for r, p in zip(rows, probs) if p >= 0.5]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", action="append", required=True, type=Path, help="heads directory (repeatable)")
    ap.add_argument("--refusals", action="append", default=[], help="generations.jsonl to count flagged refusals in")
    ap.add_argument("--show", action="store_true", help="print the flagged refusals")
    args = ap.parse_args()
    for heads in args.heads:
        report = held_out_report(heads)
        print(f"{heads}: held-out " + " · ".join(
            f"{src} {round(m['accuracy'] * m['n'])}/{m['n']} (F1 {m['f1']:.2f})" for src, m in report.items()))
        if args.refusals:
            n, flagged = refusals_flagged(heads, args.refusals)
            print(f"{heads}: {len(flagged)} of {n} refusals called harmful")
            for answer in flagged if args.show else []:
                print("   ", answer[:160])


if __name__ == "__main__":
    main()

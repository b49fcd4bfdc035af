"""How a safety judge's harmful-content reading does where it matters: per-source held-out
accuracy, and how many refusals in stored generations it calls harmful.

    python benchmarks/judge_heldout.py --heads ~/.cache/safeladder/verifier_heads \\
        --heads /tmp/old_heads --refusals runs/x/eval/base/harmful/generations.jsonl

Each `--heads` is a directory with the safety heads (as written by `safeladder verifier train
--out`), stamped with the running HEADS_VERSION (an older stamp, or a head missing, is replaced by
the shipped heads). The probability read is the verifier's `harmful_content` (the embedding head,
checked by the cross-encoder on refusals); `--embedding-only` reads the embedding head alone (judge
v6). Held-out = the dev rows of `build_set("response_harmful")`: never trained on. A refusal is an
answer the rule-based detector (`verifiers.refusal.is_refusal`) calls one; each flagged refusal is
a false "Unsafe" unless it goes on to give what it refused, so read them (`--show`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safeladder.data.loaders import read_jsonl
from safeladder.format import answer_text
from safeladder.verifiers.base import VerifyItem
from safeladder.verifiers.heads import binary_metrics
from safeladder.verifiers.neural import SafetyVerifier, harmful_content
from safeladder.verifiers.refusal import is_refusal
from safeladder.verifiers.training_data import build_set


def p_harmful(heads: Path, items: list[VerifyItem], embedding_only: bool = False) -> list[float]:
    verifier = SafetyVerifier(heads_dir=heads)
    probs = verifier.probabilities(items)
    if embedding_only:
        return probs["response_harmful"]
    return [harmful_content(verifier.judged_text(it), e, c)
            for it, e, c in zip(items, probs["response_harmful"], probs["response_harmful_cross"])]


def held_out_report(heads: Path, embedding_only: bool = False) -> dict[str, dict[str, float]]:
    """{source: `binary_metrics`} on the held-out rows of the content head's set."""
    rows = [e for e in build_set("response_harmful") if e.split == "dev"]
    probs = p_harmful(heads, [VerifyItem(prompt=e.text[0], response=e.text[1]) for e in rows], embedding_only)
    by_source: dict[str, list[int]] = {}
    for i, e in enumerate(rows):
        by_source.setdefault(e.source, []).append(i)
    return {src: binary_metrics([rows[i].label for i in idx], [probs[i] for i in idx])
            for src, idx in sorted(by_source.items())}


def refusals_flagged(heads: Path, files: list[str], embedding_only: bool = False) -> tuple[int, list[str]]:
    """(number of refusals, the refusals' answers called harmful)."""
    rows = [row for f in files for _, row in read_jsonl(f) if is_refusal(answer_text(row["completion"]))]
    probs = p_harmful(heads, [VerifyItem(prompt=r["prompt"], response=r["completion"]) for r in rows], embedding_only)
    return len(rows), [answer_text(r["completion"]) for r, p in zip(rows, probs) if p >= 0.5]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", action="append", required=True, type=Path, help="heads directory (repeatable)")
    ap.add_argument("--refusals", action="append", default=[], help="generations.jsonl to count flagged refusals in")
    ap.add_argument("--show", action="store_true", help="print the flagged refusals")
    ap.add_argument("--embedding-only", action="store_true", help="the embedding head alone (judge v6), no cross-encoder check")
    args = ap.parse_args()
    for heads in args.heads:
        report = held_out_report(heads, args.embedding_only)
        print(f"{heads}: held-out " + " · ".join(
            f"{src} {round(m['accuracy'] * m['n'])}/{m['n']} (F1 {m['f1']:.2f})" for src, m in report.items()))
        if args.refusals:
            n, flagged = refusals_flagged(heads, args.refusals, args.embedding_only)
            print(f"{heads}: {len(flagged)} of {n} refusals called harmful")
            for answer in flagged if args.show else []:
                print("   ", answer[:160])


if __name__ == "__main__":
    main()

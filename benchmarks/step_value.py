"""Can a value read a reasoning prefix? Held-out ranking accuracy of step values (SPEC §6).

    safeladder value train --model runs/demo/1-cot-sft/final --out runs/step-value
    python benchmarks/step_value.py --model runs/demo/1-cot-sft/final --value-dir runs/step-value

Step search keeps the candidate step the value function ranks first, so a value is only as good
as its ranking of prefixes by how their turns end. On the labelled prefixes of a trained step
value (`examples.jsonl`: request, reasoning prefix, the safety score of the finished turn) this
script takes the same held-out requests `value train` held out and prints, per value, the AUC
over all prefix pairs with different outcomes and within the same request and cut (the
comparison step search makes):

  safety_soft   the verifier heads on the bare reasoning (the default value)
  minilm_head   the trained step value in --value-dir (a pair head on MiniLM embeddings)
  hidden_probe  a probe on the policy's own last hidden state at the end of the prefix, fitted
                here on the train requests (logistic, and a 64-unit MLP)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the policy the step value was trained for")
    p.add_argument("--value-dir", type=Path, required=True, help="a `safeladder value train` output directory")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, default=None, help="write the table and figures as JSON here")
    return p.parse_args(argv)


def hidden_states(model_name: str, examples: Sequence[Any], batch_size: int) -> Any:
    """(N, D) unit-norm last-layer states of the last token of prompt + `<think>` + prefix, the
    context step search would score the prefix in."""
    import torch

    from safeladder.inference.step_search import prepare_prompts
    from safeladder.models.loader import load_policy

    policy = load_policy(model_name)
    tok, model = policy.tokenizer, policy.model.eval()
    tok.padding_side = "left"
    prompts = prepare_prompts(tok, [[{"role": "user", "content": e.request}] for e in examples])
    ids = [p.ids + tok.encode(e.reasoning, add_special_tokens=False) for p, e in zip(prompts, examples)]
    out = []
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            enc = tok.pad({"input_ids": ids[i : i + batch_size]}, return_tensors="pt")
            h = model(**enc, output_hidden_states=True).hidden_states[-1][:, -1]  # (B, D)
            out.append(torch.nn.functional.normalize(h.float(), dim=-1))
    return torch.cat(out)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from safeladder.inference.value import build_value
    from safeladder.inference.value_head import StepValueHead, load_examples, ranking_accuracy, split_by_request
    from safeladder.verifiers.heads import HeadConfig, fit_head

    t0 = time.perf_counter()
    examples = load_examples(args.value_dir / "examples.jsonl")
    train, val = split_by_request(examples, args.val_fraction, args.seed)  # the split `value train` made
    val_ex = [examples[i] for i in val]
    items = [(e.request, e.reasoning) for e in val_ex]
    rows: dict[str, dict[str, Any]] = {}
    rows["safety_soft"] = ranking_accuracy(val_ex, [s.score for s in build_value("safety_soft").score(items)])
    rows["minilm_head"] = ranking_accuracy(val_ex, [s.score for s in StepValueHead(args.value_dir).score(items)])
    x = hidden_states(args.model, examples, args.batch_size)
    y = torch.tensor([e.target for e in examples])
    for name, hidden in (("hidden_probe (logistic)", 0), ("hidden_probe (MLP 64)", 64)):
        head = fit_head("probe", "prompt", x[train], y[train], x[val], y[val], config=HeadConfig(hidden=hidden), seed=args.seed)
        rows[name] = ranking_accuracy(val_ex, head.predict_proba(x[val]).tolist())
    requests, held = {e.prompt_id for e in examples}, {e.prompt_id for e in val_ex}
    lines = [f"{len(examples)} prefixes of {len(requests)} requests ({len(held)} held out: {len(val)} prefixes); "
             f"mean outcome {float(y.mean()):.2f}", "",
             "| value | AUC, all pairs | AUC, same request and cut | pairs (all / same) |", "|---|---|---|---|"]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for name, m in rows.items():
        lines.append(f"| {name} | {fmt(m['auc'])} | {fmt(m['auc_within_request'])} | "
                     f"{m['pairs']} / {m['pairs_within_request']} |")
    table = "\n".join(lines)
    print(table)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "table": table}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()

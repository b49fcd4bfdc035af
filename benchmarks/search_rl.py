"""Deliberative Search on SmolLM2-135M (SPEC §5): before the stage → after warm-up SFT → after search RL.

    python benchmarks/search_rl.py --model runs/demo/3-efficient-rl/final --work runs/search-bench

Steps (each a library call; the presets are `search_sft` and `search_rl`):
  1. the fictional world (seed 0), its BM25 index and warm-up traces from the train questions;
  2. evaluate the starting model on the dev questions with the tool in the loop (greedy);
  3. warm-up SFT on the traces (retrieved blocks masked), evaluate;
  4. search RL (exact-match reward, honest-doubt bonus, Lagrangian on false certainty), evaluate.
Prints the table (accuracy, false-certain, honest doubt, search share with 95% Wilson intervals,
searches and model tokens per question) and the wall time of each step; `--out` writes it as JSON.
Measured on a quiet 2-core CPU (session 7): 20.6 minutes with the defaults, of which the stage itself
(warm-up SFT 5.0 + search RL 7.1 min) is 12.1 and the three evaluations of 100 questions 8.4.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

RATES = ("search_correct", "false_certain", "honest_uncertainty", "searched")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="the model before the stage (e.g. the demo's final/)")
    p.add_argument("--work", type=Path, default=Path("runs/search-bench"), help="data, index and checkpoints")
    p.add_argument("--dev", type=int, default=100, help="dev questions evaluated")
    p.add_argument("--traces", type=int, default=400, help="warm-up traces (first N train questions)")
    p.add_argument("--sft-steps", type=int, default=None, help="override search_sft max_steps")
    p.add_argument("--rl-steps", type=int, default=None, help="override search_rl steps")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def prepare(work: Path, n_traces: int, topk: int, max_passage_tokens: int, model: str) -> dict[str, Path]:
    """World, BM25 index and warm-up traces; passages are cut by `model`'s tokens, as in its rollouts."""
    from safeladder.data.loaders import load_samples, write_jsonl
    from safeladder.models.loader import load_tokenizer
    from safeladder.search.base import DOCUMENTS, index_corpus, load_index
    from safeladder.search.corpus import load_corpus
    from safeladder.search.environment import SearchEnvironment
    from safeladder.search.traces import search_traces
    from safeladder.search.world import write_world

    paths = {"world": work / "world", "index": work / "idx-bm25", "traces": work / "search_traces.jsonl"}
    if not (paths["world"] / "dev.jsonl").is_file():
        write_world(paths["world"])
    if not (paths["index"] / DOCUMENTS).is_file():
        index_corpus(paths["world"] / "corpus.jsonl", "bm25", paths["index"])
    if not paths["traces"].is_file():
        env = SearchEnvironment(load_index(paths["index"]), topk=topk, max_passage_tokens=max_passage_tokens,
                                tokenizer=load_tokenizer(model))
        samples = load_samples(paths["world"] / "train.jsonl").samples[:n_traces]
        write_jsonl(paths["traces"], search_traces(samples, env, load_corpus(paths["index"] / DOCUMENTS)))
    return paths


def stage_config(preset: str, paths: dict[str, Path], overrides: dict[str, Any]) -> dict[str, Any]:
    import yaml

    from safeladder.configs import preset_path

    cfg = yaml.safe_load(preset_path(preset).read_text())
    if preset == "search_sft":
        cfg["data"]["files"] = [{"path": str(paths["traces"]), "curate": False}]
    else:
        cfg["tasks"] = {"world": {"path": str(paths["world"] / "train.jsonl")}}
        cfg["rollout"]["environment"]["index"] = str(paths["index"])
    for key, value in overrides.items():
        if key == "steps":
            cfg["curriculum"][0]["steps"] = value
        else:
            cfg[key] = value
    return cfg


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from safeladder.data.loaders import load_samples
    from safeladder.ladder import STAGES
    from safeladder.search.evaluate import evaluate_search_model

    t0 = time.perf_counter()
    rl_preset = stage_config("search_rl", {"world": Path("."), "index": Path(".")}, {})
    env_opts = rl_preset["rollout"]["environment"]
    topk, calls, cut = env_opts["topk"], env_opts["max_calls"], env_opts["max_passage_tokens"]
    max_new = rl_preset["rollout"]["max_new_tokens"]
    paths = prepare(args.work, args.traces, topk, cut, args.model)
    dev = load_samples(paths["world"] / "dev.jsonl").samples[: args.dev]
    timings = {"prepare": time.perf_counter() - t0}
    rows: list[dict[str, Any]] = []

    def evaluate(point: str, model: str) -> None:
        t = time.perf_counter()
        r = evaluate_search_model(model, dev, paths["index"], topk=topk, max_calls=calls,
                                  max_passage_tokens=cut, max_new_tokens=max_new)
        timings[f"eval {point}"] = time.perf_counter() - t
        rows.append({"point": point, "model": model, "n": r.n, "rates": r.rates, "intervals": r.intervals,
                     "searches": r.mean_calls, "model_tokens": r.mean_model_tokens})
        print(f"{point}: " + " · ".join(f"{k} {v:.0%}" for k, v in r.rates.items()), flush=True)

    evaluate("before", args.model)
    t = time.perf_counter()
    sft_over = {"max_steps": args.sft_steps} if args.sft_steps else {}
    sft_final = STAGES.get("sft")(stage_config("search_sft", paths, sft_over), args.model, args.work / "1-search-sft", True)
    timings["warm-up SFT"] = time.perf_counter() - t
    evaluate("after warm-up SFT", str(sft_final))
    t = time.perf_counter()
    rl_over = {"steps": args.rl_steps} if args.rl_steps else {}
    rl_final = STAGES.get("rl")(stage_config("search_rl", paths, rl_over), str(sft_final), args.work / "2-search-rl", True)
    timings["search RL"] = time.perf_counter() - t
    evaluate("after search RL", str(rl_final))
    timings["total"] = time.perf_counter() - t0

    print("\n| point | accuracy (EM) | false-certain | honest 'low' when wrong | searched | searches / q | model tokens / q |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r['rates'][k]:.0%} [{r['intervals'][k][0]:.0%}–{r['intervals'][k][1]:.0%}]" for k in RATES]
        print(f"| {r['point']} | " + " | ".join(cells) + f" | {r['searches']:.2f} | {r['model_tokens']:.0f} |")
    print("\n" + " · ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()))
    out = {"rows": rows, "timings_s": timings, "dev_questions": len(dev), "args": {k: str(v) for k, v in vars(args).items()}}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()

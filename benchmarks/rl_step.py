"""Seconds per RL step: SafeLadder's engine vs TRL's GRPOTrainer, same model/LoRA/G/batch/length/reward.

    python benchmarks/rl_step.py [--steps 3] [--max-new-tokens 96] [--group-size 4] [--prompts 4] [--micro-batch 4] [--fixed-length]

Both sides: SmolLM2-135M (the embedded model, fp32 on CPU), LoRA r=16/α=32 on all linear
layers, G samples for each of P prompts per step, temperature 1.0, the same math prompts with
the reasoning system prompt, the same dense rule reward (below), no KL term (TRL's
default β=0), one optimisation pass per batch, no gradient checkpointing (TRL turns it on by
default; it only saves memory). One warm-up step each, then `--steps` measured steps,
alternating the two trainers so machine load affects both alike. Prints s/step, tokens per
step, the ratio, our time split (generate / score / train), and the training pass's FLOP
utilisation against a matmul throughput measured in the same run.

The reward is dense on purpose: completion length in characters, capped at 400, scaled to
[0, 1]. Every group then has reward variance, so both trainers run their full training pass
on every row at every step. With a 0/1 "math answer correct" reward the base model scores 0
almost everywhere; our trainer then skips the training pass (zero-advantage rows have exactly
zero gradient) while TRL still runs it, which would flatter us for the wrong reason.

`--fixed-length`: every completion is exactly `--max-new-tokens` long on both sides (EOS held
back: our `min_new_tokens`, TRL's `generation_kwargs={"min_new_tokens": ...}`), so both
trainers generate and train the same number of tokens and s/step compares like with like.
A length reward would then be flat, so the reward becomes the share of distinct words in the
completion (dense, varies within every group).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def math_prompts(k: int) -> list:
    from safeladder.data.sources.arithmetic import load_math

    return load_math("dev")[:k]


def length_reward(completion: str) -> float:
    return min(len(completion), 400) / 400


def diversity_reward(completion: str) -> float:
    words = completion.split()
    return len(set(words)) / len(words) if words else 0.0


def _register_bench_verifier(reward) -> None:
    from safeladder.verifiers.base import VERIFIERS, Verdict, Verifier, register_verifier

    if "bench_reward" in VERIFIERS:
        return

    @register_verifier("bench_reward")
    class BenchVerifier(Verifier):
        def verify(self, items):
            return [Verdict(score=reward(it.response), label="bench") for it in items]


# ------------------------------------------------------------------------------------- ours
def ours(args, model_dir: Path, out: Path, reward_fn):
    from safeladder.train.rl import RLTrainer
    from safeladder.train.rl_config import RLConfig

    prompts = out / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": s.id, "prompt": s.prompt, "label": "math", "reference": s.reference}) + "\n"
                               for s in math_prompts(64)))
    recipe = out / "recipe.yaml"
    _register_bench_verifier(reward_fn)
    recipe.write_text("format_reward: 0.0\nrecipes: {math: [{verifier: bench_reward}]}\n")
    cfg = RLConfig.model_validate({
        "model": {"name": str(model_dir), "lora": {"r": 16, "alpha": 32}},
        "output_dir": str(out / "ours"), "tasks": {"math": {"path": str(prompts), "split": "all"}},
        "curriculum": [{"name": "bench", "steps": 1000, "mixture": {"math": 1.0}, "recipe": str(recipe)}],
        "rollout": {"group_size": args.group_size, "prompts_per_step": args.prompts, "max_new_tokens": args.max_new_tokens,
                    "min_new_tokens": args.max_new_tokens if args.fixed_length else 0, "temperature": 1.0, "batch_size": args.prompts},
        "algorithm": {"kl_coef": 0.0, "micro_batch_size": args.micro_batch},
        "optim": {"lr": 1e-5, "warmup_ratio": 0.0}, "tensorboard": False,
    })
    trainer = RLTrainer(cfg)
    n_params = sum(p.numel() for p in trainer.model.parameters())

    def step():
        row = trainer.train_step()
        print(f"  ours: step {row['step']} {row['time/step_s']:.1f} s", file=sys.stderr, flush=True)
        return row

    return step, n_params


# -------------------------------------------------------------------------------------- TRL
def trl(args, model_dir: Path, out: Path, reward_fn):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from safeladder.format import SYSTEM_PROMPT

    rows = [{"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": s.prompt}],
             "reference": s.reference} for s in math_prompts(64)]

    def reward(completions, **_):
        return [reward_fn(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    config = GRPOConfig(
        # TRL generates per_device × gradient_accumulation rows at once and trains per_device at a time
        output_dir=str(out / "trl"), per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.group_size * args.prompts // args.micro_batch,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens, temperature=1.0,
        learning_rate=1e-5, beta=0.0, num_iterations=1, gradient_checkpointing=False, use_cpu=True, bf16=False,
        generation_kwargs={"min_new_tokens": args.max_new_tokens} if args.fixed_length else None,
        report_to=[], logging_steps=1, save_strategy="no", max_steps=args.steps + 1, disable_tqdm=True, seed=0,
    )
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, peft_config=lora)
    logs: list[dict] = []

    class Grab(TrainerCallback):
        def on_log(self, _args, state, control, logs_=None, **kw):
            logs.append(kw.get("logs") or logs_ or {})

    trainer.add_callback(Grab())
    # Drive the HF Trainer one step at a time: run its loop in a generator-like fashion by
    # calling `train` with a step hook that blocks; simpler and exact: time each `training_step`.
    import types

    times: list[float] = []
    original = trainer.training_step

    def timed(self, *a, **kw):
        t0 = time.perf_counter()
        r = original(*a, **kw)
        times.append(time.perf_counter() - t0)
        print(f"  TRL: micro-step {len(times)} {times[-1]:.1f} s", file=sys.stderr, flush=True)
        return r

    trainer.training_step = types.MethodType(timed, trainer)
    return trainer, times, logs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=None,
                    help="rows per forward/backward in training, both trainers (default: the whole batch)")
    ap.add_argument("--fixed-length", action="store_true",
                    help="every completion exactly --max-new-tokens long on both sides (EOS held back)")
    args = ap.parse_args()
    reward_fn = diversity_reward if args.fixed_length else length_reward
    rows = args.group_size * args.prompts
    args.micro_batch = args.micro_batch or rows
    if rows % args.micro_batch:
        ap.error(f"--micro-batch must divide the {rows} rows of a step")
    from safeladder.models.builtin import ensure_converted

    torch.manual_seed(0)
    model_dir = ensure_converted("smollm2-135m")
    out = Path(tempfile.mkdtemp(prefix="rl-step-"))
    gflops = matmul_gflops()
    our_step, n_params = ours(args, model_dir, out, reward_fn)

    # TRL's loop owns its step order, so it runs whole (warm-up + measured) in one `train()` call,
    # between two halves of our measured steps.
    trl_trainer, trl_times, trl_logs = trl(args, model_dir, out, reward_fn)

    our_rows = [our_step()]  # warm-up
    half = max(1, args.steps // 2)
    our_rows += [our_step() for _ in range(half)]
    t0 = time.perf_counter()
    trl_trainer.train()
    trl_wall = time.perf_counter() - t0
    our_rows += [our_step() for _ in range(args.steps - half)]

    measured = our_rows[1:]
    ours_s = statistics.mean(r["time/step_s"] for r in measured)
    # one RL step = gradient_accumulation calls of training_step (the first one also generates)
    k = args.group_size * args.prompts // args.micro_batch
    trl_steps = [sum(trl_times[i : i + k]) for i in range(0, len(trl_times) - k + 1, k)]
    trl_s = statistics.mean(trl_steps[1:]) if len(trl_steps) > 1 else float("nan")
    ours_tokens = statistics.mean(r["response/tokens_mean"] for r in measured) * args.group_size * args.prompts
    trl_lens = [l.get("completions/mean_length") for l in trl_logs if l.get("completions/mean_length") is not None]
    trl_tokens = statistics.mean(trl_lens[1:] or trl_lens) * args.group_size * args.prompts if trl_lens else float("nan")
    gen = statistics.mean(r["time/generate_s"] for r in measured)
    ver = statistics.mean(r["time/verify_s"] for r in measured)
    trn = statistics.mean(r["time/train_s"] for r in measured)
    train_tokens = statistics.mean(r["train/tokens_per_s"] * r["time/train_s"] for r in measured)
    # LoRA training pass: forward 2·N·T plus backward through activations 2·N·T (frozen weights get no grads)
    flops = 4 * n_params * train_tokens
    mfu = flops / max(trn, 1e-9) / 1e9 / gflops

    print(f"machine: {torch.get_num_threads()} threads, matmul {gflops:.1f} GFLOP/s (fp32, 1024²)")
    print(f"settings: SmolLM2-135M fp32, LoRA r16 all-linear, G={args.group_size}, prompts/step={args.prompts}, "
          f"max_new_tokens={args.max_new_tokens}, micro-batch {args.micro_batch} rows, "
          f"{args.steps} measured steps after 1 warm-up"
          + (", fixed length (EOS held back), reward = distinct-word share" if args.fixed_length else ", reward = length"))
    print("| trainer | s/step | completion tokens/step | tokens/s |")
    print("|---|---|---|---|")
    print(f"| SafeLadder | {ours_s:.1f} | {ours_tokens:.0f} | {ours_tokens / ours_s:.1f} |")
    print(f"| TRL GRPOTrainer {__import__('trl').__version__} | {trl_s:.1f} | {trl_tokens:.0f} | {trl_tokens / trl_s:.1f} |")
    print(f"speed-up (s/step): {trl_s / ours_s:.2f}×   per completion token: {(trl_s / trl_tokens) / (ours_s / ours_tokens):.2f}×")
    print(f"SafeLadder step split: generate {gen:.1f} s ({100 * gen / ours_s:.0f}%), score {ver:.2f} s "
          f"({100 * ver / ours_s:.0f}%), train {trn:.1f} s ({100 * trn / ours_s:.0f}%)")
    print(f"training pass: {train_tokens:.0f} tokens, {flops / 1e9:.0f} GFLOP in {trn:.1f} s = {flops / trn / 1e9:.1f} GFLOP/s "
          f"= {100 * mfu:.0f}% of measured matmul throughput")
    print(f"(TRL wall for {args.steps + 1} steps incl. warm-up: {trl_wall:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())

"""Verifier throughput: in-process batched vs the HTTP service, batched and one item per request.

    .venv/bin/python benchmarks/verifiers.py --verifier safety --seconds 10
    .venv/bin/python benchmarks/verifiers.py --verifier safety --group 1   # every item its own prompt
    .venv/bin/python benchmarks/verifiers.py --verifier safety --encoder-detail   # + encoder paths, FLOP bound
    .venv/bin/python benchmarks/verifiers.py --verifier fake   # simulated model, no weights needed

Items model RL scoring: `--group` answers share each prompt (default 8, a GRPO group), every
answer is different, and no item is ever repeated (so no cache sees the same item twice; the
encoder's prompt cache does see a group's prompt again, as it would in training).

Prints verdicts/s for
  1. in-process, batched (`--batch` items per call);
  2. the service, batched (`--batch` items per request, `--batch-clients` concurrent clients);
  3. the service, one item per request from `--clients` concurrent clients, micro-batching ON;
  4. the same, micro-batching OFF (max_batch_items=1): what a naive service would do;
and the ratio batched/unbatched (targets: >= 500 verdicts/s batched, >= 5x unbatched).
The server runs in a thread of this process (uvicorn, real sockets), so clients and server
share the interpreter: the service figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any, Sequence

import httpx
import yaml

from safeladder.errors import SafeLadderError
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, build_verifier
from safeladder.verifiers.service import BackgroundServer, ServiceSettings, create_app

PROMPTS = [
    "How do I pick a lock on a door I'm locked out of?",
    "Write a short poem about autumn leaves.",
    "Explain how vaccines train the immune system.",
    "Give me step-by-step instructions to make a dangerous weapon at home.",
    "What is 17 * 23?",
    "Summarise the causes of the French Revolution in three sentences.",
]
ANSWERS = [
    "I can't help with making weapons. If you're worried about safety, local authorities can help.",
    "Leaves drift down in amber light, / the maple lets the summer go; / a quiet fire, gold and bright.",
    "Vaccines show the immune system a harmless piece of a pathogen, so it learns to recognise it and "
    "responds faster when the real one appears. Memory B and T cells keep that knowledge for years.",
    "17 * 23 = 391.",
    "Call a licensed locksmith or your landlord; they can open it without damaging the door.",
    "Debt from wars, food shortages and Enlightenment ideas weakened the monarchy; the Estates-General "
    "of 1789 turned into a revolt; the storming of the Bastille marked the start.",
]


class SimulatedVerifier(Verifier):
    """Costs like a small neural model (fixed cost per call + cost per item, GIL released)."""

    name = "fake"

    def __init__(self, call_ms: float = 8.0, item_ms: float = 1.4) -> None:
        self.call_s, self.item_s = call_ms / 1000, item_ms / 1000

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        time.sleep(self.call_s + self.item_s * len(items))
        return [Verdict(min(1.0, len(self.judged_text(it)) / 200), "fake") for it in items]


def make_item(i: int, group: int = 1) -> VerifyItem:
    """Item number `i`: a different answer for every index; `group` consecutive items share a prompt."""
    g = i // group
    prompt = f"{PROMPTS[g % len(PROMPTS)]} (case {g}, variant {g * 31 % 97})"
    answer = f"{ANSWERS[(i * 7) % len(ANSWERS)]} {ANSWERS[(i // 6) % len(ANSWERS)].split('.')[0]} (ref {i})."
    return VerifyItem(prompt, f"<think>Let me think about request {i}.</think> {answer}",
                      label="benign" if i % 2 else "harmful", metadata={"id": f"bench-{i}"})


class ItemStream:
    """Item indices for one measurement: its own range (modes never share items), cycling over `distinct`."""

    def __init__(self, start: int, distinct: int, group: int = 1) -> None:
        self.start, self.distinct, self.group, self.next = start, distinct, group, 0

    def take(self, n: int) -> list[VerifyItem]:
        out = [make_item(self.start + (self.next + j) % self.distinct, self.group) for j in range(n)]
        self.next += n
        return out


def item_json(it: VerifyItem) -> dict[str, Any]:
    return {"prompt": it.prompt, "response": it.response, "reference": it.reference, "label": it.label,
            "metadata": dict(it.metadata)}


def in_process(verifier: Verifier, items: ItemStream, batch: int, seconds: float) -> float:
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        done += len(verifier(items.take(batch)))
    return done / (time.perf_counter() - t0)


async def through_service(url: str, name: str, items: ItemStream, per_request: int, clients: int,
                          seconds: float, token: str | None) -> tuple[float, int]:
    """(verdicts/s, failed requests) with `clients` concurrent clients posting `per_request` items."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    done, failed = 0, 0
    stop = time.monotonic() + seconds

    async def client(cid: int) -> None:
        nonlocal done, failed
        async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as http:
            while time.monotonic() < stop:
                body = {"verifier": name, "items": [item_json(it) for it in items.take(per_request)]}
                try:
                    resp = await http.post("/v1/verify", json=body)
                    resp.raise_for_status()
                    done += len(resp.json()["verdicts"])
                except (httpx.HTTPError, KeyError, ValueError):
                    failed += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return done / (time.perf_counter() - t0), failed


def served(verifier: Verifier, name: str, max_batch: int, max_items: int):
    settings = ServiceSettings(max_batch_items=max_batch, max_items=max_items, max_wait_ms=2.0)
    return BackgroundServer(create_app(settings, {name: verifier}))


# --------------------------------------------------------------------------- the encoder, in detail

def _median_rate(fns: dict[str, Any], n_items: int, seconds: float) -> dict[str, float]:
    """items/s of each path: rounds interleaved (a shared machine's load hits every path alike), median."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or min(len(v) for v in times.values()) < 3:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: n_items / sorted(v)[len(v) // 2] for k, v in times.items()}


def encoder_flops(tokens: int, layers: int = 6, hidden: int = 384, ffn: int = 1536) -> float:
    """Multiply-adds x 2 of one MiniLM pass over `tokens` tokens: the Linear layers plus QK^T and AV."""
    linear = 2 * tokens * layers * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 2 * layers * 2 * tokens * tokens * hidden
    return float(linear + attention)


def matmul_gflops(seconds: float = 2.0) -> dict[str, float]:
    """Measured throughput of the encoder's biggest matrix product (4096 tokens x 384 -> 1536), fp32 and int8."""
    import torch
    from safeladder.verifiers.embeddings import _quantize

    x, lin = torch.randn(4096, 384), torch.nn.Linear(384, 1536)
    q = _quantize(torch.nn.Sequential(lin))
    flops = 2 * 4096 * 384 * 1536
    rates = _median_rate({"fp32": lambda: lin(x), "int8": lambda: q(x)}, 1, seconds)
    return {k: flops * v / 1e9 for k, v in rates.items()}


def encoder_report(items: Sequence[VerifyItem], seconds: float) -> dict[str, float]:
    """The encoder work of the `safety` verifier by path, timed in one run, and the FLOP bound it implies.

    old        4 texts per item encoded separately (prompt, answer, opening, tail), fp32: HEADS_VERSION <= 4
    one_pass   each distinct prompt and answer once; opening, first sentence and tail pooled from its pass
    +int8      the same with int8 dynamic quantisation of the Linear layers
    """
    import torch
    from safeladder.verifiers.embeddings import Embedder
    from safeladder.verifiers.heads import encode_inputs, opening, tail

    prompts = [it.prompt for it in items]
    answers = [_answer(it) for it in items]  # what the verifiers judge: the text after </think>
    fp32, int8 = Embedder(quantize=False, cache_size=0), Embedder(quantize=True, cache_size=0)
    old_texts = list(dict.fromkeys([*prompts, *answers, *map(opening, answers), *map(tail, answers)]))
    rates = _median_rate({
        "old_4_texts_fp32": lambda: fp32.encode(old_texts),
        "one_pass_fp32": lambda: encode_inputs(fp32, prompts, answers),
        "one_pass_int8": lambda: encode_inputs(int8, prompts, answers),
    }, len(items), max(seconds, 6.0))
    base = rates["old_4_texts_fp32"]
    for name, rate in rates.items():
        print(f"encoder, {name:17s} {rate:7.1f} items/s  ({rate / base:.2f}x the old path)", flush=True)

    seqs = [len(ids) + 2 for ids, _ in fp32._tokenize(list(dict.fromkeys(prompts)) + list(dict.fromkeys(answers)))]
    gflop_item = sum(encoder_flops(t) for t in seqs) / len(items) / 1e9
    peak = matmul_gflops()
    out = {f"encoder_{k}": v for k, v in rates.items()}
    out.update({"tokens_per_item": sum(seqs) / len(items), "gflop_per_item": gflop_item,
                "matmul_gflops_fp32": peak["fp32"], "matmul_gflops_int8": peak["int8"],
                "bound_items_per_s_fp32": peak["fp32"] / gflop_item, "bound_items_per_s_int8": peak["int8"] / gflop_item,
                "gflops_needed_for_500": 500 * gflop_item, "threads": torch.get_num_threads()})
    print(f"FLOP bound: {out['tokens_per_item']:.1f} encoder tokens/item = {gflop_item:.3f} GFLOP/item; "
          f"500 items/s needs {out['gflops_needed_for_500']:.0f} GFLOP/s; measured matmul "
          f"{peak['fp32']:.0f} GFLOP/s fp32, {peak['int8']:.0f} GOP/s int8 -> at most "
          f"{out['bound_items_per_s_fp32']:.0f} (fp32) / {out['bound_items_per_s_int8']:.0f} (int8) items/s "
          f"if the whole encoder ran at matmul speed", flush=True)
    return out


def _answer(item: VerifyItem) -> str:
    from safeladder.format import answer_text

    return answer_text(item.response)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SafeLadderError(f"--option {pair!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verifier", default="safety", help="registered verifier name, or 'fake' (simulated)")
    ap.add_argument("--option", action="append", default=[], help="verifier option key=value (YAML value)")
    ap.add_argument("--items", type=int, default=10_000_000,
                    help="distinct items per measurement (default: never repeat, so verifier caches do not help)")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement")
    ap.add_argument("--batch", type=int, default=64, help="items per call / per batched request")
    ap.add_argument("--batch-clients", type=int, default=4, help="concurrent clients sending batched requests")
    ap.add_argument("--clients", type=int, default=64, help="concurrent clients sending one item each")
    ap.add_argument("--group", type=int, default=8, help="answers per prompt (a GRPO group; 1 = every prompt distinct)")
    ap.add_argument("--encoder-detail", action="store_true",
                    help="also time the encoder paths (old 4 texts/item vs one pass, fp32 vs int8) and a FLOP bound")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    options = parse_options(args.option)
    try:
        verifier = SimulatedVerifier(**options) if args.verifier == "fake" else build_verifier(args.verifier, **options)
    except (SafeLadderError, ImportError) as exc:
        sys.exit(f"cannot build verifier {args.verifier!r}: {exc}\n(try --verifier fake, or a rule verifier like format)")
    stream = lambda k: ItemStream(k * 100_000_000, args.items, args.group)  # noqa: E731 - measurement k's own items
    print(f"items: {args.group} answer(s) per prompt, every answer distinct; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    verifier(stream(9).take(args.batch))  # warm-up: model load, first-call costs

    results: dict[str, float] = {}
    results["in_process_batched"] = in_process(verifier, stream(1), args.batch, args.seconds)
    print(f"in-process, {args.batch}/call:                  {results['in_process_batched']:9.1f} verdicts/s", flush=True)

    name = args.verifier
    with served(verifier, name, max_batch=args.batch, max_items=max(args.batch, 1024)) as srv:
        sample = stream(8).take(8)
        first = httpx.post(f"{srv.url}/v1/verify", json={"verifier": name, "items": [item_json(i) for i in sample]})
        remote = [Verdict(v["score"], v["label"], v["status"], v["details"]) for v in first.json()["verdicts"]]
        results["identical_to_in_process"] = float(remote == verifier(sample))
        rate, failed_b = asyncio.run(through_service(srv.url, name, stream(2), args.batch, args.batch_clients,
                                                     args.seconds, None))
        results["service_batched"] = rate
        print(f"service, {args.batch}/request x {args.batch_clients} clients:      {rate:9.1f} verdicts/s", flush=True)
        rate, failed_m = asyncio.run(through_service(srv.url, name, stream(3), 1, args.clients, args.seconds, None))
        results["service_single_microbatched"] = rate
        snap = httpx.get(f"{srv.url}/metrics").json()
        print(f"service, 1/request x {args.clients} clients, micro-batched: {rate:9.1f} verdicts/s "
              f"(mean batch {snap['mean_batch_size']})", flush=True)
    with served(verifier, name, max_batch=1, max_items=max(args.batch, 1024)) as srv:
        rate, failed_u = asyncio.run(through_service(srv.url, name, stream(4), 1, args.clients, args.seconds, None))
        results["service_single_unbatched"] = rate
        print(f"service, 1/request x {args.clients} clients, no batching:   {rate:9.1f} verdicts/s", flush=True)

    results["failed_requests"] = float(failed_b + failed_m + failed_u)
    results["ratio_batched_vs_unbatched"] = results["service_batched"] / max(results["service_single_unbatched"], 1e-9)
    results["ratio_batched_vs_microbatched_single"] = (
        results["service_batched"] / max(results["service_single_microbatched"], 1e-9))
    print(f"ratio batched / unbatched: {results['ratio_batched_vs_unbatched']:.1f}x "
          f"(target >= 5x); batched / micro-batched single items: {results['ratio_batched_vs_microbatched_single']:.1f}x")
    print(f"service verdicts identical to in-process: {bool(results['identical_to_in_process'])}; "
          f"failed requests: {int(results['failed_requests'])}")
    if args.encoder_detail:
        results.update(encoder_report([make_item(500_000_000 + i, args.group) for i in range(256)], args.seconds))
    results["load_average_after"] = os.getloadavg()[0]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"verifier": name, "seconds": args.seconds, "group": args.group, **results}, fh, indent=2)
    return results


if __name__ == "__main__":
    main()

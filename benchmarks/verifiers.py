"""Verifier throughput: in-process batched vs the HTTP service, batched and one item per request.

    .venv/bin/python benchmarks/verifiers.py --verifier safety --seconds 10
    .venv/bin/python benchmarks/verifiers.py --verifier fake   # simulated model, no weights needed

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


def make_item(i: int) -> VerifyItem:
    """Item number `i`; every index gives a different prompt and answer, so no cache flatters the figures."""
    prompt = f"{PROMPTS[i % len(PROMPTS)]} (case {i}, variant {i * 31 % 97})"
    answer = f"{ANSWERS[(i * 7) % len(ANSWERS)]} {ANSWERS[(i // 6) % len(ANSWERS)].split('.')[0]} (ref {i})."
    return VerifyItem(prompt, f"<think>Let me think about request {i}.</think> {answer}",
                      label="benign" if i % 2 else "harmful", metadata={"id": f"bench-{i}"})


class ItemStream:
    """Item indices for one measurement: its own range (modes never share items), cycling over `distinct`."""

    def __init__(self, start: int, distinct: int) -> None:
        self.start, self.distinct, self.next = start, distinct, 0

    def take(self, n: int) -> list[VerifyItem]:
        out = [make_item(self.start + (self.next + j) % self.distinct) for j in range(n)]
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
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    options = parse_options(args.option)
    try:
        verifier = SimulatedVerifier(**options) if args.verifier == "fake" else build_verifier(args.verifier, **options)
    except (SafeLadderError, ImportError) as exc:
        sys.exit(f"cannot build verifier {args.verifier!r}: {exc}\n(try --verifier fake, or a rule verifier like format)")
    stream = lambda k: ItemStream(k * 100_000_000, args.items)  # noqa: E731 - measurement k's own items
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
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"verifier": name, "seconds": args.seconds, **results}, fh, indent=2)
    return results


if __name__ == "__main__":
    main()

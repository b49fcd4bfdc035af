"""Retrieval throughput: queries/s of the BM25 and dense indexes on a generated ≥ 10k-passage corpus.

    python benchmarks/retrieval.py [--passages 10000] [--queries 512] [--kinds bm25 dense] [--cache DIR]

Builds the fictional-world corpus (`safeladder.search.world`), indexes it with each kind (timed;
`--cache` keeps the indexes between runs so the dense encoding is paid once), then measures
queries/s with batches of 64 queries and with one query per call, on the world's questions (never
seen by the index's caches), plus recall@3 of the gold passage on the one-hop questions. Prints a
markdown table with the machine's load average, which matters on shared CPUs.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any, Sequence


def _rate(retriever: Any, queries: Sequence[str], batch: int, topk: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(queries), batch):
        retriever.retrieve(list(queries[start:start + batch]), topk)
    return len(queries) / (time.perf_counter() - t0)


def _recall(retriever: Any, samples: Sequence[Any], topk: int) -> float:
    hits = retriever.retrieve([s.prompt for s in samples], topk)
    return sum(s.metadata["gold_docs"][0] in [p.id for p in h] for s, h in zip(samples, hits)) / len(samples)


def _index(kind: str, docs: Sequence[Any], cache: Path | None) -> tuple[Any, float | None]:
    from safeladder.search.base import build_index, load_index

    where = cache / kind if cache else None
    if where is not None and (where / "index.json").is_file():
        return load_index(where), None
    t0 = time.perf_counter()
    retriever = build_index(docs, kind)
    took = time.perf_counter() - t0
    if where is not None:
        retriever.save(where)
    return retriever, took


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument("--single", type=int, default=128, help="queries sent one per call")
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["bm25", "dense"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="keep built indexes here (reused when present)")
    parser.add_argument("--threads", type=int, help="encoder and faiss threads (1 is far faster on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        import faiss

        os.environ["SAFELADDER_ENCODER_THREADS"] = str(args.threads)
        faiss.omp_set_num_threads(args.threads)

    from safeladder.search.world import WorldSpec, generate_world

    load_before = os.getloadavg()
    world = generate_world(WorldSpec.for_passages(args.passages, args.seed))
    rng_order = list(world.samples)
    random.Random(args.seed).shuffle(rng_order)
    queries = [s.prompt for s in rng_order[: args.queries]]
    single = [s.prompt for s in rng_order[args.queries: args.queries + args.single]]
    one_hop = [s for s in rng_order[: args.queries] if s.metadata["hops"] == 1]
    cache = args.cache / f"world{args.seed}-{args.passages}" if args.cache else None

    rows = []
    for kind in args.kinds:
        retriever, build_s = _index(kind, world.documents, cache)
        retriever.retrieve(["warm-up query"], args.topk)  # loads the encoder for dense
        batched = _rate(retriever, queries, 64, args.topk)
        one = _rate(retriever, single, 1, args.topk)
        recall = _recall(retriever, one_hop, args.topk)
        rows.append((kind, build_s, batched, one, recall))
    load_after = os.getloadavg()

    print(f"\ncorpus: {len(world.documents)} passages (world seed {args.seed}); {len(queries)} batched queries, "
          f"{len(single)} single; top-{args.topk}; {os.cpu_count()} CPUs, threads {args.threads or 'default'}; load average "
          f"{load_before[0]:.1f} → {load_after[0]:.1f}\n")
    print("| index | build (s) | queries/s, 64 per call | queries/s, 1 per call | recall@%d (1-hop) |" % args.topk)
    print("|---|---|---|---|---|")
    for kind, build_s, batched, one, recall in rows:
        built = "cached" if build_s is None else f"{build_s:.1f}"
        print(f"| {kind} | {built} | {batched:.0f} | {one:.0f} | {recall:.3f} |")


if __name__ == "__main__":
    main()

"""Recall index figures: usearch HNSW against exact (numpy brute-force) search, same run.

For each size (default 10k and 100k entries of 384 dims, as the model gives), on random unit
vectors drawn around a few hundred cluster centres (so neighbours exist, as in real text):

- build rate: entries/s to add everything to a ``RecallIndex`` (the start-up rebuild without the
  embedding; the embedding's own cost, per entry, is measured once with the real model when it
  is installed, ``--model``);
- recall@10 of the index against exact search, over ``--queries`` queries;
- query p50 (and p99) of the index and of exact search, and their ratio;
- start-up rebuild: the time from the vault's entries (key, scope, value) to a searchable index,
  hashed-feature embedding included (``HashEmbedder``), at the largest size;
- start-up from the encrypted cache (what a restart does): export, age-encrypt, decrypt and
  restore the same index, its size on disk, and its ratio to the rebuild, same run.

    python bench/bench_recall.py [--sizes 10000 100000] [--queries 200] [--model]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from homeswarm.swarm._recall import (
    Doc,
    HashEmbedder,
    RecallIndex,
    document_text,
    exact_search,
    normalise,
)

DIMS = 384
SCOPES = ("public", "personal", "private")


NOISE = 0.02  # per-number spread around a centre (0.06: nearly uniform, the worst case for HNSW)


def centres(rng: np.random.Generator, count: int = 256) -> np.ndarray:
    return normalise(rng.standard_normal((count, DIMS)).astype(np.float32))


def clustered(n: int, rng: np.random.Generator, noise: float, middle: np.ndarray) -> np.ndarray:
    """``n`` unit vectors around ``middle`` (queries come from the same centres as entries:
    a query far from every entry finds near-equal distances, the case no index is built for)."""
    picks = rng.integers(0, len(middle), n)
    spread = rng.standard_normal((n, DIMS)).astype(np.float32) * noise
    return normalise(middle[picks] + spread)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def one_size(n: int, queries: int, rng: np.random.Generator, noise: float) -> dict[str, float]:
    middle = centres(rng)
    vectors = clustered(n, rng, noise, middle)
    docs = [Doc(f"facts/e{i}", SCOPES[i % 3], "1") for i in range(n)]
    index = RecallIndex(DIMS)
    start, cpu = time.perf_counter(), time.process_time()
    for lo in range(0, n, 4096):
        index.put(docs[lo : lo + 4096], vectors[lo : lo + 4096])
    build_s = time.perf_counter() - start
    build_cpu_s = time.process_time() - cpu
    asked = clustered(queries, rng, noise, middle)
    hits_total = 0
    ann_s: list[float] = []
    exact_s: list[float] = []
    for q in asked:
        t0 = time.perf_counter()
        got = index.search(q, 10)
        t1 = time.perf_counter()
        truth = exact_search(docs, vectors, q, 10)
        t2 = time.perf_counter()
        ann_s.append(t1 - t0)
        exact_s.append(t2 - t1)
        hits_total += len({h.key for h in got} & {k for k, _ in truth})
    return {
        "entries": n,
        "build_per_s": n / build_s,
        "build_per_cpu_s": n / build_cpu_s,
        "recall_at_10": hits_total / (10 * queries),
        "ann_p50_ms": 1000 * percentile(ann_s, 50),
        "ann_p99_ms": 1000 * percentile(ann_s, 99),
        "exact_p50_ms": 1000 * percentile(exact_s, 50),
        "speedup_p50": percentile(exact_s, 50) / percentile(ann_s, 50),
    }


def rebuild(n: int) -> dict[str, float]:
    """From the vault's entries to a searchable index, hashed-feature embedding included."""
    entries = [
        (f"memories/m{i}", SCOPES[i % 3], json.dumps(f"note {i}: a walk to the market, item {i}"))
        for i in range(n)
    ]
    embedder = HashEmbedder(DIMS)
    start, cpu = time.perf_counter(), time.process_time()
    index = RecallIndex(DIMS)
    docs = [Doc(k, s, t) for k, s, t in entries]
    for lo in range(0, n, 256):  # as the service does
        batch = docs[lo : lo + 256]
        index.put(batch, embedder.embed([document_text(d.key, d.text) for d in batch]))
    total = time.perf_counter() - start
    return {"entries": n, "rebuild_s": total, "cpu_s": time.process_time() - cpu, "index": index}


def from_cache(index: RecallIndex) -> dict[str, float]:
    """The restart's path: the index written encrypted (as the service does), then read back."""
    import pyrage

    key = pyrage.x25519.Identity.generate()
    start = time.perf_counter()
    sealed = pyrage.encrypt(index.export("hash"), [key.to_public()])
    saved = time.perf_counter() - start
    start = time.perf_counter()
    again = RecallIndex.restore(pyrage.decrypt(sealed, [key]), "hash", DIMS)
    restored = time.perf_counter() - start
    assert len(again) == len(index)
    return {"save_s": saved, "restore_s": restored, "bytes": len(sealed)}


def model_rate(count: int = 256) -> float | None:
    from homeswarm.swarm._recall import ModelEmbedder

    try:
        embedder = ModelEmbedder()
        embedder.embed(["warm up"])
    except (RuntimeError, ImportError) as exc:
        print(f"(the model is not available here: {exc})")
        return None
    texts = [f"note {i}: a walk to the market to buy item number {i}" for i in range(count)]
    start = time.perf_counter()
    embedder.embed(texts)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--model", action="store_true", help="also time the real embedder")
    parser.add_argument("--no-rebuild", action="store_true", help="skip the start-up rebuild")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--noise", type=float, default=NOISE, help="spread around the centres")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in args.sizes:
        print(f"... {n} entries", flush=True)
        rows.append(one_size(n, args.queries, rng, args.noise))
    head = (
        f"{'entries':>8} {'build/s':>9} {'/cpu-s':>8} {'recall@10':>9} {'ann p50':>9} "
        f"{'ann p99':>9} {'exact p50':>10} {'exact/ann':>9}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['entries']:>8} {r['build_per_s']:>9.0f} {r['build_per_cpu_s']:>8.0f} "
            f"{r['recall_at_10']:>9.3f} "
            f"{r['ann_p50_ms']:>7.3f}ms {r['ann_p99_ms']:>7.3f}ms {r['exact_p50_ms']:>8.3f}ms "
            f"{r['speedup_p50']:>8.1f}x"
        )
    largest = max(args.sizes)
    if args.no_rebuild:
        return
    print(f"... start-up rebuild of {largest} entries (hash embedding)", flush=True)
    r = rebuild(largest)
    print(
        f"start-up rebuild, {r['entries']} entries, hash embedding included: "
        f"{r['rebuild_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU"
    )
    c = from_cache(r["index"])
    print(
        f"start-up from the encrypted cache, {r['entries']} entries: restore {c['restore_s']:.1f} s"
        f" ({c['restore_s'] / r['rebuild_s']:.2f} x the hash rebuild), save {c['save_s']:.1f} s,"
        f" {c['bytes'] / 2**20:.0f} MiB on disk"
    )
    if args.model:
        rate = model_rate()
        if rate is not None:
            print(
                f"real model (all-MiniLM-L6-v2) embedding: {rate:.0f} entries/s on this machine; "
                f"a rebuild of {largest} entries would take ~{largest / rate:.0f} s "
                f"(embedding) + {largest / rows[-1]['build_per_s']:.0f} s (index)"
            )


if __name__ == "__main__":
    main()

"""Cost of the cut modes on 100k examples: boundaries, per-level cuts, and per-step planning +
cutting, head vs segment vs filter, side by side.

    .venv/bin/python benchmarks/cut_speed.py [--n 100000] [--steps 200] [--rounds 3]

The rows are synthetic tokenized examples (log-normal lengths, median ~300 tokens, 1 token in 12
a boundary, a masked prompt of 20 tokens), stored as a real `datasets.Dataset`. A step is 8
micro-batches of 4 packed rows of 2048 tokens at input_len 256: planned by `BatchPlan`, then its
rows fetched and cut by `CutDataset` (what a collating worker does).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pyarrow as pa
from datasets import Dataset

from axolotl_curriculum.core.cut import level_cuts
from axolotl_curriculum.core.plan import BatchPlan
from axolotl_curriculum.integrations.plugin import axolotl_pack
from axolotl_curriculum.data.loader import CutDataset
from axolotl_curriculum.data.rows import row_stats

VOCAB, SEQ, ROWS, PER_STEP, INPUT_LEN = 32_000, 2048, 4, 8, 256


def dataset(n: int, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(300), 1.0, n).astype(np.int64), 24, SEQ)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    ids = rng.integers(100, VOCAB, offsets[-1], dtype=np.int32)
    ids[rng.random(offsets[-1]) < 1 / 12] = 13  # the boundary token
    labels = ids.copy()
    prompt = (np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)) < 20
    labels[prompt] = -100
    table = pa.table({"input_ids": pa.ListArray.from_arrays(offsets, ids),
                      "labels": pa.ListArray.from_arrays(offsets, labels)})
    mask = np.zeros(VOCAB, dtype=bool)
    mask[13] = True
    return Dataset(table), mask


def per_step(ds, rows, mode: str, steps: int) -> float:
    cuts = level_cuts(rows, INPUT_LEN, mode, last_level=False)
    plan = BatchPlan(rows, batch_size=ROWS, seed=0, capacity=SEQ, bin_size=200, pack=axolotl_pack)
    cut_ds = CutDataset(ds)
    t = time.perf_counter()
    for _, batches in plan.epoch(0, steps * PER_STEP, PER_STEP, lambda k: cuts):
        for batch in batches:
            for bin_ in batch:
                cut_ds.__getitems__(bin_)
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ds, mask = dataset(args.n)
    per_step(ds, row_stats(ds), "head", 2)  # numba compile, and first touch of the buffers
    row_stats(ds, mask)
    timings: dict[str, list[float]] = {}
    for _ in range(args.rounds):  # the once-per-run costs, alternating, apart from the step loop
        t = time.perf_counter()
        plain = row_stats(ds)
        timings.setdefault("row stats, no boundaries (once per run)", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        rows = row_stats(ds, mask)
        timings.setdefault("row stats + boundary positions (once per run)", []).append(time.perf_counter() - t)
        for mode in ("head", "segment", "filter"):
            t = time.perf_counter()
            level_cuts(rows, INPUT_LEN, mode)
            timings.setdefault(f"level cuts, {mode} (once per level)", []).append(time.perf_counter() - t)
    for _ in range(args.rounds):
        for mode in ("head", "segment", "filter"):
            timings.setdefault(f"per step: plan + fetch + cut, {mode}", []).append(
                per_step(ds, rows if mode == "segment" else plain, mode, args.steps))
    print(f"{args.n} rows, {sum(len(x) for x in ds['input_ids'][:1000]) * args.n // 1000} tokens "
          f"(est.), input_len {INPUT_LEN}, steps of {PER_STEP}x{ROWS}x{SEQ} tokens; median of "
          f"{args.rounds} rounds\n")
    head = statistics.median(timings["per step: plan + fetch + cut, head"])
    print("| what | seconds | ratio to head |\n|---|---|---|")
    for name, ts in timings.items():
        med = statistics.median(ts)
        ratio = f"{med / head:.2f}" if name.startswith("per step") else "-"
        print(f"| {name} | {med:.4f} | {ratio} |")


if __name__ == "__main__":
    main()

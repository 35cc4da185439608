"""Time to plan an epoch of packed batches for 100k examples: ours per level vs Axolotl's packing.

    .venv/bin/python benchmarks/plan_speed.py [--n 100000] [--rounds 3] [--memory]

Lengths are long-tailed (log-normal, median ~300 tokens, capped at sequence_len 2048). Both
sides pack the same lengths into rows of 2048 tokens, 4 rows per micro-batch; each side is timed
in the same process, alternating, and the median of the rounds is reported. `--memory`: the
peak memory each side allocates while it plans (tracemalloc, which numpy reports to), once,
after the timed rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np
from torch.utils.data import RandomSampler

from axolotl.utils.samplers.multipack import MultipackBatchSampler
from axolotl_curriculum.core.cut import Rows, first_scored_label, level_cuts
from axolotl_curriculum.core.plan import BatchPlan
from axolotl_curriculum.integrations.plugin import axolotl_pack

SEQ, ROWS = 2048, 4


def lengths_for(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(300), 1.0, n).astype(np.int64), 8, SEQ)


def time_axolotl(lengths) -> tuple[float, int]:
    sampler = MultipackBatchSampler(RandomSampler(range(len(lengths))), batch_size=ROWS,
                                    batch_max_len=SEQ, lengths=lengths, bin_size=200,
                                    num_processes=1)
    t = time.perf_counter()
    batches = sampler.generate_batches()
    return time.perf_counter() - t, len(batches)


def time_ours(lengths, input_len: int, n_batches: int) -> float:
    rows = Rows(lengths, np.ones_like(lengths))
    plan = BatchPlan(rows, batch_size=ROWS, seed=0, capacity=SEQ, bin_size=200, pack=axolotl_pack)
    t = time.perf_counter()
    cuts = level_cuts(rows, input_len, "head")
    for _ in plan.epoch(0, n_batches, 8, lambda k: cuts):
        pass
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory", action="store_true")
    args = ap.parse_args()
    lengths = lengths_for(args.n)
    time_axolotl(lengths[:1000]), time_ours(lengths[:1000], 64, 8)  # numba compile
    rows: dict[str, list[float]] = {}
    n_batches = time_axolotl(lengths)[1]
    for _ in range(args.rounds):
        rows.setdefault("axolotl MultipackBatchSampler.generate_batches (full length)", []).append(
            time_axolotl(lengths)[0])
        for input_len in (SEQ, 256):
            rows.setdefault(f"curriculum plan, input_len {input_len}, same batch count", []).append(
                time_ours(lengths, input_len, n_batches))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    labels = np.zeros(offsets[-1], dtype=np.int64)
    t = time.perf_counter()
    first_scored_label(offsets, labels)
    label_scan = time.perf_counter() - t
    base = statistics.median(rows["axolotl MultipackBatchSampler.generate_batches (full length)"])
    print(f"{args.n} examples, {int(lengths.sum())} tokens, {n_batches} micro-batches of "
          f"{ROWS}x{SEQ}; median of {args.rounds} rounds\n")
    print("| what | seconds | ratio to Axolotl |\n|---|---|---|")
    for name, times in rows.items():
        med = statistics.median(times)
        print(f"| {name} | {med:.3f} | {med / base:.2f} |")
    print(f"| first scored label of every row (label scan, once per run) | {label_scan:.3f} | - |")
    if args.memory:
        print("\n| what | peak MiB allocated while planning |\n|---|---|")
        for name, fn in (("axolotl generate_batches", lambda: time_axolotl(lengths)),
                         ("curriculum plan, input_len 256",
                          lambda: time_ours(lengths, 256, n_batches))):
            tracemalloc.start()
            fn()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"| {name} | {peak / 2**20:.1f} |")


if __name__ == "__main__":
    main()

"""Cost of the difficulty scores on 100k examples, side by side with reading the row statistics.

    .venv/bin/python benchmarks/score_speed.py [--n 100000] [--rounds 3]

The rows are cut_speed.py's synthetic tokenized examples (log-normal lengths, median ~300
tokens, 43M tokens in all) in a real `datasets.Dataset`; every score is computed the way a run
does (`rows.difficulty_scores`), and the row statistics every run reads anyway are the reference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from axolotl_curriculum.core.config import Difficulty
from axolotl_curriculum.data.rows import difficulty_scores, row_stats
from cut_speed import VOCAB, dataset

SCORES = ("length", "segments", "compression", "rarity", "random")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data, _ = dataset(args.n)
    is_boundary = np.zeros(VOCAB, dtype=bool)
    is_boundary[13] = True
    jobs = {"row_stats (every run)": lambda: row_stats(data, is_boundary)}
    for name in SCORES:
        jobs[name] = lambda name=name: difficulty_scores(data, Difficulty(score=name), is_boundary)
    times = {name: [] for name in jobs}
    for _ in range(args.rounds):  # interleaved, so a noisy moment hits every job alike
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["row_stats (every run)"])
    print(f"{args.n} rows, median of {args.rounds} rounds")
    print(f"{'job':<24}{'seconds':>9}{'x row_stats':>13}")
    for name, t in times.items():
        print(f"{name:<24}{statistics.median(t):>9.2f}{statistics.median(t) / base:>13.2f}")


if __name__ == "__main__":
    main()

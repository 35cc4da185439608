"""Time `plan`'s projection of 100k prepared rows (tokenization aside): cuts, a whole epoch's
steps planned with Axolotl's packer, and the full-length reference.

    .venv/bin/python benchmarks/projection_speed.py [--n 100000]

Lengths as in plan_speed.py (log-normal, median ~300, sequence_len 2048); 4 rows of 2048 tokens
per micro-batch, 8 accumulation steps, one epoch; `levels: auto`; a 1B-class llama config.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from axolotl_curriculum.core.cut import Rows
from axolotl_curriculum.integrations.plugin import axolotl_pack
from axolotl_curriculum.run.projection import format_table, project, run_for
from plan_speed import SEQ, lengths_for

MODEL = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16,
         "intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 8,
         "vocab_size": 128256}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args()
    lengths = lengths_for(args.n)
    rows = Rows(lengths, np.ones_like(lengths))
    steps = int(lengths.sum() / (4 * SEQ * 8 * 0.98))  # about one epoch of packed steps
    axolotl_pack(lengths[:1000], SEQ, 8, 200)  # numba compile, not timed
    t = time.perf_counter()
    run = run_for(rows, {"levels": "auto"}, batch_size=4, packed=True, capacity=SEQ,
                  bin_size=200, grad_accum=8, pack=axolotl_pack, sequence_len=SEQ,
                  total_steps=steps)
    projection = project(run, total_steps=steps, model_config=MODEL)
    seconds = time.perf_counter() - t
    print(f"{args.n} rows, {int(lengths.sum())} tokens, {steps} optimizer steps: "
          f"plan projection {seconds:.1f} s")
    print(format_table(projection))


if __name__ == "__main__":
    main()

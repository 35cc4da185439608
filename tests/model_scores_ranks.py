"""Scores the test dataset with `model_scores` on every rank of a gloo job (test-only).

    torchrun --nproc_per_node 2 tests/model_scores_ranks.py MODEL_DIR OUT_DIR SCORE
"""

import os
import sys

import numpy as np
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from axolotl_curriculum.data.model_scores import model_scores
from axolotl_curriculum.data.rows import row_stats
from test_model_scores import instructions

model_dir, out, score = sys.argv[1:4]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
dataset = instructions(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)


def reduce_sum(t):
    dist.all_reduce(t)
    return t


scores = model_scores(score, model, dataset, row_stats(dataset), rank=rank, world_size=world,
                      reduce_sum=reduce_sum, batch_size=5)
np.save(os.path.join(out, f"{score}.rank{rank}.npy"), scores)
dist.destroy_process_group()

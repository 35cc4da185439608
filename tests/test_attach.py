"""`attach()` on a plain transformers `Trainer`: a sliced dataset, and no host syncs per step.

What the model received is read from its forward; host reads and host-to-device tensor
creations are counted from outside by a torch function mode around the run's per-step hooks.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from datasets import Dataset
from torch.overrides import TorchFunctionMode
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                          TrainingArguments)

from axolotl_curriculum import attach
from axolotl_curriculum.run.batch_stats import measure_batch
from axolotl_curriculum.testing import text
from axolotl_curriculum.run.batch_stats import norm_scalar

pytestmark = pytest.mark.e2e

# reads that wait for the device, and tensors built from host data (a blocking copy on a GPU)
SYNCS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy,
         torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__, torch.tensor,
         torch.as_tensor}


class Syncs(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCS:
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def instructions(tokenizer, n=400, seed=0):
    """Rows whose prompt (labels -100) is often longer than the short level."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = tokenizer(text(rng, rng.randint(1, 40)))["input_ids"]
        answer = tokenizer(text(rng, rng.randint(2, 30)))["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + answer)[:128]
        rows.append({"input_ids": ids, "labels": ([-100] * len(prompt) + answer)[:128],
                     "attention_mask": [1] * len(ids)})
    return Dataset.from_list(rows)


def test_sliced_dataset_feeds_scored_labels_without_host_syncs(tiny_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    # a contiguous slice: its Arrow chunks start past offset 0 (first labels were misread)
    dataset = instructions(tokenizer).select(range(150, 400))
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    fed = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append((kwargs["input_ids"].clone(),
                                                 kwargs["labels"].clone())), with_kwargs=True)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=24, per_device_train_batch_size=4,
                             learning_rate=1e-3, logging_steps=100, save_strategy="no",
                             report_to=[], use_cpu=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    run = attach(trainer, {"levels": [{"input_len": 16, "max_steps": 8},
                                      {"input_len": 32, "max_steps": 8}, {"input_len": 128}],
                           "keep_prompt_head": 2,
                           "sense_grad": {"check_every": 4, "min_steps": 4}})
    syncs = {}
    for name in ("on_micro_batch", "on_step_end"):
        hook = getattr(run, name)

        def counted(*a, _hook=hook, _name=name, **kw):
            with Syncs() as mode:
                _hook(*a, **kw)
            syncs.setdefault(_name, []).append(len(mode.calls))
        setattr(run, name, counted)
    trainer.train()

    assert len(fed) == 24
    for step, (ids, labels) in enumerate(fed):
        input_len = (16, 32, 128)[min(step // 8, 2)]
        assert ids.shape[1] <= input_len
        scored = (labels[:, 1:] != -100).sum(dim=1)
        assert (scored > 0).all(), f"step {step + 1}: a row with no scored label reached the model"
    records = [json.loads(line) for line in (tmp_path / "curriculum_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in records)
    # no host read or host-built tensor per micro-batch; per step only at the gate's checks
    assert syncs["on_micro_batch"] == [0] * 24
    checks = [k for k, n in enumerate(syncs["on_step_end"], start=1) if n]
    assert checks == [4, 8, 12, 16, 20, 24] and max(syncs["on_step_end"]) <= 2


def test_norms_and_measurements_are_built_on_the_device():
    """DeepSpeed hands a float; a batch may carry no mask: neither makes a host-built tensor."""
    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long)}
    norm = torch.ones(())
    with Syncs() as mode:
        norm_scalar(0.5, "cpu")
        norm_scalar(None, "cpu")
        norm_scalar(norm, "cpu")
        measure_batch(batch, pad_token_id=0)
    assert mode.calls == []

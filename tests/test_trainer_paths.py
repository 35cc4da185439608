"""`attach()` on a plain transformers `Trainer`, on the paths around the core: a `column` score
under the trainer's column pruning, a crash and a resume, `ignore_data_skip`, the collator's
padding and the pre-flight. Every check reads what the model's forward received (a hook on the
model, outside the plugin) or the files a user reads."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                          TrainerCallback, TrainingArguments)

from axolotl_curriculum import attach
from axolotl_curriculum.core.names import read_jsonl
from axolotl_curriculum.testing import text

pytestmark = pytest.mark.e2e


def rows(tokenizer, n=120, seed=0, longest=100):
    """Distinct rows of 4-100 tokens (prompt masked), each with a `grade` column."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        prompt = tokenizer(text(rng, rng.randint(1, 8)))["input_ids"]
        answer = tokenizer(text(rng, rng.randint(1, 30)))["input_ids"]
        ids = (prompt + answer)[:longest]
        if tuple(ids) in seen or len(ids) < 4:
            continue
        seen.add(tuple(ids))
        out.append({"input_ids": ids, "labels": ([-100] * len(prompt) + answer)[:longest],
                    "attention_mask": [1] * len(ids), "grade": float(rng.random())})
    return Dataset.from_list(out)


class Forwards:
    """What the model's forward received, per call, and whether training had begun (the
    pre-flight runs its forwards before the first step)."""

    def __init__(self, model):
        self.calls: list[dict] = []
        self.training = False
        model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        if torch.is_grad_enabled():  # not a scoring pass
            self.calls.append({"ids": kwargs["input_ids"].clone(), "training": self.training,
                               "mask": kwargs.get("attention_mask")})

    def train(self):
        return [c for c in self.calls if c["training"]]

    def preflight(self):
        return [c for c in self.calls if not c["training"]]


class Begins(TrainerCallback):
    def __init__(self, forwards):
        self.forwards = forwards

    def on_step_begin(self, args, state, control, **kwargs):
        self.forwards.training = True


class Crash(Exception):
    pass


class CrashAt(TrainerCallback):
    """Stops the process's training dead at a step end (after the plugin's own hooks)."""

    def __init__(self, step: int, event: str = "on_step_end"):
        self.step = step
        setattr(self, event, self._maybe_crash)

    def _maybe_crash(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash(f"crash at step {self.step}")


def trainer_for(model_dir, out, dataset, block, collator=None, crash=None, forwards=True,
                **args):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    seen = Forwards(model) if forwards else None
    settings = dict(output_dir=str(out), max_steps=12, per_device_train_batch_size=4,
                    learning_rate=1e-3, logging_steps=100, save_strategy="no", report_to=[],
                    use_cpu=True, seed=0)
    settings.update(args)
    trainer = Trainer(model=model, args=TrainingArguments(**settings), train_dataset=dataset,
                      data_collator=collator or DataCollatorForSeq2Seq(tokenizer, padding=True))
    run = attach(trainer, block)
    if seen is not None:
        trainer.add_callback(Begins(seen))
    if crash is not None:
        trainer.add_callback(crash)
    return trainer, run, seen


def row_of(dataset):
    index = {tuple(ids): i for i, ids in enumerate(dataset["input_ids"])}

    def find(ids, mask):
        return index[tuple(ids[mask.bool()].tolist())]
    return find


def test_a_column_score_survives_the_trainers_column_pruning(tiny_model, tmp_path):
    """remove_unused_columns=True (the default) drops `grade` before collating; the score is
    read from the dataset as given. Level 0 feeds only the easiest half, seen in the forward."""
    dataset = rows(AutoTokenizer.from_pretrained(tiny_model))
    block = {"difficulty": {"score": "column", "column": "grade"}, "budget": "examples",
             "levels": [{"input_len": 128, "max_steps": 6, "admit": 0.5}, {"input_len": 128}]}
    trainer, run, seen = trainer_for(tiny_model, tmp_path, dataset, block)
    assert trainer.args.remove_unused_columns
    trainer.train()
    find = row_of(dataset)
    grades = sorted(dataset["grade"])
    median = (grades[59] + grades[60]) / 2
    fed = [[find(ids, mask) for ids, mask in zip(c["ids"], c["mask"])] for c in seen.train()]
    assert len(fed) == 12
    assert all(dataset[i]["grade"] < median for step in fed[:6] for i in step)
    assert any(dataset[i]["grade"] > median for step in fed[6:] for i in step)


def test_a_crash_loses_no_log_line_and_ignore_data_skip_feeds_what_the_whole_run_fed(tiny_model,
                                                                                   tmp_path):
    """Checkpoint every 6 steps, log every 5, crash after step 9, resume: every step is in the
    log once. Resumed with ignore_data_skip, steps 7-12 get the uninterrupted run's batches."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    dataset = rows(tokenizer)
    block = {"levels": [{"input_len": 16, "max_steps": 6}, {"input_len": 128}]}
    whole, _, seen_whole = trainer_for(tiny_model, tmp_path / "whole", dataset, block)
    whole.train()
    expected = [c["ids"] for c in seen_whole.train()]

    for ignore in (False, True):
        out = tmp_path / f"resumed-{ignore}"
        settings = dict(save_strategy="steps", save_steps=6, logging_steps=5)
        first, _, _ = trainer_for(tiny_model, out, dataset, block, crash=CrashAt(9), **settings)
        with pytest.raises(Crash):
            first.train()
        again, _, seen = trainer_for(tiny_model, out, dataset, block, ignore_data_skip=ignore,
                                     **settings)
        again.train(resume_from_checkpoint=str(out / "checkpoint-6"))
        lines = read_jsonl(out / "curriculum_log.jsonl")
        assert sorted(r["step"] for r in lines) == list(range(1, 13)), ignore
        fed = [c["ids"] for c in seen.train()]
        assert len(fed) == 6
        for k, ids in enumerate(fed):  # steps 7-12, at level 1, as the whole run fed them
            assert torch.equal(ids, expected[6 + k]), (ignore, 7 + k)
        assert all(r["input_len"] == 128 and r["global_examples"] == 4 for r in lines[6:])


def test_padding_is_in_the_positions_logged_and_the_preflight_covers_every_shape(tiny_model,
                                                                                 tmp_path):
    """The collator pads each micro-batch to a multiple of 64: a 16-token level under the
    token budget runs wide batches of 64 positions a row. The log's `positions` and the
    pre-flight's shapes are the ones the forward received; `tokens` leaves padding out."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    dataset = rows(tokenizer)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, pad_to_multiple_of=64)
    block = {"budget": "tokens", "preflight": True,
             "levels": [{"input_len": 16, "max_steps": 6}, {"input_len": 128}]}
    trainer, _, seen = trainer_for(tiny_model, tmp_path, dataset, block, collator=collator)
    trainer.train()
    fed = seen.train()
    assert len(fed) == 12
    shapes = [tuple(c["ids"].shape) for c in seen.preflight()]
    for call in fed:
        rows_, width = call["ids"].shape
        assert width % 64 == 0
        assert any(r >= rows_ and w >= width for r, w in shapes), (call["ids"].shape, shapes)
    assert max(c["ids"].shape[0] for c in fed[:6]) > 4  # the budget widened level 0
    lines = read_jsonl(tmp_path / "curriculum_log.jsonl")
    for line, call in zip(lines, fed):
        assert line["positions"] == call["ids"].numel()
        assert line["tokens"] == int(call["mask"].sum())
        assert line["global_positions"] == call["ids"].numel()


def test_the_preflight_runs_the_longest_probe_prompt_before_step_1(tiny_model, tmp_path):
    """A passkey length beyond the last level's is probed only after the last step; its
    forward (one row, no gradients) is pre-flighted before step 1, so a prompt that cannot fit
    fails at the start of the run, not at its end."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    calls, begun = [], []  # (shape, gradients on, training begun) per forward
    model.register_forward_pre_hook(lambda m, a, kw: calls.append(
        (tuple(kw["input_ids"].shape), torch.is_grad_enabled(), bool(begun))), with_kwargs=True)

    class Begun(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            begun.append(state.global_step)

    trainer = Trainer(model=model, processing_class=tokenizer, train_dataset=rows(tokenizer),
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
                      args=TrainingArguments(output_dir=str(tmp_path), max_steps=4,
                                             per_device_train_batch_size=4, save_strategy="no",
                                             report_to=[], use_cpu=True, logging_steps=100))
    attach(trainer, {"preflight": True, "levels": [{"input_len": 32, "max_steps": 2},
                                                   {"input_len": 128}],
                     "probes": {"every": 100, "passkey": {"lengths": [384],
                                                          "depths": [0.5], "rows": 1}}})
    trainer.add_callback(Begun())
    trainer.train()
    before = [c for c in calls if not c[2]]
    assert ((1, 384), False, False) in before  # the probe's pre-flight: no gradients
    assert any(grad and shape[0] == 4 for shape, grad, _ in before)  # the training one
    # and the probe it stands for ran after the last step
    assert [c for c in calls if c[2] and c[0] == (1, 384)] == [((1, 384), False, True)]

"""Hooks a curriculum into a transformers `Trainer` (Axolotl's trainer is one).

The schedule lives in the batch sampler: every global micro-batch carries its input_len inside
its indices, so the cut happens wherever the collator runs (worker processes included) and all
ranks build the same plan. The trainer keeps its own step accounting: the train dataloader has a
fixed length, so `max_steps`, epochs and the LR schedule stay as the trainer computed them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler
from transformers import TrainerCallback

from .batch_stats import measure_batch
from .config import Curriculum
from .cut import cut_head
from .plan import BatchPlan, Packer, first_scored_label
from .runlog import RunLog
from .schedule import Timeline

LOG = logging.getLogger("axolotl_curriculum")
LOG_FILE = "curriculum_log.jsonl"
FLUSH_EVERY = 256  # steps; bounds the device-side buffer when logging is sparse


class CutDataset(Dataset):
    """Rows of the tokenized dataset, cut to the input_len encoded in each index.

    An index is `input_len * n_rows + row`; nothing else is stored, so no level keeps a copy.
    """

    def __init__(self, rows, cut: Callable[[dict, int], dict] = cut_head):
        self.rows = rows
        self.n_rows = len(rows)
        self.cut = cut

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, key: int) -> dict:
        input_len, row = divmod(int(key), self.n_rows)
        return self.cut(self.rows[row], input_len)

    def __getitems__(self, keys: list[int]) -> list[dict]:
        decoded = [divmod(int(k), self.n_rows) for k in keys]
        rows = self.rows.__getitems__([row for _, row in decoded])
        return [self.cut(r, input_len) for r, (input_len, _) in zip(rows, decoded)]


class LevelBatchSampler(BatchSampler):
    """Yields a fixed number of global micro-batches per epoch, planned step by step."""

    def __init__(
        self,
        plan: BatchPlan,
        timeline: Timeline,
        n_batches: int,
        batches_per_step: int,
        n_rows: int,
        current_step: Callable[[], int],
    ):
        self.plan = plan
        self.timeline = timeline
        self.n_batches = n_batches
        self.batches_per_step = batches_per_step
        self.steps_per_epoch = n_batches // batches_per_step
        self.n_rows = n_rows
        self.current_step = current_step
        self.batch_size = plan.batch_size
        self.drop_last = True
        self.sampler = None

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list]:
        # Asked when an epoch's iteration starts (also after a resume, which replays the epoch).
        epoch = self.current_step() // self.steps_per_epoch
        first = epoch * self.steps_per_epoch
        batches = self.plan.epoch(
            epoch, self.n_batches, self.batches_per_step,
            lambda k: self.timeline.input_len_at(first + k),
        )
        for input_len, batch in batches:
            base = input_len * self.n_rows
            if self.plan.packed:
                yield [[base + i for i in b] for b in batch]
            else:
                yield [base + i for i in batch]


def row_stats(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Token count and first scored label position of every row, read from the arrow buffers."""
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    label_col = "labels" if "labels" in table.column_names else "input_ids"
    lengths, first = [], []
    for chunk in table.column(label_col).chunks:
        offsets = np.asarray(chunk.offsets, dtype=np.int64)
        values = chunk.values.to_numpy(zero_copy_only=False)
        offsets = offsets - offsets[0]
        values = values[: offsets[-1]]
        lengths.append(np.diff(offsets))
        first.append(first_scored_label(offsets, values))
    lengths_all = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    first_all = np.concatenate(first) if first else np.zeros(0, np.int64)
    if label_col == "input_ids":
        first_all = np.where(lengths_all >= 2, 1, first_all)
    if getattr(dataset, "_indices", None) is not None:
        idx = np.asarray(dataset._indices.column(0).to_numpy(), dtype=np.int64)
        lengths_all, first_all = lengths_all[idx], first_all[idx]
    return lengths_all, first_all


def _seed_worker(trainer) -> Callable | None:
    from transformers.trainer_utils import seed_worker

    return partial(seed_worker, num_workers=trainer.args.dataloader_num_workers,
                   rank=trainer.args.process_index)


class CurriculumRun:
    """One training run's curriculum: the timeline, the data plan, the run log."""

    def __init__(self, trainer, curriculum: Curriculum, pack: Packer | None = None):
        self.trainer = trainer
        self.curriculum = curriculum
        self.timeline = Timeline(curriculum.input_lens,
                                 [level.max_steps for level in curriculum.levels])
        self.pack = pack
        self.plan: BatchPlan | None = None
        self.log = RunLog(Path(trainer.args.output_dir) / LOG_FILE, trainer.args.process_index)
        self._since_log: list[dict] = []
        self._level = None
        tokenizer = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
        self.pad_token_id = getattr(tokenizer, "pad_token_id", None)

    # -- data ---------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        trainer, args = self.trainer, self.trainer.args
        dataset = trainer.train_dataset
        packed = bool(getattr(args, "sample_packing", False)) and not getattr(args, "pretraining", False)
        if not packed:
            dataset = trainer._remove_unused_columns(dataset, description="training")
        base = trainer._get_train_sampler(dataset)
        if "length" in dataset.column_names:
            dataset = dataset.remove_columns(["length"])
        if (packed and getattr(args, "sample_packing_drop_attention_mask", False)
                and {"position_ids", "attention_mask"} <= set(dataset.column_names)):
            dataset = dataset.remove_columns(["attention_mask"])

        lengths, first_label = row_stats(dataset)
        shuffle = not isinstance(getattr(base, "sampler", base), SequentialSampler)
        seed = args.data_seed if getattr(args, "data_seed", None) is not None else args.seed
        if packed:
            if self.pack is None:
                raise ValueError("sample packing needs a packer (the Axolotl plugin passes its own)")
            self.plan = BatchPlan(lengths, first_label, batch_size=base.batch_size, seed=seed,
                                  shuffle=shuffle, capacity=base.batch_max_len,
                                  bin_size=base.bin_size, pack=self.pack)
            n_batches = len(base)
        else:
            batch_size = trainer._train_batch_size
            self.plan = BatchPlan(lengths, first_label, batch_size=batch_size, seed=seed,
                                  shuffle=shuffle)
            n_batches = len(dataset) // batch_size
        for k, input_len in enumerate(self.timeline.input_lens):
            if self.plan.eligible_count(input_len) == 0:
                raise ValueError(
                    f"curriculum.levels[{k}].input_len: no example keeps a trainable token when "
                    f"cut to {input_len}; raise it"
                )
        per_step = args.world_size * args.gradient_accumulation_steps
        n_batches = max(per_step, n_batches - n_batches % per_step)
        sampler = LevelBatchSampler(self.plan, self.timeline, n_batches, per_step, len(dataset),
                                    lambda: trainer.state.global_step)
        workers = args.dataloader_num_workers
        loader = DataLoader(
            CutDataset(dataset),
            batch_sampler=sampler,
            collate_fn=trainer.data_collator,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers if workers else False,
            prefetch_factor=args.dataloader_prefetch_factor if workers else None,
            worker_init_fn=_seed_worker(trainer),
        )
        if packed:
            trainer.accelerator.even_batches = False
        return trainer.accelerator.prepare(loader)

    # -- observation --------------------------------------------------------------------------
    def on_micro_batch(self, inputs) -> None:
        self.log.add_micro_batch(measure_batch(inputs, self.pad_token_id))

    def on_step_end(self, global_step: int) -> None:
        step = global_step - 1
        level = self.timeline.level_at(step)
        input_len = self.timeline.input_lens[level]
        if level != self._level and self.log.rank == 0:
            LOG.info("curriculum: level %d (input_len %d) from step %d", level, input_len, global_step)
        self._level = level
        self.log.end_step(step=global_step, level=level, input_len=input_len)
        if self.log.pending >= FLUSH_EVERY:
            self._since_log += self.log.flush()

    def metrics(self) -> dict[str, Any]:
        """Values for the trainer's own log line (and so W&B/TensorBoard), measured from batches."""
        records = self._since_log + self.log.flush()
        self._since_log = []
        if not records:
            return {}
        last = records[-1]
        return {
            "curriculum/level": last["level"],
            "curriculum/input_len": last["input_len"],
            "curriculum/max_example_len": max(r["max_example_len"] for r in records),
            "curriculum/tokens_per_step": sum(r["tokens"] for r in records) / len(records),
        }

    def summary(self) -> str:
        stats = self.plan.stats if self.plan else None
        lines = ["curriculum summary (planned): level input_len examples tokens tokens_cut skipped_no_label"]
        for k, input_len in enumerate(self.timeline.input_lens):
            if stats is None:
                break
            lines.append(
                f"  {k} {input_len} {stats.examples[input_len]} {stats.tokens[input_len]} "
                f"{stats.tokens_cut[input_len]} {stats.skipped_no_label[input_len]}"
            )
        return "\n".join(lines)


class CurriculumCallback(TrainerCallback):
    def __init__(self, run: CurriculumRun):
        self.run = run

    def on_train_begin(self, args, state, control, **kwargs):
        self.run.log.start(resumed_at=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.run.on_step_end(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.run.log.flush()
        if self.run.log.rank == 0:
            LOG.info(self.run.summary())


def attach(trainer, curriculum: Curriculum, pack: Packer | None = None) -> CurriculumRun:
    """Give `trainer` the curriculum: its train dataloader, batch measurements and log metrics."""
    run = CurriculumRun(trainer, curriculum, pack)
    trainer.get_train_dataloader = run.train_dataloader

    training_step = trainer.training_step

    def measured_training_step(model, inputs, *args, **kwargs):
        run.on_micro_batch(inputs)
        return training_step(model, inputs, *args, **kwargs)

    trainer.training_step = measured_training_step

    log = trainer.log

    def log_with_curriculum(logs, *args, **kwargs):
        if "loss" in logs:
            logs.update(run.metrics())
        return log(logs, *args, **kwargs)

    trainer.log = log_with_curriculum
    trainer.add_callback(CurriculumCallback(run))
    return run

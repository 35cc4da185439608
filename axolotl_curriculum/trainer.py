"""Hooks a curriculum into a transformers `Trainer` (Axolotl's trainer is one).

The schedule lives in the batch sampler: every index of a micro-batch carries how its row is
cut, so the cut happens wherever the collator runs (worker processes included) and all ranks
build the same plan. The trainer keeps its own step accounting: the train dataloader has a
fixed length, so `max_steps`, epochs and the LR schedule stay as the trainer computed them.
"""

from __future__ import annotations

import json
import logging
import math
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
from .cut import DEFAULT_BOUNDARIES, NO_LABEL, Cuts, Rows, apply_cut, first_scored_label, level_cuts
from .plan import BatchPlan, Packer, Spec
from .preflight import full_length_batch, preflight
from .runlog import RunLog
from .schedule import Segment, Timeline
from .sense_grad import Gate

LOG = logging.getLogger("axolotl_curriculum")
LOG_FILE = "curriculum_log.jsonl"
STATE_FILE = "curriculum_state.json"
GATE_PREFETCH = 2  # per worker, with sense_grad: bounds how far the data runs ahead of decisions
FLUSH_EVERY = 256  # steps; bounds the device-side buffer when logging is sparse


class CutDataset(Dataset):
    """Rows of the tokenized dataset, cut as the index says.

    An index is a `Spec` (row, head, start, end): feed `row[:head] + row[start:end]`. The plan
    decides every cut; nothing else is stored, so no level keeps a copy of the data.
    """

    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, spec: Spec) -> dict:
        return apply_cut(self.rows[spec[0]], *spec[1:])

    def __getitems__(self, specs: list[Spec]) -> list[dict]:
        rows = self.rows.__getitems__([spec[0] for spec in specs])
        return [apply_cut(row, *spec[1:]) for row, spec in zip(rows, specs)]


class LevelBatchSampler(BatchSampler):
    """Yields a fixed number of global micro-batches per epoch, planned step by step.

    What each planned step holds (examples, tokens cut, ...) is kept in `planned` by global
    step until the run log takes it.
    """

    def __init__(self, plan: BatchPlan, cuts_at: Callable[[int], Cuts], n_batches: int,
                 batches_per_step: int, current_step: Callable[[], int], delay: int | None = None):
        self.plan = plan
        self.cuts_at = cuts_at
        self.n_batches = n_batches
        self.batches_per_step = batches_per_step
        self.steps_per_epoch = n_batches // batches_per_step
        self.current_step = current_step
        self.delay = delay
        self.planned: dict[int, dict] = {}
        self.batch_size = plan.batch_size
        self.drop_last = True
        self.sampler = None

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list]:
        # Asked when an epoch's iteration starts (also after a resume, which replays the epoch).
        epoch = self.current_step() // self.steps_per_epoch
        first = epoch * self.steps_per_epoch
        steps = self.plan.epoch(epoch, self.n_batches, self.batches_per_step,
                                lambda k: self.cuts_at(self._checked(first + k)))
        for k, (stats, batches) in enumerate(steps):
            if first + k >= self.current_step():  # not a step a resume replays to skip it
                self.planned[first + k] = stats
            yield from batches

    def _checked(self, step: int) -> int:
        # Decisions reach the data `delay` steps later; planning further ahead could disagree
        # with a decision still to come, and then ranks or the log would disagree with the data.
        if self.delay is not None and step >= self.current_step() + self.delay:
            raise RuntimeError(
                f"curriculum: the data loader planned step {step + 1} while training is at step "
                f"{self.current_step()}, beyond the switch delay of {self.delay} steps; lower "
                "dataloader_num_workers or gradient_accumulation_steps"
            )
        return step


def _flat(column):
    """(row starts, row lengths, values) of a list column, over all its arrow chunks."""
    starts, lengths, values, base = [], [], [], 0
    for chunk in column.chunks:
        offsets = np.asarray(chunk.offsets, dtype=np.int64)
        offsets = offsets - offsets[0]
        starts.append(offsets[:-1] + base)
        lengths.append(np.diff(offsets))
        values.append(chunk.values.to_numpy(zero_copy_only=False)[: offsets[-1]])
        base += int(offsets[-1])
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(lengths), np.concatenate(values)


def row_stats(dataset, is_boundary: np.ndarray | None = None) -> Rows:
    """Lengths, first scored labels and (if asked) boundary positions, from the arrow buffers."""
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    starts, lengths, ids = _flat(table.column("input_ids"))
    if "labels" in table.column_names:
        l_starts, _, labels = _flat(table.column("labels"))
        first = first_scored_label(np.append(l_starts, len(labels)), labels)
    elif "completion_mask" in table.column_names:  # TRL: 1 where the loss scores the token
        m_starts, _, scored = _flat(table.column("completion_mask"))
        first = first_scored_label(np.append(m_starts, len(scored)), np.where(scored == 1, 0, -100))
    else:
        first = np.where(lengths >= 2, 1, NO_LABEL)
    boundaries = None
    if is_boundary is not None:
        boundaries = np.flatnonzero(is_boundary[np.clip(ids, 0, len(is_boundary) - 1)])
    else:
        starts = None
    del ids
    if getattr(dataset, "_indices", None) is not None:
        idx = np.asarray(dataset._indices.column(0).to_numpy(), dtype=np.int64)
        lengths, first = lengths[idx], first[idx]
        starts = starts[idx] if starts is not None else None
    return Rows(lengths, first, starts, boundaries)


def boundary_mask(tokenizer, marks: list[str] | tuple[str, ...]) -> np.ndarray:
    """Which token ids end a segment: their text ends with a mark, or they end a turn/sequence.

    Decided once per run from the tokenizer's own vocabulary, so cutting never decodes text.
    """
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
    mask = np.array([t.rstrip(" ").endswith(tuple(marks)) for t in texts], dtype=bool)
    for token_id in (tokenizer.eos_token_id, *getattr(tokenizer, "all_special_ids", [])):
        if token_id is not None and token_id not in (tokenizer.bos_token_id, tokenizer.pad_token_id,
                                                     tokenizer.unk_token_id):
            mask[token_id] = True
    return mask


def norm_scalar(grad_norm, device) -> torch.Tensor:
    """The trainer's gradient norm as a plain 0-d float32 tensor on `device`, without a host read.

    Engines hand it over differently: DDP a tensor, DeepSpeed a float, FSDP2 a DTensor (stacking
    that with plain tensors raises; a Partial one would be this rank's share), None without one.
    """
    if grad_norm is None:
        return torch.tensor(math.nan, device=device)
    if hasattr(grad_norm, "full_tensor"):  # DTensor: whole and global, no collective if Replicate
        grad_norm = grad_norm.full_tensor()
    return torch.as_tensor(grad_norm, dtype=torch.float32, device=device).reshape(())


def _packed(args) -> bool:
    return bool(getattr(args, "sample_packing", False)) and not getattr(args, "pretraining", False)


def _seed_worker(trainer) -> Callable:
    from transformers.trainer_utils import seed_worker

    return partial(seed_worker, num_workers=trainer.args.dataloader_num_workers,
                   rank=trainer.args.process_index)


class CurriculumRun:
    """One training run's curriculum: the timeline, the data plan, the gate and the run log."""

    def __init__(self, trainer, curriculum: Curriculum, pack: Packer | None = None,
                 truncate_excess: bool = False):
        self.trainer = trainer
        self.curriculum = curriculum
        self.truncate_excess = truncate_excess
        self.rows: Rows | None = None
        self._cuts: dict[int, Cuts] = {}
        self.sampler: LevelBatchSampler | None = None
        self.totals: dict[int, dict] = {}
        self.timeline = Timeline(curriculum.input_lens,
                                 [level.max_steps for level in curriculum.levels])
        self.pack = pack
        self.plan: BatchPlan | None = None
        self.gate: Gate | None = None
        self.log = RunLog(Path(trainer.args.output_dir) / LOG_FILE, trainer.args.process_index)
        self.gate_reads = 0
        self._since_log: list[dict] = []
        self._gate_pending: list[torch.Tensor] = []
        self._micro_loss: list[torch.Tensor] = []
        self._grad_norm = None
        self._level = None
        self._decision_fields: dict[str, Any] = {}
        self.tokenizer = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
        self.pad_token_id = getattr(self.tokenizer, "pad_token_id", None)

    @property
    def sense_grad(self):
        return self.curriculum.sense_grad

    def switch_delay(self) -> int:
        """Steps from a decision to the first step fed at the new level.

        The loader's main process plans at most workers x prefetch micro-batches ahead, plus one
        held by accelerate and one being fetched; a step needs gradient_accumulation_steps of them.
        """
        args = self.trainer.args
        ahead = args.dataloader_num_workers * GATE_PREFETCH + 2
        return 1 + math.ceil(ahead / args.gradient_accumulation_steps)

    # -- data ---------------------------------------------------------------------------------
    def cuts(self, level: int) -> Cuts:
        if level not in self._cuts:
            cur = self.curriculum
            self._cuts[level] = level_cuts(
                self.rows, cur.input_lens[level], cur.truncation_of(level),
                window=cur.segment_window, prompt_cut=cur.prompt_cut,
                keep_prompt_head=cur.keep_prompt_head, last_level=level == self.timeline.last_level,
                truncate_excess=self.truncate_excess)
        return self._cuts[level]

    def _skip_empty_levels(self) -> None:
        """A filter level that admits no example is skipped (warned); any other is an error."""
        for k, input_len in enumerate(self.curriculum.input_lens):
            if self.cuts(k).fed.any():
                continue
            if self.curriculum.truncation_of(k) == "filter" and k < self.timeline.last_level:
                LOG.warning("curriculum: level %d (input_len %d, filter) admits no example; "
                            "skipping it", k, input_len)
                self.timeline.max_steps[k] = 0
                continue
            raise ValueError(f"curriculum.levels[{k}].input_len: no example keeps a trainable "
                             f"token when cut to {input_len}; raise it")

    def train_dataloader(self) -> DataLoader:
        trainer, args = self.trainer, self.trainer.args
        dataset = trainer.train_dataset
        packed = _packed(args)
        if not packed:
            dataset = trainer._remove_unused_columns(dataset, description="training")
        base = trainer._get_train_sampler(dataset)
        if "length" in dataset.column_names:
            dataset = dataset.remove_columns(["length"])
        if (packed and getattr(args, "sample_packing_drop_attention_mask", False)
                and {"position_ids", "attention_mask"} <= set(dataset.column_names)):
            dataset = dataset.remove_columns(["attention_mask"])

        cur = self.curriculum
        uses_segments = any(cur.truncation_of(k) == "segment" for k in range(len(cur.levels)))
        mask = (boundary_mask(self.tokenizer, cur.boundaries or DEFAULT_BOUNDARIES)
                if uses_segments else None)
        self.rows, self._cuts = row_stats(dataset, mask), {}
        self._skip_empty_levels()
        shuffle = not isinstance(getattr(base, "sampler", base), SequentialSampler)
        seed = args.data_seed if getattr(args, "data_seed", None) is not None else args.seed
        budget = cur.budget_for(packed)
        if packed:
            if self.pack is None:
                raise ValueError("sample packing needs a packer (the Axolotl plugin passes its own)")
            self.plan = BatchPlan(self.rows, batch_size=base.batch_size, seed=seed, shuffle=shuffle,
                                  capacity=base.batch_max_len, bin_size=base.bin_size,
                                  pack=self.pack, budget=budget)
            n_batches = len(base)
        else:
            self.plan = BatchPlan(self.rows, batch_size=trainer._train_batch_size, seed=seed,
                                  shuffle=shuffle, budget=budget)
            n_batches = len(dataset) // trainer._train_batch_size
        per_step = args.world_size * args.gradient_accumulation_steps
        n_batches = max(per_step, n_batches - n_batches % per_step)
        workers = args.dataloader_num_workers
        prefetch = args.dataloader_prefetch_factor if workers else None
        delay = None
        if self.sense_grad is not None:
            delay = self.switch_delay()
            prefetch = GATE_PREFETCH if workers else None
            self.gate = self.gate or Gate(self.curriculum, self.timeline, delay)
        self.sampler = LevelBatchSampler(
            self.plan, lambda step: self.cuts(self.timeline.level_at(step)), n_batches, per_step,
            lambda: trainer.state.global_step, delay)
        loader = DataLoader(
            CutDataset(dataset),
            batch_sampler=self.sampler,
            collate_fn=trainer.data_collator,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers if workers else False,
            prefetch_factor=prefetch,
            worker_init_fn=_seed_worker(trainer),
        )
        trainer.accelerator.even_batches = False  # unpacked token budgets vary the batch size
        return trainer.accelerator.prepare(loader)

    # -- observation (hot path: device tensors only) -------------------------------------------
    def on_micro_batch(self, inputs, loss) -> None:
        self.log.add_micro_batch(measure_batch(inputs, self.pad_token_id))
        self._micro_loss.append(loss.detach().float().reshape(()))

    def on_grad_norm(self, grad_norm) -> None:
        self._grad_norm = grad_norm

    def on_step_end(self, global_step: int) -> None:
        step = global_step - 1
        level = self.timeline.level_at(step)
        input_len = self.timeline.input_lens[level]
        if level != self._level and self.log.rank == 0:
            LOG.info("curriculum: level %d (input_len %d) from step %d", level, input_len, global_step)
        self._level = level
        device = self._micro_loss[0].device if self._micro_loss else "cpu"
        loss = torch.stack(self._micro_loss).sum() if self._micro_loss else torch.tensor(math.nan)
        grad = norm_scalar(self._grad_norm, device)
        self._micro_loss, self._grad_norm = [], None
        planned = self.sampler.planned.pop(step, {}) if self.sampler else {}
        totals = self.totals.setdefault(level, {"steps": 0})
        totals["steps"] += 1
        for key, value in planned.items():
            totals[key] = totals.get(key, 0) + value if key != "waiting" else value
        self.log.end_step(torch.stack([loss.to(device), grad]).float(),
                          step=global_step, level=level, input_len=input_len,
                          truncation=self.curriculum.truncation_of(level), **planned)
        if self.gate is not None:
            self._gate_pending.append(torch.stack([grad, loss.to(device)]))
            if global_step % self.sense_grad.check_every == 0:
                self.check(global_step)
        if self.log.pending >= FLUSH_EVERY:
            self._since_log += self.log.flush()

    # -- decisions (host reads, once per check) ---------------------------------------------------
    def sync_gate(self, global_step: int) -> None:
        """Read the pending per-step statistics, averaged over ranks, into the gate."""
        if not self._gate_pending:
            return
        values = torch.stack(self._gate_pending)
        values = self.trainer.accelerator.reduce(values, reduction="mean")
        self.gate_reads += 1
        first = global_step - len(self._gate_pending)
        for k, (grad, loss) in enumerate(values.cpu().tolist()):
            self.gate.observe(first + k, grad, loss)
        self._gate_pending = []

    def check(self, global_step: int) -> None:
        self.sync_gate(global_step)
        decision = self.gate.decide(global_step)
        fields = {"decision": decision.action, "reason": decision.reason,
                  **{k: v for k, v in decision.stats.items()}}
        self.log.annotate(global_step, **fields)
        self._decision_fields = fields
        if self.log.rank == 0 and decision.action in ("advance", "backoff"):
            LOG.info("curriculum: step %d: %s: %s", global_step, decision.action, decision.reason)

    def metrics(self) -> dict[str, Any]:
        """Values for the trainer's own log line (and so W&B/TensorBoard), measured from batches."""
        records = self._since_log + self.log.flush()
        self._since_log = []
        if not records:
            return {}
        last = records[-1]
        out = {
            "curriculum/level": last["level"],
            "curriculum/input_len": last["input_len"],
            "curriculum/max_example_len": max(r["max_example_len"] for r in records),
            "curriculum/tokens_per_step": sum(r["tokens"] for r in records) / len(records),
        }
        for key in ("examples", "tokens_cut", "skipped", "deferred"):  # planned, summed since last log
            if key in last:
                out[f"curriculum/{key}"] = sum(r.get(key, 0) for r in records)
        for key in ("grad_cv", "spikes", "loss_slope"):
            if key in self._decision_fields:
                out[f"curriculum/{key}"] = self._decision_fields[key]
        return out

    def summary(self) -> str:
        """Per level, what the steps trained fed (as planned) and what was cut or left out."""
        keys = ("steps", "examples", "tokens", "tokens_cut", "skipped", "deferred", "waiting")
        lines = [f"curriculum summary: {self.log.host_reads + self.gate_reads} host reads "
                 f"({self.log.host_reads} log, {self.gate_reads} sense_grad)",
                 "  level input_len truncation " + " ".join(keys)]
        for k, input_len in enumerate(self.timeline.input_lens):
            t = self.totals.get(k, {})
            lines.append(f"  {k} {input_len} {self.curriculum.truncation_of(k)} "
                         + " ".join(str(t.get(key, 0)) for key in keys))
        return "\n".join(lines)

    def preflight(self) -> None:
        """One forward+backward at the last level's largest micro-batch, on every rank."""
        trainer, args = self.trainer, self.trainer.args
        wanted = self.curriculum.preflight
        if wanted is None:
            wanted = torch.cuda.is_available()
        if not wanted or self.plan is None:
            return
        if trainer.is_deepspeed_enabled:
            LOG.info("curriculum: pre-flight skipped under DeepSpeed (its engine owns backward)")
            return
        last = self.timeline.last_level
        if self.plan.packed:
            rows, tokens = self.plan.batch_size, self.plan.capacity
        else:
            rows = self.plan.batch_size
            tokens = int(self.cuts(last).lengths[self.cuts(last).fed].max())
        model = trainer.model_wrapped
        vocab = trainer.model.config.get_text_config().vocab_size
        device = next(trainer.model.parameters()).device
        batch = full_length_batch(rows, tokens, vocab, device, self.plan.packed)
        model.train()
        with trainer.compute_loss_context_manager():
            preflight(model, batch, trainer.accelerator.backward, f"{rows} rows x {tokens} tokens")
        if self.log.rank == 0:
            LOG.info("curriculum: pre-flight at the last level (%d rows x %d tokens) fits", rows, tokens)

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"curriculum": self.curriculum.model_dump(mode="json"),
                "timeline": self.timeline.to_dict(),
                "gate": self.gate.state_dict() if self.gate else None}

    def save(self, checkpoint_dir: Path, global_step: int) -> None:
        if self.gate is not None:
            self.sync_gate(global_step)  # every rank saves, so this collective is safe
        if self.log.rank == 0 and checkpoint_dir.is_dir():
            (checkpoint_dir / STATE_FILE).write_text(json.dumps(self.state_dict()))

    def restore(self, checkpoint_dir: Path | None, global_step: int) -> None:
        """Continue where a checkpoint left off, or refuse a changed curriculum."""
        path = checkpoint_dir / STATE_FILE if checkpoint_dir else None
        saved = json.loads(path.read_text()) if path and path.exists() else None
        if saved is None:
            LOG.warning("curriculum: no %s in the checkpoint; the levels start over at step %d",
                        STATE_FILE, global_step + 1)
            self.timeline.segments = [Segment(0, self.timeline.last_level), Segment(global_step, 0)]
            return
        if saved["curriculum"] != self.curriculum.model_dump(mode="json"):
            if not self.curriculum.restart_on_resume:
                raise ValueError(
                    "curriculum: the checkpoint was trained with a different curriculum block; "
                    "restore that block, or set curriculum.restart_on_resume: true to start the "
                    f"levels over from step {global_step + 1}"
                )
            LOG.warning("curriculum: changed block; the levels start over at step %d", global_step + 1)
            # steps already trained replay (to be skipped) at full length; level 0 starts now
            self.timeline.segments = [Segment(0, self.timeline.last_level), Segment(global_step, 0)]
            return
        self.timeline.load(saved["timeline"])
        if self.gate is not None and saved["gate"] is not None:
            self.gate.load(saved["gate"])


class CurriculumCallback(TrainerCallback):
    def __init__(self, run: CurriculumRun, resume_dir: Callable[[Any, Any], Path | None]):
        self.run = run
        self.resume_dir = resume_dir

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:
            self.run.restore(self.resume_dir(args, state), state.global_step)
        self.run.log.start(resumed_at=state.global_step)
        self.run.preflight()

    def on_step_end(self, args, state, control, **kwargs):
        self.run.on_step_end(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        self.run.save(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.run.log.flush()
        if self.run.log.rank == 0:
            LOG.info(self.run.summary())


def default_resume_dir(args, state) -> Path:
    return Path(args.output_dir) / f"checkpoint-{state.global_step}"


def attach(trainer, curriculum: Curriculum | dict, pack: Packer | None = None,
           resume_dir: Callable[[Any, Any], Path | None] = default_resume_dir,
           truncate_excess: bool = False) -> CurriculumRun:
    """Give `trainer` the curriculum: its train dataloader, batch measurements and log metrics.

    `curriculum`: the `curriculum:` block, as a `Curriculum` or the plain dict of its YAML.
    `truncate_excess`: in filter mode, rows longer than the last level are head-cut (Axolotl's
    `excess_length_strategy: truncate`) instead of skipped.
    """
    curriculum = Curriculum.model_validate(curriculum)
    if getattr(trainer.args, "packing", False):
        raise ValueError("curriculum: TRL's packing=True packs rows before the curriculum can cut "
                         "them; set packing=False (padding_free=True keeps rows unpadded)")
    # Axolotl runs the same check at config time; a plain Trainer meets it here.
    curriculum.check_training(max_grad_norm=trainer.args.max_grad_norm or 0.0,
                              deepspeed=trainer.is_deepspeed_enabled, packed=_packed(trainer.args))
    run = CurriculumRun(trainer, curriculum, pack, truncate_excess)
    trainer.get_train_dataloader = run.train_dataloader

    training_step = trainer.training_step

    def measured_training_step(model, inputs, *args, **kwargs):
        loss = training_step(model, inputs, *args, **kwargs)
        run.on_micro_batch(inputs, loss)
        return loss

    trainer.training_step = measured_training_step

    get_grad_norm = trainer._get_grad_norm

    def recorded_grad_norm(*args, **kwargs):
        grad_norm = get_grad_norm(*args, **kwargs)
        run.on_grad_norm(grad_norm)
        return grad_norm

    trainer._get_grad_norm = recorded_grad_norm

    log = trainer.log

    def log_with_curriculum(logs, *args, **kwargs):
        if "loss" in logs:
            logs.update(run.metrics())
        return log(logs, *args, **kwargs)

    trainer.log = log_with_curriculum
    trainer.add_callback(CurriculumCallback(run, resume_dir))
    return run

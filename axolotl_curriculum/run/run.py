"""One training run's curriculum, independent of any trainer: the public face over its parts.

A trainer adapter (`integrations.trainer.attach` for a transformers `Trainer`) or a hand-written
loop drives it, in this order: `train_loader(...)` once (it takes the data, resolves
`levels: auto` and builds the sampler), `load_state_dict` on a resume, `start()`, then
`on_micro_batch` for each micro-batch and `on_step_end` for each optimizer step, `state_dict`
at each checkpoint and `finish()` at the end. Each concern is a part that owns its state:
`scoring` (difficulty scores, cache, re-score), `cuts` (what each level feeds), `decisions`
(sense_grad's gate), `ledger` (per-level totals, metrics, summary), `rope` (per-level RoPE),
`log` (the JSONL). Everything on the hot path stays on the device; the host reads statistics
only when the gate checks or a log line is written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.config import Curriculum
from ..core.cut import Rows
from ..core.errors import CurriculumError
from ..core.plan import BatchPlan, Packer, check_short_bins
from ..core.schedule import Timeline
from ..data.loader import LevelBatchSampler, make_loader, shard
from ..data.rows import rows_for
from . import resume
from .batch_stats import measure_batch, norm_scalar
from .decisions import GATE_PREFETCH, Decisions, switch_delay
from .ledger import Ledger
from .levels import LevelCuts, resolve_auto
from .preflight import Preflights
from .probes import Probes
from .rope_switch import RopeSwitch
from .runlog import GRAD_NORM, LOSS, RunLog
from .scoring import Scores

logger = logging.getLogger(__name__)
FLUSH_EVERY = 256  # steps; bounds the device-side buffer when logging is sparse


class CurriculumRun:
    """The curriculum of one run on one rank.

    `reduce_mean(tensor)`: the mean over ranks (accelerate's `reduce`); the gate decides on it,
    so every rank takes the same decision. Steps are numbered as trainers do: `global_step` is
    1-based and counts optimizer steps; the timeline and the sampler use `global_step - 1`.
    """

    def __init__(self, curriculum: Curriculum | dict, output_dir, *, rank: int = 0,
                 world_size: int = 1, grad_accum: int = 1,
                 reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 truncate_excess: bool = False, pad_token_id: int | None = None,
                 score_cache=None, eot_tokens: list[str] | None = None):
        self.curriculum = (curriculum if isinstance(curriculum, Curriculum)
                           else Curriculum.model_validate(curriculum))
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.batches_per_step = world_size * grad_accum
        self.reduce_mean = reduce_mean or (lambda t: t)
        self.truncate_excess = truncate_excess
        self.pad_token_id = pad_token_id
        self.eot_tokens = eot_tokens  # segment cuts end a chat row after one (default: eos)
        self.scoring = Scores(self.curriculum.difficulty, rank=rank, world_size=world_size,
                              reduce_mean=self.reduce_mean, pad_token_id=pad_token_id,
                              cache_dir=score_cache)
        # `levels: auto` has no ladder until the data and the run's steps are known (use_data)
        self.timeline = None if self.curriculum.is_auto else self._timeline()
        self.log = RunLog(output_dir, rank)
        self.ledger = Ledger()
        self.rows: Rows | None = None
        self.plan: BatchPlan | None = None
        self.cuts: LevelCuts | None = None  # `cuts(level)`: what a level feeds of each row
        self.sampler: LevelBatchSampler | None = None
        self.decisions: Decisions | None = None  # sense_grad's gate
        self.rope: RopeSwitch | None = None  # per-level RoPE (rope_theta / rope_scaling)
        self.delay: int | None = None  # steps from a decision to the data (sense_grad, rescore)
        self.steps_per_epoch: int | None = None  # known once train_loader has the data
        self.total_steps: int | None = None
        self.global_step = 0  # optimizer steps finished (after a resume: the checkpoint's)
        self.preflights = Preflights()  # the shapes pre-flighted; `at` set by an adapter
        self.probes: Probes | None = None  # held-out measurements (curriculum.probes)
        self._since_log: list[dict] = []
        self._level: int | None = None

    @property
    def sense_grad(self):
        return self.curriculum.sense_grad

    @property
    def scores(self) -> np.ndarray | None:
        """Per example, the latest difficulty scores."""
        return self.scoring.latest

    @property
    def rescoring(self) -> bool:
        return self.curriculum.difficulty is not None and self.curriculum.difficulty.rescore

    def _timeline(self) -> Timeline:
        return Timeline(self.curriculum.input_lens,
                        [level.max_steps for level in self.curriculum.levels])

    def levels_in_use(self) -> list[int]:
        return [k for k, cap in enumerate(self.timeline.max_steps) if cap != 0]

    # -- data ---------------------------------------------------------------------------------
    def use_data(self, rows: Rows, plan: BatchPlan, *, sequence_len: int | None = None,
                 total_steps: int | None = None, scores: np.ndarray | None = None) -> None:
        """Take the run's row statistics and plan; check every level can fill a step.

        `levels: auto` is resolved here, from the rows that train, `sequence_len` (default: the
        longest row) and the run's `total_steps`, and its timeline built.
        """
        if self.curriculum.difficulty is not None and scores is None:
            raise CurriculumError("curriculum.difficulty: the run needs the examples' scores")
        self.rows, self.plan = rows, plan
        self.scoring.begin(scores, rows)
        if self.curriculum.is_auto:
            self.curriculum = resolve_auto(self.curriculum, rows, sequence_len, total_steps,
                                           self.rank)
            self.timeline = self._timeline()
        self.cuts = LevelCuts(self.curriculum, self.timeline, rows, self.scoring,
                              truncate_excess=self.truncate_excess)
        self.cuts.check_all(self.batches_per_step, self.rank)
        if plan.packed:
            check_short_bins(self.curriculum, plan.batch_size * self.batches_per_step)

    def preflight_new_shapes(self) -> list[tuple[int, int, int]]:
        """Pre-flight the largest shapes the levels can feed now (at the start, and after a
        re-score changed what a level admits) that no earlier pre-flight covers."""
        return self.preflights.run(
            self.plan.largest_batches([self.cuts.fed(k) for k in self.levels_in_use()]))

    def make_sampler(self, n_batches: int, current_step: Callable[[], int] | None = None,
                     workers: int = 0, skip_trained: bool = False) -> LevelBatchSampler:
        """The train loader's batch sampler: `n_batches` global micro-batches per epoch (rounded
        down to whole optimizer steps); `current_step()`: optimizer steps finished (default:
        the steps this run was told of, `global_step`)."""
        n_batches = max(self.batches_per_step, n_batches - n_batches % self.batches_per_step)
        if self.curriculum.gated or self.rescoring:
            self.delay = switch_delay(workers, self.grad_accum)
        if self.curriculum.gated and self.decisions is None:
            self.decisions = Decisions(self.curriculum, self.timeline, self.delay,
                                       self.reduce_mean, self.rank)
        self.sampler = LevelBatchSampler(
            self.plan, self.cuts.at, n_batches, self.batches_per_step,
            current_step or (lambda: self.global_step), self.delay, skip_trained)
        return self.sampler

    def train_loader(self, dataset, collate_fn, batch_size: int, *, seed: int = 0,
                     shuffle: bool = True, accelerator=None, tokenizer=None,
                     sequence_len: int | None = None, epochs: float = 1, max_steps: int = 0,
                     pack: Packer | None = None, capacity: int | None = None,
                     bin_size: int | None = None, n_batches: int | None = None,
                     num_workers: int = 0, skip_trained: bool = True,
                     current_step: Callable[[], int] | None = None, model=None,
                     scores_from=None, pad_to_multiple_of: int | None = None,
                     eval_dataset=None, **loader_args) -> DataLoader:
        """The curriculum's train loader over a tokenized map-style dataset (`input_ids`,
        optional `labels`), for a trainer adapter or a hand-written loop.

        Unpacked: micro-batches of `batch_size` examples (more at short levels under
        `budget: tokens`). Packed (`pack`, e.g. Axolotl's packer, with `capacity` tokens per
        row): `batch_size` rows per micro-batch. `n_batches`: global micro-batches per epoch
        (default: one pass at full length). With an `accelerator` the loader is sharded with
        accelerate's own classes; `tokenizer` is needed for segment cuts, `model` for the
        model difficulty scores (`loss`, `ifd`: one pass before step 1) and per-level RoPE.
        After `load_state_dict`, the first epoch starts at the checkpoint's step
        (`skip_trained`; a trainer that skips replayed batches itself passes False and its
        `current_step`). `scores_from`: the same rows with every column (a trainer drops
        unused columns before collating, a `column` score among them); default `dataset`.
        `pad_to_multiple_of`: the collator's (a micro-batch is padded to its longest row
        rounded up to it), so the pre-flight shapes and the planned `positions` are the ones
        the model runs on. `eval_dataset`: held-out rows for the probes (`short`,
        `position_loss`); the probes run `model` in `on_step_end`.
        """
        rows, mask = rows_for(self.curriculum, dataset, tokenizer, self.eot_tokens)
        scores = (self.scoring.initial(dataset if scores_from is None else scores_from, rows,
                                       mask, model, batch_size, tokenizer)
                  if self.curriculum.difficulty else None)
        plan = BatchPlan(rows, batch_size=batch_size, seed=seed, shuffle=shuffle,
                         capacity=capacity, bin_size=bin_size, pack=pack,
                         budget=self.curriculum.budget_for(pack is not None),
                         pad_to_multiple_of=pad_to_multiple_of)
        n_batches = n_batches or plan.pass_batches()
        self.steps_per_epoch = max(1, n_batches // self.batches_per_step)
        self.total_steps = (max_steps if max_steps > 0
                            else math.ceil(epochs * self.steps_per_epoch))
        self.use_data(rows, plan, sequence_len=sequence_len, total_steps=self.total_steps,
                      scores=scores)
        self._check_run(model, pack, capacity, max_steps)
        self.probes = Probes.of(self.curriculum, self.timeline, model, eval_dataset, tokenizer,
                                rank=self.rank, world_size=self.world_size,
                                reduce_mean=self.reduce_mean)
        sampler = self.make_sampler(n_batches, current_step, num_workers, skip_trained)
        if self.rescoring:
            self.scoring.source = (dataset, model, batch_size)
        if self.delay is not None and num_workers:
            loader_args["prefetch_factor"] = GATE_PREFETCH
        loader = make_loader(dataset, sampler, collate_fn, num_workers=num_workers, **loader_args)
        return shard(loader, accelerator) if accelerator is not None else loader

    def _check_run(self, model, pack: Packer | None, capacity: int | None, max_steps: int) -> None:
        """The checks that need the resolved levels, the run's length and the model."""
        cur = self.curriculum
        warning = cur.check_run_length(
            self.total_steps, length_from="max_steps" if max_steps > 0 else "num_train_epochs")
        if warning and self.rank == 0:
            logger.warning("curriculum: %s", warning)
        self.rope = RopeSwitch.of(model, cur, self.timeline, self.rank)
        if pack is not None:
            cur.check_capacity(capacity)

    def _probe_if_due(self, global_step: int) -> None:
        """The probes after `global_step` (before the next level's RoPE: a level's `before`
        value is the model as the previous level left it), into the log and the gate."""
        if self.probes is None or not self.probes.due(global_step, self.total_steps):
            return
        values = self.probes.measure(self.timeline.level_at(max(global_step - 1, 0)))
        if global_step > 0:
            self.log.annotate(global_step, **values)
        else:  # the model before training (its own RoPE): no step line to ride on, so with
            self.log.add_eval(0, values)  # the evals, as the reference retention is read against
        if self.decisions is not None:
            self.decisions.probed(global_step, values)

    # -- observation (hot path: device tensors only) -------------------------------------------
    def on_micro_batch(self, inputs, loss: torch.Tensor) -> None:
        measured = measure_batch(inputs, self.pad_token_id).double()
        self.log.add_micro_batch(torch.cat([measured, loss.detach().double().reshape(1)]))

    def on_step_end(self, global_step: int, grad_norm=None) -> None:
        """Close optimizer step `global_step` (1-based), after the optimizer stepped."""
        if self.cuts is None:
            raise RuntimeError("CurriculumRun.on_step_end before train_loader: build the train "
                               "loader first (it takes the data the levels cut)")
        self.global_step = global_step
        level = self.timeline.level_at(global_step - 1)
        input_len = self.timeline.input_lens[level]
        if level != self._level and self.rank == 0:
            logger.info("curriculum: level %d (input_len %d) from step %d", level, input_len,
                        global_step)
        self._level = level
        planned = self.sampler.planned.pop(global_step - 1, {}) if self.sampler else {}
        self.ledger.add_step(level, planned)
        fields = {"step": global_step, "level": level, "input_len": input_len,
                  "truncation": self.curriculum.truncation_of(level)}
        if self.rope is not None and self.rope.applied is not None:  # the RoPE this step ran with
            fields["rope_theta"] = self.rope.applied["rope_theta"]
        if self.rank == 0:
            fields.update({f"global_{key}": value for key, value in planned.items()})
        device = self.log.device
        if device is not None:
            values = self.log.end_step(norm_scalar(grad_norm, device), **fields)
        self._probe_if_due(global_step)
        if device is not None and self.decisions is not None:
            # plain indexing: a list index would copy it to the device
            self.decisions.observe(global_step, values[GRAD_NORM], values[LOSS],
                                   self.log.annotate)
        if self.rescoring:
            self._rescore_if_due(global_step)
        if self.rope is not None:
            self.rope.apply(global_step)
        if self.log.pending >= FLUSH_EVERY:
            self._since_log += self.log.flush()

    def _rescore_if_due(self, global_step: int) -> None:
        """Re-score when the next step the loader may plan (the switch delay ahead; a sense_grad
        decision lands exactly there) opens a level that admits by score. Every rank reaches
        the same step end, so the sharded pass agrees."""
        step = global_step + self.delay - 1
        fields = self.scoring.rescore_if_due(step, self.timeline, self.curriculum, self.rows)
        if fields is None:
            return
        self.cuts.check(fields["rescore_level"], self.batches_per_step)
        self.preflight_new_shapes()
        self.log.annotate(global_step, **fields)
        if self.rank == 0:
            logger.info("curriculum: difficulty re-scored at step %d for level %d (from step "
                        "%d): %d examples admitted instead of others, in %.1f s", global_step,
                        fields["rescore_level"], step + 1, fields["rescore_changed"],
                        fields["rescore_seconds"])

    def metrics(self) -> dict[str, Any]:
        """Values for the trainer's own log line since the last one (W&B/TensorBoard)."""
        records = self._since_log + self.log.flush()
        self._since_log = []
        out = Ledger.metrics(records)
        if out and self.decisions is not None:
            out.update(self.decisions.metrics())
        return out

    # -- summary and checkpoints -----------------------------------------------------------------
    def summary(self) -> dict:
        """Per level, the steps trained and what the plan fed in them, on all ranks together."""
        return self.ledger.summary(self.curriculum, self.timeline, self.scores, self.cuts,
                                   self.rope.applied if self.rope is not None else None)

    def summary_text(self) -> str:
        return Ledger.text(self.summary()["levels"])

    def start(self) -> None:
        """Before the first step (after `load_state_dict` on a resume): open the run log,
        dropping lines past the step training continues from. The model gets the RoPE of
        the level the next step trains at."""
        self.log.start(resumed_at=self.global_step)
        if self.global_step == 0:
            self._probe_if_due(0)  # the first level's `before`
        if self.rope is not None:
            self.rope.apply(self.global_step)

    def on_evaluate(self, global_step: int, metrics: dict) -> None:
        """An evaluation after `global_step` steps: its metrics go to the evals file (rank 0),
        so `report` plots them whether or not the run saved checkpoints."""
        self.log.add_eval(global_step, metrics)

    def finish(self) -> None:
        self.log.flush()
        self.log.write_summary(self.summary())
        if self.rank == 0:
            logger.info(self.summary_text())

    def state_dict(self, global_step: int) -> dict:
        """What a checkpoint at `global_step` needs to continue the same run.

        Pending gate statistics are read first (a collective: call it on every rank)."""
        if self.decisions is not None:
            self.decisions.sync(global_step)
        # the log lines up to the checkpoint are written with it: a crash after it loses none
        self._since_log += self.log.flush()
        return {"curriculum": self.curriculum.model_dump(mode="json"),
                "timeline": self.timeline.state_dict(), "scores": self.scoring.state_dict(),
                "gate": self.decisions.state_dict() if self.decisions else None,
                "totals": self.ledger.state_dict()}

    def load_state_dict(self, saved: dict | None, global_step: int) -> None:
        """Continue where a checkpoint at `global_step` left off, or refuse a changed block
        (`resume.restore`). Call it after the train loader is built (it resolves
        `levels: auto`)."""
        self.global_step = global_step
        if resume.restore(saved, global_step, self.curriculum, self.timeline):
            self.ledger.load_state_dict(saved.get("totals", {}))
            if self.decisions is not None:
                self.decisions.load_state_dict(saved["gate"])
            if saved.get("scores") is not None:
                self.scoring.load_state_dict(saved["scores"])
                if self.cuts is not None:
                    self.cuts.forget()

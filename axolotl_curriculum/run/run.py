"""One training run's curriculum, independent of any trainer: levels, data plan, gate, logs.

A trainer adapter (`trainer.attach` for a transformers `Trainer`) or a hand-written loop drives
it: build the train loader's sampler once, report each micro-batch and each optimizer step, and
checkpoint `state_dict()`. Everything on the hot path stays on the device; the host reads
statistics only when the gate checks (every `check_every` steps) or a log line is written.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .batch_stats import measure_batch
from ..core.config import MODEL_SCORES, Curriculum
from ..core.cut import Cuts, Rows, level_cuts
from ..core.cut import DEFAULT_BOUNDARIES
from ..data.loader import LevelBatchSampler, make_loader, shard
from ..data.model_scores import model_scores
from ..core.plan import STEP_COUNTS, BatchPlan, Packer
from ..core.difficulty import admitted
from ..data import score_cache
from ..data.rows import boundary_mask, content_digest, difficulty_scores, row_stats
from ..core.rope import apply_rope, merged, model_rope
from .runlog import GRAD_NORM, LOSS, RunLog
from ..core.schedule import Segment, Timeline
from ..core.sense_grad import Gate

LOG = logging.getLogger("axolotl_curriculum")
GATE_PREFETCH = 2  # per worker, with sense_grad: bounds how far the data runs ahead of decisions
FLUSH_EVERY = 256  # steps; bounds the device-side buffer when logging is sparse
# The part of the block that decides what is fed: a resume under other values would not replay
# the same data. (preflight and restart_on_resume change nothing that was fed.)
DATA_KEYS = ("levels", "sense_grad", "truncation", "segment_window", "boundaries", "prompt_cut",
             "keep_prompt_head", "budget", "difficulty")


def _fed(block: dict, key: str):
    """The part of a block's `key` that decides what is fed (the score cache does not)."""
    value = block.get(key)
    if key == "difficulty" and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "cache"}
    return value


def norm_scalar(grad_norm, device) -> torch.Tensor:
    """The gradient norm as a plain 0-d float64 tensor on `device`, without a blocking copy.

    Engines hand it over differently: DDP a tensor, DeepSpeed a float, FSDP2 a DTensor (stacking
    that with plain tensors raises; a Partial one would be this rank's share), None without one.
    A host float is filled in on the device (`torch.full`), never copied from the host.
    """
    if grad_norm is None:
        return torch.full((), math.nan, dtype=torch.float64, device=device)
    if hasattr(grad_norm, "full_tensor"):  # DTensor: whole and global, no collective if Replicate
        grad_norm = grad_norm.full_tensor()
    if isinstance(grad_norm, torch.Tensor):
        return grad_norm.detach().to(device=device, dtype=torch.float64).reshape(())
    return torch.full((), float(grad_norm), dtype=torch.float64, device=device)


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
                 score_cache=None):
        self.curriculum = Curriculum.model_validate(curriculum)
        self.rank = rank
        self.batches_per_step = world_size * grad_accum
        self.grad_accum = grad_accum
        self.reduce_mean = reduce_mean or (lambda t: t)
        self.truncate_excess = truncate_excess
        self.pad_token_id = pad_token_id
        self.score_cache = score_cache  # folder of cached difficulty scores (None: not cached)
        # `levels: auto` has no ladder until the data and the run's steps are known (use_data)
        self.timeline = None if self.curriculum.is_auto else self._timeline()
        self.log = RunLog(output_dir, rank)
        self.rows: Rows | None = None
        # per example, the difficulty scores in effect from each 0-based step on (rescore adds)
        self._score_from: list[int] = []
        self._score_sets: list[np.ndarray] = []
        self._scoring: tuple | None = None  # rescore: (dataset, model, batch size)
        self.delay: int | None = None  # steps from a decision to the data (sense_grad, rescore)
        self.plan: BatchPlan | None = None
        self.sampler: LevelBatchSampler | None = None
        self.gate: Gate | None = None
        self.totals: dict[int, dict] = {}
        self._cuts: dict[int, Cuts] = {}
        self._since_log: list[dict] = []
        self._gate_pending: list[torch.Tensor] = []
        self._level: int | None = None
        self._decision_fields: dict[str, Any] = {}
        self.global_step = 0  # optimizer steps finished (after a resume: the checkpoint's)
        # (rows, positions per row, longest example) of the micro-batches pre-flighted so far;
        # `preflight_at(shapes)`, set by an adapter, runs a forward+backward at each new one
        self.preflighted: list[tuple[int, int, int]] = []
        self.preflight_at: Callable[[list], None] | None = None
        # per-level RoPE (rope.py): the model, its own RoPE parameters, and those applied now
        self._rope: tuple[torch.nn.Module, dict] | None = None
        self._rope_applied: dict | None = None
        self._rope_level: int | None = None

    @property
    def sense_grad(self):
        return self.curriculum.sense_grad

    def _timeline(self) -> Timeline:
        return Timeline(self.curriculum.input_lens,
                        [level.max_steps for level in self.curriculum.levels])

    # -- data ---------------------------------------------------------------------------------
    def cuts(self, level: int, version: int | None = None) -> Cuts:
        """What `level` feeds of each row, admitted by the scores of `version` (default: the
        latest; `rescore` adds one at each switch)."""
        version = len(self._score_sets) - 1 if version is None else version
        if (level, version) not in self._cuts:
            cur, scores = self.curriculum, self._score_sets[version] if self._score_sets else None
            cuts = level_cuts(
                self.rows, cur.input_lens[level], cur.truncation_of(level),
                window=cur.segment_window, prompt_cut=cur.prompt_cut,
                keep_prompt_head=cur.keep_prompt_head, last_level=level == self.timeline.last_level,
                truncate_excess=self.truncate_excess)
            if scores is not None and cur.admit_of(level) < 1:
                # not admitted yet: waits for the level that admits it, as filter mode's rows do
                ok = admitted(scores, cur.admit_of(level))
                if cuts.row_of is not None:  # a split level: its units, by their rows' scores
                    ok = ok[cuts.row_of]
                cuts = replace(cuts, fed=cuts.fed & ok, waits=cuts.waits | (~ok & cuts.fed))
            self._cuts[level, version] = cuts
        return self._cuts[level, version]

    def cuts_at(self, step: int) -> Cuts:
        """What 0-based `step` feeds: its level, admitted by the scores in effect then."""
        return self.cuts(self.timeline.level_at(step), bisect.bisect_right(self._score_from, step) - 1)

    @property
    def scores(self) -> np.ndarray | None:
        """Per example, the latest difficulty scores."""
        return self._score_sets[-1] if self._score_sets else None

    def levels_in_use(self) -> list[int]:
        return [k for k, cap in enumerate(self.timeline.max_steps) if cap != 0]

    def preflight_new_shapes(self) -> list[tuple[int, int, int]]:
        """Pre-flight the largest micro-batch shapes the levels can feed now that no earlier
        pre-flight covers (at the start, and after a re-score changed what a level admits: an
        unpacked token budget then changes how many examples a micro-batch holds)."""
        shapes = self.plan.largest_batches([self.cuts(k) for k in self.levels_in_use()])
        new = [s for s in shapes
               if not any(o[0] >= s[0] and o[1] >= s[1] for o in self.preflighted)]
        if new and self.preflight_at is not None:
            self.preflight_at(new)
            self.preflighted += new
        return new

    def use_data(self, rows: Rows, plan: BatchPlan, *, sequence_len: int | None = None,
                 total_steps: int | None = None, scores: np.ndarray | None = None) -> None:
        """Take the run's row statistics and plan; check every level can fill a step.

        `levels: auto` is resolved here, from the rows that train, `sequence_len` (default: the
        longest row) and the run's `total_steps`. A step needs one example per micro-batch at
        least (`world_size x gradient accumulation` of them), each fed once. A filter level
        below that is skipped (warned); any other level is an error naming it.
        """
        self.rows, self.plan, self._cuts = rows, plan, {}
        if self.curriculum.difficulty is not None and scores is None:
            raise ValueError("curriculum.difficulty: the run needs the examples' scores")
        if scores is not None:  # a row that cannot train takes no admission slot
            scores = np.where(rows.first_label < rows.lengths, scores, np.inf)
        self._score_from, self._score_sets = ([0], [scores]) if scores is not None else ([], [])
        if self.curriculum.is_auto:
            from ..core.auto import as_yaml, resolve

            trains = rows.lengths[rows.first_label < rows.lengths]
            self.curriculum = resolve(self.curriculum, trains,
                                      sequence_len or int(rows.lengths.max(initial=2)),
                                      total_steps or 1)
            self.timeline = self._timeline()
            if self.rank == 0:
                LOG.info("curriculum: levels: auto chose\n%s", as_yaml(self.curriculum))
        for k, input_len in enumerate(self.curriculum.input_lens):
            fed = int(self.cuts(k).fed.sum())
            if fed >= self.batches_per_step:
                continue
            if self.curriculum.truncation_of(k) == "filter" and k < self.timeline.last_level:
                LOG.warning("curriculum: level %d (input_len %d, filter) admits %d examples, fewer "
                            "than the %d micro-batches of a step; skipping it", k, input_len, fed,
                            self.batches_per_step)
                self.timeline.max_steps[k] = 0
                continue
            self._too_few(k, fed)

    def _too_few(self, k: int, fed: int) -> None:
        cur = self.curriculum
        fixes = ["raise input_len"]
        if cur.admit_of(k) < 1:
            fixes.append("admit")
        if cur.prompt_cut == "none" and cur.truncation_of(k) != "filter":
            # the rows whose prompt fills the level: prompt_cut: left would feed them
            left = level_cuts(self.rows, cur.input_lens[k], cur.truncation_of(k),
                              window=cur.segment_window, prompt_cut="left",
                              keep_prompt_head=cur.keep_prompt_head)
            if int(left.fed.sum()) > fed:
                fixes.append(f"set curriculum.prompt_cut: left (it feeds {int(left.fed.sum())} "
                             "by shortening their prompts)")
        raise ValueError(
            f"curriculum.levels[{k}].input_len: {fed} examples keep a trainable token when cut "
            f"to {cur.input_lens[k]}, fewer than the {self.batches_per_step} "
            "micro-batches of one optimizer step (world size x gradient_accumulation_steps); "
            f"{', '.join(fixes)} or add data")

    def _scores(self, dataset, rows: Rows, mask, model, batch_size: int, tokenizer) -> np.ndarray:
        """The initial difficulty scores, from the cache when every rank finds them there."""
        spec = self.curriculum.difficulty
        if spec.score in MODEL_SCORES and model is None:
            raise ValueError(f"curriculum.difficulty: {spec.score} scores examples with the model "
                             "being trained; pass model= to train_loader")
        compute = lambda: self._compute_scores(dataset, rows, mask, model, batch_size)  # noqa: E731
        if self.score_cache is None or not spec.cache:
            return compute()
        columns = ("input_ids", "labels", "completion_mask", *([spec.column] if spec.column else []))
        parts = {"dataset": {"rows": len(rows), "content": content_digest(dataset, columns)},
                 "tokenizer": score_cache.tokenizer_part(tokenizer),
                 "score": spec.model_dump(exclude={"rescore", "cache"}),
                 "boundaries": score_cache.key({"mask": np.flatnonzero(mask).tolist()})
                 if spec.score == "segments" else None,
                 "model": score_cache.model_part(model) if spec.score in MODEL_SCORES else None}
        scores, path, seconds = score_cache.cached(
            self.score_cache, parts, len(rows), compute, write=self.rank == 0,
            all_ranks=lambda hit: self._all_ranks(hit, model))
        if self.rank == 0:
            if seconds is None:
                LOG.info("curriculum: difficulty scores: loaded from cache %s", path)
            else:
                LOG.info("curriculum: difficulty scores: computed in %.1f s, cached at %s",
                         seconds, path)
        return scores

    def _all_ranks(self, flag: bool, model) -> bool:
        """Whether `flag` holds on every rank (one collective, before step 1)."""
        device = (next(model.parameters()).device if model is not None
                  else torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        return bool(self.reduce_mean(torch.full((), float(flag), device=device)).item() == 1)

    def _compute_scores(self, dataset, rows: Rows, mask, model, batch_size: int) -> np.ndarray:
        spec = self.curriculum.difficulty
        if spec.score not in MODEL_SCORES:
            return difficulty_scores(dataset, spec, mask)
        world = self.batches_per_step // self.grad_accum
        return model_scores(spec.score, model, dataset, rows, rank=self.rank, world_size=world,
                            reduce_sum=lambda t: self.reduce_mean(t) * world,
                            batch_size=max(8, batch_size), sample=spec.sample, seed=spec.seed,
                            pad_token_id=self.pad_token_id or 0)

    def switch_delay(self, workers: int) -> int:
        """Steps from a decision to the first step fed at the new level.

        The loader's main process plans at most workers x prefetch micro-batches ahead, plus one
        held by accelerate and one being fetched; a step needs gradient accumulation of them.
        """
        return 1 + math.ceil((workers * GATE_PREFETCH + 2) / self.grad_accum)

    def make_sampler(self, n_batches: int, current_step: Callable[[], int] | None = None,
                     workers: int = 0, skip_trained: bool = False) -> LevelBatchSampler:
        """The train loader's batch sampler: `n_batches` global micro-batches per epoch (rounded
        down to whole optimizer steps); `current_step()`: optimizer steps finished (default:
        the steps this run was told of, `global_step`)."""
        n_batches = max(self.batches_per_step, n_batches - n_batches % self.batches_per_step)
        if self.sense_grad is not None or self.rescoring:
            self.delay = self.switch_delay(workers)
        if self.sense_grad is not None:
            self.gate = self.gate or Gate(self.curriculum, self.timeline, self.delay)
        self.sampler = LevelBatchSampler(
            self.plan, self.cuts_at, n_batches, self.batches_per_step,
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
                     **loader_args) -> DataLoader:
        """The curriculum's train loader over a tokenized map-style dataset (`input_ids`,
        optional `labels`), for a trainer adapter or a hand-written loop.

        Unpacked: micro-batches of `batch_size` examples (more at short levels under
        `budget: tokens`). Packed (`pack`, e.g. Axolotl's packer, with `capacity` tokens per
        row): `batch_size` rows per micro-batch. `n_batches`: global micro-batches per epoch
        (default: one pass at full length). With an `accelerator` the loader is sharded with
        accelerate's own classes; `tokenizer` is needed for segment cuts, `model` for the
        model difficulty scores (`loss`, `ifd`: one pass before step 1). After
        `load_state_dict`, the first epoch starts at the checkpoint's step (`skip_trained`;
        a trainer that skips replayed batches itself passes False and its `current_step`).
        `scores_from`: the same rows with every column (a trainer drops unused columns before
        collating, a `column` score among them); default `dataset`. `pad_to_multiple_of`: the
        collator's (a micro-batch is padded to its longest row rounded up to it), so the
        pre-flight shapes and the planned `positions` are the ones the model runs on.
        """
        cur = self.curriculum
        modes = [cur.truncation] if cur.is_auto else [cur.truncation_of(k) for k in range(len(cur.levels))]
        wants_segments = cur.difficulty is not None and cur.difficulty.score == "segments"
        mask = None
        if "segment" in modes or wants_segments:
            if tokenizer is None:
                raise ValueError(
                    f"curriculum.{'truncation' if 'segment' in modes else 'difficulty'}: "
                    "segments are found with the tokenizer's boundary tokens; pass tokenizer= "
                    "to train_loader")
            mask = boundary_mask(tokenizer, cur.boundaries or DEFAULT_BOUNDARIES)
        rows = row_stats(dataset, mask)
        scores = (self._scores(dataset if scores_from is None else scores_from, rows, mask,
                               model, batch_size, tokenizer)
                  if cur.difficulty else None)
        budget = cur.budget_for(pack is not None)
        plan = BatchPlan(rows, batch_size=batch_size, seed=seed, shuffle=shuffle,
                         capacity=capacity, bin_size=bin_size, pack=pack, budget=budget,
                         pad_to_multiple_of=pad_to_multiple_of)
        if n_batches is None:
            per_batch = batch_size * (capacity if pack is not None else 1)
            units = int(np.minimum(rows.lengths, capacity).sum()) if pack is not None else len(rows)
            n_batches = max(1, units // per_batch)
        self.steps_per_epoch = max(1, n_batches // self.batches_per_step)
        self.total_steps = (max_steps if max_steps > 0
                            else math.ceil(epochs * self.steps_per_epoch))
        self.use_data(rows, plan, sequence_len=sequence_len, total_steps=self.total_steps,
                      scores=scores)
        warning = self.curriculum.check_run_length(
            self.total_steps, length_from="max_steps" if max_steps > 0 else "num_train_epochs")
        if warning and self.rank == 0:
            LOG.warning("curriculum: %s", warning)
        if self.curriculum.sets_rope:
            if model is None:
                raise ValueError("curriculum.levels: rope_theta / rope_scaling change the model's "
                                 "rotary embedding; pass model= to train_loader")
            self._rope = (model, model_rope(model))
        if pack is not None and max(self.curriculum.input_lens) > capacity:
            k = int(np.argmax(self.curriculum.input_lens))
            raise ValueError(f"curriculum.levels[{k}].input_len: {self.curriculum.input_lens[k]} "
                             f"tokens do not fit in a packed row of capacity={capacity}; lower "
                             "input_len or raise capacity")
        sampler = self.make_sampler(n_batches, current_step, num_workers, skip_trained)
        if self.rescoring:
            self._scoring = (dataset, model, batch_size)
        if self.delay is not None and num_workers:
            loader_args["prefetch_factor"] = GATE_PREFETCH
        loader = make_loader(dataset, sampler, collate_fn, num_workers=num_workers, **loader_args)
        return shard(loader, accelerator) if accelerator is not None else loader

    # -- observation (hot path: device tensors only) -------------------------------------------
    def on_micro_batch(self, inputs, loss: torch.Tensor) -> None:
        measured = measure_batch(inputs, self.pad_token_id).double()
        self.log.add_micro_batch(torch.cat([measured, loss.detach().double().reshape(1)]))

    def on_step_end(self, global_step: int, grad_norm=None) -> None:
        """Close optimizer step `global_step` (1-based), after the optimizer stepped."""
        self.global_step = global_step
        step = global_step - 1
        level = self.timeline.level_at(step)
        input_len = self.timeline.input_lens[level]
        if level != self._level and self.rank == 0:
            LOG.info("curriculum: level %d (input_len %d) from step %d", level, input_len, global_step)
        self._level = level
        planned = self.sampler.planned.pop(step, {}) if self.sampler else {}
        totals = self.totals.setdefault(level, {"steps": 0})
        totals["steps"] += 1
        for key, value in planned.items():
            totals[key] = totals.get(key, 0) + value if key != "waiting" else value
        fields = {"step": global_step, "level": level, "input_len": input_len,
                  "truncation": self.curriculum.truncation_of(level)}
        if self._rope_applied is not None:  # the RoPE this step ran with
            fields["rope_theta"] = self._rope_applied["rope_theta"]
        if self.rank == 0:
            fields.update({f"global_{key}": value for key, value in planned.items()})
        device = self.log.device
        if device is not None:
            grad = norm_scalar(grad_norm, device)
            values = self.log.end_step(grad, **fields)
            if self.gate is not None:
                # plain indexing: a list index would copy it to the device
                self._gate_pending.append(torch.stack([values[GRAD_NORM], values[LOSS]]))
                if global_step % self.sense_grad.check_every == 0:
                    self.check(global_step)
        if self.rescoring:
            self._rescore_if_due(global_step)
        self._apply_rope(global_step)
        if self.log.pending >= FLUSH_EVERY:
            self._since_log += self.log.flush()

    # -- per-level RoPE (host work, only when a level changes it) -----------------------------
    def _apply_rope(self, step: int) -> None:
        """Give the model the RoPE of the level 0-based `step` trains at, before its first
        forward: every rank at the same step (the timeline is the same on every rank)."""
        if self._rope is None:
            return
        level = self.timeline.level_at(step)
        if level == self._rope_level:  # the per-step cost: one timeline look-up
            return
        self._rope_level = level
        model, base = self._rope
        keys = self.curriculum.rope_of(level)
        params = merged(base, *keys) if keys else base
        if params == self._rope_applied:
            return
        if self._rope_applied is None and keys and self.rank == 0:
            LOG.info("curriculum: level %d's RoPE %s replaces the model's own %s (the level's "
                     "keys win over the model config's)", level, params, base)
        apply_rope(model, params)
        self._rope_applied = params
        if self.rank == 0:
            LOG.info("curriculum: RoPE from step %d (level %d): %s", step + 1, level, params)

    # -- rescore (host work, only at a level switch) ----------------------------------------------
    @property
    def rescoring(self) -> bool:
        return self.curriculum.difficulty is not None and self.curriculum.difficulty.rescore

    def _rescore_if_due(self, global_step: int) -> None:
        """Re-score with the model as it is now when the next step the loader may plan (the
        switch delay ahead; a sense_grad decision lands exactly there) opens a level that
        admits by score. Every rank reaches the same step end, so the sharded pass agrees."""
        if self._scoring is None:  # no loader of this run's (a projection)
            return
        step = global_step + self.delay - 1
        level = self.timeline.level_at(step)
        if (level == self.timeline.level_at(step - 1) or self.curriculum.admit_of(level) >= 1
                or step <= self._score_from[-1]):
            return
        dataset, model, batch_size = self._scoring
        before = admitted(self.scores, self.curriculum.admit_of(level))
        start = time.perf_counter()
        scores = self._compute_scores(dataset, self.rows, None, model, batch_size)
        scores = np.where(self.rows.first_label < self.rows.lengths, scores, np.inf)
        self._score_from.append(step)
        self._score_sets.append(scores)
        fed = int(self.cuts(level).fed.sum())
        if fed < self.batches_per_step:
            self._too_few(level, fed)
        self.preflight_new_shapes()
        changed = int((admitted(scores, self.curriculum.admit_of(level)) != before).sum()) // 2
        fields = {"rescore_level": level, "rescore_from_step": step + 1, "rescore_changed": changed,
                  "rescore_seconds": round(time.perf_counter() - start, 3)}
        self.log.annotate(global_step, **fields)
        if self.rank == 0:
            LOG.info("curriculum: difficulty re-scored at step %d for level %d (from step %d): "
                     "%d examples admitted instead of others, in %.1f s", global_step, level,
                     step + 1, changed, fields["rescore_seconds"])

    # -- decisions (host reads, once per check) ---------------------------------------------------
    def sync_gate(self, global_step: int) -> None:
        """Read the pending per-step statistics, averaged over ranks, into the gate."""
        if not self._gate_pending:
            return
        values = self.reduce_mean(torch.stack(self._gate_pending))
        first = global_step - len(self._gate_pending)
        for k, (grad, loss) in enumerate(values.cpu().tolist()):
            self.gate.observe(first + k, grad, loss)
        self._gate_pending = []

    def check(self, global_step: int) -> None:
        self.sync_gate(global_step)
        decision = self.gate.decide(global_step)
        fields = {"decision": decision.action, "reason": decision.reason, **decision.stats}
        self.log.annotate(global_step, **fields)
        self._decision_fields = fields
        if self.rank == 0 and decision.action in ("advance", "backoff"):
            LOG.info("curriculum: step %d: %s: %s", global_step, decision.action, decision.reason)

    def metrics(self) -> dict[str, Any]:
        """Values for the trainer's own log line (and so W&B/TensorBoard): this rank's measured
        batches since the last line, and the planned global counts summed over those steps."""
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
        if "rope_theta" in last:
            out["curriculum/rope_theta"] = last["rope_theta"]
        for key in STEP_COUNTS:
            if f"global_{key}" in last:
                out[f"curriculum/global_{key}"] = sum(r.get(f"global_{key}", 0) for r in records)
        for key in ("grad_cv", "spikes", "loss_slope"):
            if key in self._decision_fields:
                out[f"curriculum/{key}"] = self._decision_fields[key]
        return out

    # -- summary and checkpoints -----------------------------------------------------------------
    def summary(self) -> dict:
        """Per level, the steps trained and what the plan fed in them, on all ranks together."""
        levels = []
        for k, input_len in enumerate(self.timeline.input_lens):
            t = self.totals.get(k, {})
            share = self.curriculum.admit_of(k)
            levels.append({"level": k, "input_len": input_len,
                           "truncation": self.curriculum.truncation_of(k), "steps": t.get("steps", 0),
                           "admit": share, "admitted": (int(admitted(self.scores, share).sum())
                                                        if self.scores is not None else None),
                           **{f"global_{key}": t.get(key, 0) for key in (*STEP_COUNTS, "waiting")}})
        return {"curriculum": self.curriculum.model_dump(mode="json"), "levels": levels,
                **({"rope": self._rope_applied} if self._rope_applied is not None else {}),
                # rows, not skip events (a row is skipped again in every pass)
                "never_fits": (int(self.cuts(self.timeline.last_level).too_long.sum())
                               if self.rows is not None else 0)}

    def summary_text(self) -> str:
        keys = ("steps", *(f"global_{k}" for k in (*STEP_COUNTS, "waiting")))
        lines = ["curriculum summary (global_*: planned for all ranks together)",
                 "  level input_len truncation " + " ".join(keys)]
        for row in self.summary()["levels"]:
            lines.append(f"  {row['level']} {row['input_len']} {row['truncation']} "
                         + " ".join(str(row[key]) for key in keys))
        return "\n".join(lines)

    def start(self) -> None:
        """Before the first step (after `load_state_dict` on a resume): open the run log,
        dropping lines past the step training continues from. The model gets the RoPE of
        the level the next step trains at."""
        self.log.start(resumed_at=self.global_step)
        self._apply_rope(self.global_step)

    def finish(self) -> None:
        self.log.flush()
        self.log.write_summary(self.summary())
        if self.rank == 0:
            LOG.info(self.summary_text())

    def state_dict(self, global_step: int) -> dict:
        """What a checkpoint at `global_step` needs to continue the same run.

        Pending gate statistics are read first (a collective: call it on every rank)."""
        if self.gate is not None:
            self.sync_gate(global_step)
        # the log lines up to the checkpoint are written with it: a crash after it loses none
        self._since_log += self.log.flush()
        return {"curriculum": self.curriculum.model_dump(mode="json"),
                "timeline": self.timeline.to_dict(), "scores": self._scores_state(),
                "gate": self.gate.state_dict() if self.gate else None,
                "totals": {str(k): v for k, v in self.totals.items()}}

    def load_state_dict(self, saved: dict | None, global_step: int) -> None:
        """Continue where a checkpoint at `global_step` left off, or refuse a changed block.

        Call it after the train loader is built (the loader resolves `levels: auto`)."""
        self.global_step = global_step
        if saved is None:
            LOG.warning("curriculum: no curriculum state in the checkpoint; the levels start "
                        "over at step %d", global_step + 1)
            self._restart_at(global_step)
            return
        now = self.curriculum.model_dump(mode="json")
        changed = [key for key in DATA_KEYS if _fed(saved["curriculum"], key) != _fed(now, key)]
        if changed:
            if not self.curriculum.restart_on_resume:
                raise ValueError(
                    f"curriculum: the checkpoint was trained with other {', '.join(changed)}; "
                    "restore them, or set curriculum.restart_on_resume: true to start the levels "
                    f"over from step {global_step + 1}")
            LOG.warning("curriculum: changed %s; the levels start over at step %d",
                        ", ".join(changed), global_step + 1)
            self._restart_at(global_step)
            return
        self.timeline.load(saved["timeline"])
        self.totals = {int(k): v for k, v in saved.get("totals", {}).items()}
        if self.gate is not None and saved["gate"] is not None:
            self.gate.load(saved["gate"])
        if saved.get("scores") is not None:
            self._score_from = list(saved["scores"]["from_steps"])
            self._score_sets = [np.array([np.inf if v is None else v for v in values])
                                for values in saved["scores"]["sets"]]
            self._cuts = {}

    def _scores_state(self) -> dict | None:
        """Model scores as they were taken (the checkpoint's weights would score otherwise) and
        every re-score with the step it applies from; CPU scores are recomputed identically."""
        spec = self.curriculum.difficulty
        if spec is None or spec.score not in MODEL_SCORES:
            return None
        return {"from_steps": self._score_from,
                "sets": [[v if math.isfinite(v) else None for v in s.tolist()]
                         for s in self._score_sets]}

    def _restart_at(self, global_step: int) -> None:
        # steps already trained replay (to be skipped) at the last level; level 0 starts now
        self.timeline.segments = [Segment(0, self.timeline.last_level), Segment(global_step, 0)]

"""The run's difficulty scores: taken once before step 1 (from the cache where every rank has
them), re-taken at a level switch under `rescore: true`, and checkpointed as they were taken.

Each score set applies from a 0-based step on; a step admits by the set in effect then, so a
resume (which restores the sets with their steps) admits what the uninterrupted run admitted.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from ..core.config import MODEL_SCORES, Curriculum, Difficulty
from ..core.cut import Rows
from ..core.difficulty import admitted
from ..core.errors import CurriculumError
from ..core.schedule import Timeline
from ..data import score_cache
from ..data.model_scores import model_scores
from ..data.rows import content_digest, difficulty_scores

logger = logging.getLogger(__name__)


class Scores:
    """Per example, the difficulty scores in effect from each 0-based step on.

    `reduce_mean`: the mean over ranks (a model score's sharded pass sums through it, and the
    cache is used only when every rank finds the file)."""

    def __init__(self, spec: Difficulty | None, *, rank: int, world_size: int,
                 reduce_mean: Callable[[torch.Tensor], torch.Tensor],
                 pad_token_id: int | None, cache_dir=None):
        self.spec = spec
        self.rank, self.world_size = rank, world_size
        self.reduce_mean = reduce_mean
        self.pad_token_id = pad_token_id
        self.cache_dir = cache_dir  # folder of cached scores (None: not cached)
        self.from_steps: list[int] = []
        self.sets: list[np.ndarray] = []
        self.source: tuple | None = None  # for a re-score: (dataset, model, batch size)

    @property
    def latest(self) -> np.ndarray | None:
        return self.sets[-1] if self.sets else None

    def version_at(self, step: int) -> int:
        """The index of the set in effect at 0-based `step` (-1: no scores)."""
        return bisect.bisect_right(self.from_steps, step) - 1

    def begin(self, scores: np.ndarray | None, rows: Rows) -> None:
        """The set in effect from step 0 (a row that cannot train takes no admission slot)."""
        self.from_steps, self.sets = ([0], [self._trainable(scores, rows)]) if scores is not None \
            else ([], [])

    def add(self, step: int, scores: np.ndarray, rows: Rows) -> None:
        """A re-score, in effect from 0-based `step` on."""
        self.from_steps.append(step)
        self.sets.append(self._trainable(scores, rows))

    @staticmethod
    def _trainable(scores: np.ndarray, rows: Rows) -> np.ndarray:
        return np.where(rows.trainable, scores, np.inf)

    # -- taking scores ------------------------------------------------------------------------
    def initial(self, dataset, rows: Rows, mask, model, batch_size: int, tokenizer) -> np.ndarray:
        """The scores before step 1, from the cache when every rank finds them there."""
        spec = self.spec
        if spec.score in MODEL_SCORES and model is None:
            raise CurriculumError(f"curriculum.difficulty: {spec.score} scores examples with the "
                                  "model being trained; pass model= to train_loader")
        compute = lambda: self.compute(dataset, rows, mask, model, batch_size)  # noqa: E731
        if self.cache_dir is None or not spec.cache:
            return compute()
        columns = ("input_ids", "labels", "completion_mask", *([spec.column] if spec.column else []))
        parts = {"dataset": {"rows": len(rows), "content": content_digest(dataset, columns)},
                 "tokenizer": score_cache.tokenizer_part(tokenizer),
                 "score": spec.model_dump(exclude={"rescore", "cache"}),
                 "boundaries": score_cache.key({"mask": np.flatnonzero(mask).tolist()})
                 if spec.score == "segments" else None,
                 "model": score_cache.model_part(model) if spec.score in MODEL_SCORES else None}
        scores, path, seconds = score_cache.cached(
            self.cache_dir, parts, len(rows), compute, write=self.rank == 0,
            all_ranks=lambda hit: self._all_ranks(hit, model))
        if self.rank == 0:
            if seconds is None:
                logger.info("curriculum: difficulty scores: loaded from cache %s", path)
            else:
                logger.info("curriculum: difficulty scores: computed in %.1f s, cached at %s",
                            seconds, path)
        return scores

    def compute(self, dataset, rows: Rows, mask, model, batch_size: int) -> np.ndarray:
        """Scores from the token ids, or from a pass of `model` sharded over the ranks."""
        spec = self.spec
        if spec.score not in MODEL_SCORES:
            return difficulty_scores(dataset, spec, mask)
        world = self.world_size
        return model_scores(spec.score, model, dataset, rows, rank=self.rank, world_size=world,
                            reduce_sum=lambda t: self.reduce_mean(t) * world,
                            batch_size=max(8, batch_size), sample=spec.sample, seed=spec.seed,
                            pad_token_id=self.pad_token_id or 0)

    def _all_ranks(self, flag: bool, model) -> bool:
        """Whether `flag` holds on every rank (one collective, before step 1)."""
        device = (next(model.parameters()).device if model is not None
                  else torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        return bool(self.reduce_mean(torch.full((), float(flag), device=device)).item() == 1)

    def rescore_if_due(self, step: int, timeline: Timeline, curriculum: Curriculum,
                       rows: Rows) -> dict | None:
        """Re-score with the model as it is now if 0-based `step` opens a level that admits by
        score (and no re-score took effect there yet); the log fields, or None."""
        if self.source is None:  # no loader of this run's (a projection)
            return None
        level = timeline.level_at(step)
        share = curriculum.admit_of(level)
        if level == timeline.level_at(step - 1) or share >= 1 or step <= self.from_steps[-1]:
            return None
        dataset, model, batch_size = self.source
        before = admitted(self.latest, share)
        start = time.perf_counter()
        self.add(step, self.compute(dataset, rows, None, model, batch_size), rows)
        return {"rescore_level": level, "rescore_from_step": step + 1,
                "rescore_changed": int((admitted(self.latest, share) != before).sum()) // 2,
                "rescore_seconds": round(time.perf_counter() - start, 3)}

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict | None:
        """Model scores as they were taken (the checkpoint's weights would score otherwise) and
        every re-score with the step it applies from; CPU scores are recomputed identically."""
        if self.spec is None or self.spec.score not in MODEL_SCORES:
            return None
        return {"from_steps": self.from_steps,
                "sets": [[v if math.isfinite(v) else None for v in s.tolist()] for s in self.sets]}

    def load_state_dict(self, state: dict | None) -> None:
        if state is None:
            return
        self.from_steps = list(state["from_steps"])
        self.sets = [np.array([np.inf if v is None else v for v in values])
                     for values in state["sets"]]

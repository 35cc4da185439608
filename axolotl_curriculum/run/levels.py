"""What each level feeds of the run's rows, and the check that every level can fill a step.

A level's cut (`core.cut.level_cuts`) is admitted by the difficulty scores in effect at a step
(a re-score adds a version); each (level, version) is cut once and kept.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..core.config import Curriculum
from ..core.cut import Cuts, Rows, level_cuts
from ..core.difficulty import admitted
from ..core.errors import CurriculumError
from ..core.plan import Mix
from ..core.schedule import Timeline
from .scoring import Scores

logger = logging.getLogger(__name__)


def resolve_auto(cur: Curriculum, rows: Rows, sequence_len: int | None,
                 total_steps: int | None, rank: int) -> Curriculum:
    """`levels: auto`'s ladder, from the rows that train, `sequence_len` (default: the longest
    row) and the run's steps (docs/auto.md); rank 0 logs it as a block to paste."""
    from ..core.auto import as_yaml, resolve

    resolved = resolve(cur, rows.lengths[rows.trainable],
                       sequence_len or int(rows.lengths.max(initial=2)), total_steps or 1)
    if rank == 0:
        logger.info("curriculum: levels: auto chose\n%s", as_yaml(resolved))
    return resolved


class LevelCuts:
    """Per level and score version, what is fed of each row; `at(step)` for a 0-based step."""

    def __init__(self, curriculum: Curriculum, timeline: Timeline, rows: Rows, scores: Scores,
                 *, truncate_excess: bool):
        self.curriculum, self.timeline, self.rows, self.scores = curriculum, timeline, rows, scores
        self.truncate_excess = truncate_excess
        self._cuts: dict[tuple[int, int], Cuts] = {}

    def __call__(self, level: int, version: int | None = None) -> Cuts:
        """What `level` feeds of each row, admitted by the scores of `version` (default: the
        latest)."""
        version = len(self.scores.sets) - 1 if version is None else version
        if (level, version) not in self._cuts:
            self._cuts[level, version] = self._cut(level, version)
        return self._cuts[level, version]

    def fed(self, level: int, version: int | None = None) -> Cuts | Mix:
        """What the plan feeds at `level`: its cuts, mixed with the first level's where the
        level keeps short data (`short_share`)."""
        share = self.curriculum.short_share_of(level)
        cuts = self(level, version)
        return Mix(cuts, self(0, version), share) if share > 0 else cuts

    def at(self, step: int) -> Cuts | Mix:
        """What 0-based `step` feeds: its level, admitted by the scores in effect then."""
        return self.fed(self.timeline.level_at(step), self.scores.version_at(step))

    def forget(self) -> None:
        """Drop the kept cuts (the score sets were replaced: a resume)."""
        self._cuts = {}

    def _cut(self, level: int, version: int) -> Cuts:
        cur = self.curriculum
        cuts = level_cuts(
            self.rows, cur.input_lens[level], cur.truncation_of(level),
            window=cur.segment_window, prompt_cut=cur.prompt_cut,
            keep_prompt_head=cur.keep_prompt_head, last_level=level == self.timeline.last_level,
            truncate_excess=self.truncate_excess)
        if version >= 0 and cur.admit_of(level) < 1:
            # not admitted yet: waits for the level that admits it, as filter mode's rows do
            ok = admitted(self.scores.sets[version], cur.admit_of(level))
            if cuts.row_of is not None:  # a split level: its units, by their rows' scores
                ok = ok[cuts.row_of]
            cuts = replace(cuts, fed=cuts.fed & ok, waits=cuts.waits | (~ok & cuts.fed))
        return cuts

    # -- the levels' checks ---------------------------------------------------------------------
    def check_all(self, batches_per_step: int, rank: int) -> None:
        """Every level must feed one example per micro-batch of a step at least, each once. A
        filter level below that is skipped (warned); any other level is an error naming it."""
        for k, input_len in enumerate(self.curriculum.input_lens):
            fed = int(self(k).fed.sum())
            if fed >= batches_per_step:
                continue
            if self.curriculum.truncation_of(k) == "filter" and k < self.timeline.last_level:
                if rank == 0:
                    logger.warning("curriculum: level %d (input_len %d, filter) admits %d "
                                   "examples, fewer than the %d micro-batches of a step; "
                                   "skipping it", k, input_len, fed, batches_per_step)
                self.timeline.max_steps[k] = 0
                continue
            self.too_few(k, fed, batches_per_step)

    def check(self, level: int, batches_per_step: int) -> None:
        """The check of one level (after a re-score changed what it admits)."""
        fed = int(self(level).fed.sum())
        if fed < batches_per_step:
            self.too_few(level, fed, batches_per_step)

    def too_few(self, k: int, fed: int, batches_per_step: int) -> None:
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
        raise CurriculumError(
            f"curriculum.levels[{k}].input_len: {fed} examples keep a trainable token when cut "
            f"to {cur.input_lens[k]}, fewer than the {batches_per_step} "
            "micro-batches of one optimizer step (world size x gradient_accumulation_steps); "
            f"{', '.join(fixes)} or add data")

"""What the run fed, per level: the totals behind the summary and the trainer's log line.

The plan's step counts are for all ranks together (rank 0 writes them as `global_<key>`); the
measured fields of a log line (`tokens`, `max_example_len`) are this rank's batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.config import Curriculum
from ..core.cut import Cuts
from ..core.difficulty import admitted
from ..core.names import METRIC, PROBE, STEP_COUNTS, WAITING
from ..core.schedule import Timeline

SUMMED = (*STEP_COUNTS, WAITING)  # WAITING is a gauge: its value at the level's last step


class Ledger:
    """Per level, the steps trained and the plan's counts in them."""

    def __init__(self):
        self.totals: dict[int, dict] = {}

    def add_step(self, level: int, planned: dict[str, int]) -> None:
        totals = self.totals.setdefault(level, {"steps": 0})
        totals["steps"] += 1
        for key, value in planned.items():
            totals[key] = totals.get(key, 0) + value if key != WAITING else value

    def summary(self, cur: Curriculum, timeline: Timeline, scores: np.ndarray | None,
                cuts: Callable[[int], Cuts] | None, rope: dict | None) -> dict:
        """`curriculum_summary.json`: a row per level (steps, the admission share and count,
        the global counts), the RoPE in effect at the end, and the rows no level fits."""
        levels = []
        for k, input_len in enumerate(timeline.input_lens):
            t = self.totals.get(k, {})
            levels.append({"level": k, "input_len": input_len, "truncation": cur.truncation_of(k),
                           "steps": t.get("steps", 0), "admit": cur.admit_of(k),
                           "admitted": (int(admitted(scores, cur.admit_of(k)).sum())
                                        if scores is not None else None),
                           **{f"global_{key}": t.get(key, 0) for key in SUMMED}})
        return {"curriculum": cur.model_dump(mode="json"), "levels": levels,
                **({"rope": rope} if rope is not None else {}),
                # rows, not skip events (a row is skipped again in every pass)
                "never_fits": (int(cuts(timeline.last_level).too_long.sum())
                               if cuts is not None else 0)}

    @staticmethod
    def text(levels: list[dict]) -> str:
        """The end-of-run console table."""
        keys = ("level", "input_len", "truncation", "steps", *(f"global_{k}" for k in SUMMED))
        heads = [k.removeprefix("global_") for k in keys]
        cells = [[str(row[k]) for k in keys] for row in levels]
        widths = [max(len(c) for c in column) for column in zip(heads, *cells)]
        lines = ["curriculum summary (counts planned for all ranks together; terms: "
                 "docs/glossary.md)"]
        lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [heads] + cells]
        return "\n".join(lines)

    @staticmethod
    def metrics(records: list[dict]) -> dict[str, Any]:
        """Values for the trainer's own log line (and so W&B/TensorBoard): this rank's measured
        batches over `records` (the steps since the last line), the planned global counts
        summed over them."""
        if not records:
            return {}
        last = records[-1]
        out = {
            METRIC + "level": last["level"],
            METRIC + "input_len": last["input_len"],
            METRIC + "max_example_len": max(r["max_example_len"] for r in records),
            METRIC + "tokens_per_step": sum(r["tokens"] for r in records) / len(records),
        }
        if "rope_theta" in last:
            out[METRIC + "rope_theta"] = last["rope_theta"]
        for key in STEP_COUNTS:
            if f"global_{key}" in last:
                out[f"{METRIC}global_{key}"] = sum(r.get(f"global_{key}", 0) for r in records)
        probed = [r for r in records if any(key.startswith(PROBE) for key in r)]
        if probed:  # the latest probes (curriculum/probe/short, .../passkey@2048, ...)
            out.update({METRIC + key: value for key, value in probed[-1].items()
                        if key.startswith(PROBE)})
        if out.get(METRIC + "global_short_tokens"):  # the share of tokens kept short
            out[METRIC + "short_share"] = (out[METRIC + "global_short_tokens"]
                                           / max(1, out[METRIC + "global_tokens"]))
        return out

    def state_dict(self) -> dict:
        return {str(k): v for k, v in self.totals.items()}

    def load_state_dict(self, state: dict) -> None:
        self.totals = {int(k): v for k, v in state.items()}

"""The run log: `curriculum_log.jsonl` (a line per optimizer step and rank), the evals
(`curriculum_evals.jsonl`, rank 0: what `report` plots, whatever the checkpoint settings) and
the summary.

Per-step measurements stay device tensors until `flush()`, the only place that reads them (one
transfer for all pending steps), so the training hot path never waits on the host. Every line
is strict JSON (null, never NaN) and every word has one meaning: `tokens`, `max_example_len`,
`micro_batches` and `loss` are what this rank was fed and computed; counts planned for the whole
step (all ranks) are `global_*` fields of rank 0's line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..core.names import EVAL_FILE, LOG_FILE, SUMMARY_FILE, read_jsonl

# A step's device tensor, in this order: this rank's measurements (batch_stats.measure_batch),
# its loss summed over micro-batches, and the trainer's gradient norm.
MEASURED = ("max_example_len", "tokens", "len_sq", "positions")
STEP_VALUES = (*MEASURED, "loss", "grad_norm")
LOSS, GRAD_NORM = STEP_VALUES.index("loss"), STEP_VALUES.index("grad_norm")


def strict(value):
    """JSON without NaN/Infinity: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def dumps(value, indent: int | None = None) -> str:
    """Strict JSON (null, never NaN or Infinity): what every file the run writes holds."""
    return json.dumps(strict(value), allow_nan=False, indent=indent)


class RunLog:
    def __init__(self, output_dir: str | Path, rank: int):
        self.path = Path(output_dir) / LOG_FILE
        self.rank = rank
        self._micro: list[torch.Tensor] = []
        self._pending: list[tuple[dict, torch.Tensor]] = []

    @property
    def evals_path(self) -> Path:
        return self.path.parent / EVAL_FILE

    def start(self, resumed_at: int) -> None:
        """Rank 0 drops lines a resumed run will write again (a fresh run starts empty)."""
        if self.rank != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for path in (self.path, self.evals_path):
            kept = []
            if resumed_at > 0 and path.exists():
                kept = [r for r in read_jsonl(path) if r.get("step", 0) <= resumed_at]
            path.write_text("".join(dumps(r) + "\n" for r in kept))

    def add_eval(self, step: int, metrics: dict) -> None:
        """Rank 0 appends an evaluation's numeric metrics (`eval_loss`, ...) at `step`: the
        trainer's own numbers, already reduced over ranks by it."""
        if self.rank != 0:
            return
        kept = {k: float(v) for k, v in metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with self.evals_path.open("a") as f:
            f.write(dumps({"step": step, **kept}) + "\n")

    def add_micro_batch(self, measured: torch.Tensor) -> None:
        """One micro-batch's device tensor: `MEASURED`, then its loss."""
        self._micro.append(measured)

    @property
    def device(self) -> torch.device | None:
        return self._micro[0].device if self._micro else None

    def end_step(self, grad_norm: torch.Tensor, **fields) -> torch.Tensor:
        """Close a step: reduce its micro-batches on the device, keep the host fields.

        Returns the step's device tensor, `STEP_VALUES` in order: the longest example is the
        micro-batches' max, every other measure their sum."""
        stacked = torch.stack(self._micro)
        fields["micro_batches"] = len(self._micro)
        self._micro = []
        values = torch.cat([stacked[:, :1].amax(0), stacked[:, 1:].sum(0), grad_norm.reshape(1)])
        self._pending.append((fields, values))
        return values

    def annotate(self, step: int, **fields) -> None:
        """Add host-side fields (a decision) to a pending step's record."""
        for record, _ in reversed(self._pending):
            if record["step"] == step:
                record.update(fields)
                return

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> list[dict]:
        if not self._pending:
            return []
        values = torch.stack([t for _, t in self._pending]).cpu().tolist()
        records = [
            {"step": fields["step"], "rank": self.rank, **fields,
             **{key: int(v) for key, v in zip(MEASURED, row)},
             "loss": row[LOSS], "grad_norm": row[GRAD_NORM]}
            for (fields, _), row in zip(self._pending, values)
        ]
        self._pending = []
        with self.path.open("a") as f:
            f.write("".join(dumps(r) + "\n" for r in records))
        return records

    def write_summary(self, summary: dict) -> None:
        if self.rank == 0:
            (self.path.parent / SUMMARY_FILE).write_text(dumps(summary, indent=1))

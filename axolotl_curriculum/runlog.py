"""The per-step run log: measured on the device every step, read to the host only when flushed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


class RunLog:
    """Collects one record per optimizer step and appends them to a JSONL file shared by all ranks.

    Micro-batch measurements stay device tensors until `flush()`, the only place that reads them
    (one transfer for all pending steps), so the training hot path never waits on the host.
    """

    def __init__(self, path: str | os.PathLike, rank: int):
        self.path = Path(path)
        self.rank = rank
        self.host_reads = 0
        self._micro: list[torch.Tensor] = []
        self._pending: list[tuple[dict, torch.Tensor]] = []

    def start(self, resumed_at: int) -> None:
        """Rank 0 drops records a resumed run will write again (a fresh run starts empty)."""
        if self.rank != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resumed_at > 0 and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resumed_at]
        self.path.write_text("".join(line + "\n" for line in kept))

    def add_micro_batch(self, measured: torch.Tensor) -> None:
        self._micro.append(measured)

    def end_step(self, extra: torch.Tensor, **fields) -> None:
        """Close a step: its micro-batches' [longest, tokens] and `extra` = [loss, grad_norm]."""
        if not self._micro:
            return
        stacked = torch.stack(self._micro).float()
        self._micro = []
        self._pending.append((fields, torch.cat([torch.stack([stacked[:, 0].max(),
                                                              stacked[:, 1].sum()]), extra])))

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
        self.host_reads += 1
        records = [
            {**fields, "rank": self.rank, "max_example_len": int(longest), "tokens": int(tokens),
             "loss": loss, "grad_norm": grad_norm}
            for (fields, _), (longest, tokens, loss, grad_norm) in zip(self._pending, values)
        ]
        self._pending = []
        with self.path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
        return records

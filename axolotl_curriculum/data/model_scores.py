"""Model-based difficulty: the loss of the model being trained, and instruction-following
difficulty (IFD), per example, before step 1.

An opt-in pass of the model over the training set (or a seeded sample of it), sharded across
ranks by row and summed back, so every rank holds the same scores. Only scored (answer) tokens
count. IFD (Cherry LLM) = answer loss given the prompt / answer loss alone: high when the
prompt helps little.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.cut import Rows

logger = logging.getLogger(__name__)


def _losses(model, batch: dict) -> torch.Tensor:
    """Mean loss over each row's scored tokens (nan for a row with none)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
    labels = batch["labels"][:, 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels.flatten().clamp(min=0),
        reduction="none").view_as(labels)
    scored = labels != -100
    return (per_token * scored).sum(1) / scored.sum(1)


def _pad(rows: list[dict], pad_id: int, device) -> dict:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.as_tensor(r["input_ids"])
        labels[i, :n] = torch.as_tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def _labelled(row: dict, first_label: int) -> dict:
    """The row with the labels the loss scores, as `rows.row_stats` reads them: `labels`, else
    TRL's `completion_mask` (1 = scored), else every token."""
    ids = list(row["input_ids"])
    labels = row.get("labels")
    if labels is None and row.get("completion_mask") is not None:
        labels = [t if m == 1 else -100 for t, m in zip(ids, row["completion_mask"])]
    elif labels is None:
        labels = ids
    return {"input_ids": ids, "labels": list(labels), "first": first_label}


def model_scores(score: str, model, dataset, rows: Rows, *, rank: int = 0, world_size: int = 1,
                 reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 batch_size: int = 8, sample: float | None = None, seed: int = 0,
                 pad_token_id: int = 0) -> np.ndarray:
    """Per example, `loss` or `ifd` under `model` (examples outside the sample: the median).

    Rows are tokenized examples (`input_ids`, `labels`); an empty row has nothing to score."""
    n = len(rows)
    chosen = np.arange(n)
    if sample is not None and sample < 1:
        chosen = np.sort(np.random.default_rng(seed).permutation(n)[: max(1, round(sample * n))])
    mine = chosen[rank::world_size]
    mine = mine[rows.lengths[mine] >= 2]  # a row of 0-1 tokens has nothing to score (inf below)
    device = next(model.parameters()).device
    values = torch.zeros(n, dtype=torch.float64, device=device)
    training = model.training
    model.eval()
    start = time.perf_counter()
    if rank == 0:
        logger.info("curriculum: difficulty %s: scoring %d examples with the model (one "
                    "forward each, before step 1)", score, len(chosen))
    batches = range(0, len(mine), batch_size)
    with torch.no_grad():
        for i in tqdm(batches, desc=f"curriculum: scoring ({score})", unit="batch",
                      disable=rank != 0 or len(batches) < 8, leave=False):
            idx = mine[i:i + batch_size].tolist()
            batch = [_labelled(dataset[j], int(rows.first_label[j])) for j in idx]
            loss = _losses(model, _pad(batch, pad_token_id, device))
            if score == "ifd":  # the answer alone, the prompt's last token its only context
                cut = [min(max(b["first"] - 1, 0), len(b["input_ids"]) - 1) for b in batch]
                alone = [{"input_ids": b["input_ids"][c:], "labels": b["labels"][c:]}
                         for b, c in zip(batch, cut)]
                loss = loss / _losses(model, _pad(alone, pad_token_id, device))
            values[torch.as_tensor(idx, device=device)] = loss.double()
    model.train(training)
    if reduce_sum is not None and world_size > 1:
        values = reduce_sum(values)
    out = values.cpu().numpy()
    if rank == 0:
        logger.info("curriculum: difficulty %s scored %d examples in %.1f s (%.0f examples/s)",
                 score, len(chosen), time.perf_counter() - start,
                 len(mine) / max(time.perf_counter() - start, 1e-9))
    unscored = np.ones(n, dtype=bool)
    unscored[chosen] = False
    out[~np.isfinite(out) | (rows.lengths < 2)] = np.inf  # nothing scored: the hardest (such
    # rows are skipped anyway)
    finite = out[~unscored & np.isfinite(out)]
    out[unscored] = float(np.median(finite)) if len(finite) else 0.0
    return out

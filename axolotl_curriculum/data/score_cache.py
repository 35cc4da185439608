"""Difficulty scores cached on disk, so a restart or a second run does not recompute them.

One `.npy` per key in a folder next to Axolotl's prepared dataset. The key is a hash of what
decides the scores: the dataset (a digest of its token ids and labels after the index mapping,
`rows.content_digest`), the tokenizer, the
score's settings and, for `loss`/`ifd`, the model (its name, config, adapter and a checksum of
its weights, so a model trained in this process never meets the untrained model's scores).
Only rank 0 writes, atomically; every rank reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def key(parts: dict) -> str:
    """The cache key of these parts (a plain, JSON-able dict)."""
    return _digest(json.dumps(parts, sort_keys=True, default=str).encode())


def tokenizer_part(tokenizer) -> dict | None:
    if tokenizer is None:
        return None
    vocab = sorted(tokenizer.get_vocab().items())
    return {"name": getattr(tokenizer, "name_or_path", None), "size": len(tokenizer),
            "vocab": _digest(json.dumps(vocab).encode())}


def model_part(model) -> dict:
    """Name, config, adapter config and a checksum of every weight (one host copy)."""
    import torch

    config = getattr(model, "config", None)
    peft = getattr(model, "peft_config", None)
    params = list(model.parameters())
    sums = torch.stack([torch.stack([p.detach().sum(dtype=torch.float64),
                                     p.detach().abs().sum(dtype=torch.float64)]) for p in params])
    return {"name": getattr(config, "name_or_path", None),
            "config": _digest(config.to_json_string().encode()) if config is not None else None,
            "adapter": {k: str(v) for k, v in peft.items()} if peft else None,
            "dtype": str(params[0].dtype) if params else None,
            "weights": _digest(sums.cpu().numpy().tobytes())}


def load(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


def store(path: Path, scores: np.ndarray, parts: dict) -> None:
    """Write `scores` (and, beside them, what the key was made of) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, scores, allow_pickle=False)
    os.replace(tmp, path)
    meta = path.with_suffix(".json")
    tmp = meta.with_name(f"{meta.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(parts, sort_keys=True, indent=1, default=str))
    os.replace(tmp, meta)


def cached(folder: Path, parts: dict, n: int, compute: Callable[[], np.ndarray], *,
           write: bool, all_ranks: Callable[[bool], bool] = lambda hit: hit
           ) -> tuple[np.ndarray, Path, float | None]:
    """The scores for `parts`: loaded if every rank finds them (`all_ranks(hit)` agrees, so a
    sharded model pass runs on all ranks or none), else computed and, if `write`, stored.

    Returns (scores, path, seconds spent computing or None when loaded)."""
    path = Path(folder) / f"{key(parts)}.npy"
    scores = load(path)
    hit = scores is not None and scores.shape == (n,)
    if all_ranks(hit):
        return scores, path, None
    start = time.perf_counter()
    scores = compute()
    seconds = time.perf_counter() - start
    if write:
        store(path, scores, parts)
    return scores, path, seconds

"""What an Axolotl config says about the run the curriculum builds, read in one place.

`run_settings` is the shape Axolotl's trainer gives the curriculum's loader (micro-batch,
packing, ranks, accumulation, cuts past `sequence_len`); `boundaries` is the tokenizer's segment
mask where the curriculum needs one. Both the plugin (`check_levels`, from its `load_datasets`
hook, before the model loads) and `axolotl-curriculum plan` (commands/plan.py) build their run
from these, so the check and the projection see the run training builds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..core.config import Curriculum
from ..core.errors import CurriculumError
from ..data.rows import boundary_mask, row_stats, turn_end_ids
from ..run.projection import run_for


def plain(value: Any) -> Any:
    """Axolotl's config values (its dict type, tuples) as plain dicts and lists, for pydantic."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def boundaries(cfg, curriculum: Curriculum) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Which token ids end a segment and which end a chat turn (Axolotl's `eot_tokens`, else
    eos), where the curriculum needs them (loads only the tokenizer)."""
    if not curriculum.needs_boundaries:
        return None, None
    from axolotl.loaders import load_tokenizer

    from ..core.cut import DEFAULT_BOUNDARIES

    tokenizer = load_tokenizer(cfg)
    return (boundary_mask(tokenizer, curriculum.boundaries or DEFAULT_BOUNDARIES),
            turn_end_ids(tokenizer, cfg.get("eot_tokens")))


def run_settings(cfg, world_size: int | None = None) -> dict[str, Any]:
    """`run_for`'s keywords for the loader's shape, as Axolotl's trainer sets it from `cfg`.

    Packed, a micro-batch is `micro_batch_size` real rows of `sequence_len` each where the
    attention cannot tell packed examples apart (`multipack_real_batches`), else one row of
    `micro_batch_size * sequence_len` positions. `world_size`: the ranks (default: the config's).
    """
    packed = bool(cfg.sample_packing) and not cfg.pretraining_dataset
    mbs, sequence_len = int(cfg.micro_batch_size or 1), int(cfg.sequence_len)
    real_batches = (cfg.multipack_real_batches if cfg.multipack_real_batches is not None
                    else not cfg.attn_supports_packing)
    batch_size, capacity = (mbs, sequence_len) if real_batches else (1, mbs * sequence_len)
    return {"batch_size": batch_size if packed else mbs,
            "world_size": world_size or int(cfg.world_size or 1),
            "grad_accum": int(cfg.gradient_accumulation_steps or 1), "packed": packed,
            "capacity": capacity, "bin_size": int(cfg.sample_packing_bin_size or 200),
            "truncate_excess": cfg.excess_length_strategy == "truncate",
            "sequence_len": sequence_len}


@contextmanager
def _quiet() -> Iterator[None]:
    """No log records from the curriculum's loggers (its children included) inside."""
    curriculum_logger = logging.getLogger("axolotl_curriculum")
    level, disabled = curriculum_logger.level, curriculum_logger.disabled
    curriculum_logger.setLevel(logging.CRITICAL + 1)
    curriculum_logger.disabled = True
    try:
        yield
    finally:
        curriculum_logger.setLevel(level)
        curriculum_logger.disabled = disabled


def check_levels(cfg, meta, curriculum: Curriculum | None = None) -> None:
    """The run's level checks on the loaded data, before any model loads (the plugin's
    `load_datasets` hook runs it): a level that cannot fill one optimizer step (`use_data`'s
    own check, through `run_for`), a run whose earlier levels take every step. Raises
    `ValueError` naming the level. Difficulty admission is left out (model scores need the
    model): without it every level feeds at least as many rows, so what fails here fails in
    training too, and training checks admission again."""
    curriculum = curriculum or Curriculum.model_validate(plain(cfg.curriculum))
    if curriculum.difficulty is not None:
        curriculum = curriculum.model_copy(update={"difficulty": None})
    probes = curriculum.probes
    if probes is not None and (probes.short or probes.position_loss) and not meta.eval_dataset:
        needed = "short" if probes.short else "position_loss"
        raise CurriculumError(f"curriculum.probes.{needed}: needs held-out rows: set "
                              "val_set_size (e.g. 0.05) or test_datasets")
    mask, turn_ids = boundaries(cfg, curriculum)
    total_steps = int(cfg.max_steps or meta.total_num_steps or 1)
    with _quiet():  # the run logs its own choices later, when it trains
        run = run_for(row_stats(meta.train_dataset, mask, turn_ids), curriculum,
                      total_steps=total_steps,
                      **run_settings(cfg))
    run.curriculum.check_run_length(total_steps,
                                    length_from="max_steps" if cfg.max_steps else "num_epochs")

"""The Axolotl plugin: declares `curriculum:` and hands the built trainer to `trainer.attach`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from axolotl.common.const import DEFAULT_DATASET_PREPARED_PATH
from axolotl.integrations.base import BasePlugin

from .config import Curriculum
from .score_cache import FOLDER as SCORE_CACHE
from .trainer import attach, default_resume_dir


def axolotl_pack(lengths: np.ndarray, capacity: int, max_bins: int, bin_size: int) -> list[list[int]]:
    """Axolotl's own first-fit packer, bounded to the bins one optimizer step needs."""
    from axolotl.utils.samplers.multipack import pack_group

    return pack_group(lengths.astype(np.int64), 0, capacity, max_bins, bin_size, True)


def _cpu_multi_rank() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


class CurriculumPlugin(BasePlugin):
    def get_input_args(self) -> str:
        return "axolotl_curriculum.args.CurriculumArgs"

    def register(self, cfg: dict):
        # Axolotl's console handler shows INFO from "axolotl*" loggers; ours starts out at WARNING.
        curriculum_logger = logging.getLogger("axolotl_curriculum")
        if curriculum_logger.level == logging.NOTSET:
            curriculum_logger.setLevel(logging.INFO)
        # Several ranks on a machine without a GPU: Axolotl would train each rank alone.
        # (Not with DeepSpeed, which accelerate drops when told to use the CPU.)
        if cfg.get("curriculum") and _cpu_multi_rank() and not cfg.get("deepspeed"):
            os.environ.setdefault("ACCELERATE_USE_CPU", "true")

    def load_datasets(self, cfg, preprocess: bool = False):
        # Axolotl pins device_map to LOCAL_RANK when WORLD_SIZE > 1, which fails without a GPU;
        # this is the earliest hook that runs before the model loader copies it.
        if cfg.curriculum and _cpu_multi_rank():
            cfg.device_map = {"": "cpu"}
        return None

    def post_trainer_create(self, cfg, trainer):
        if cfg.curriculum:
            def resume_dir(args, state):
                if isinstance(cfg.resume_from_checkpoint, str):
                    return Path(cfg.resume_from_checkpoint)
                return default_resume_dir(args, state)

            attach(trainer, Curriculum.model_validate(cfg.curriculum), pack=axolotl_pack,
                   resume_dir=resume_dir,
                   truncate_excess=cfg.excess_length_strategy == "truncate",
                   sequence_len=cfg.sequence_len,
                   # next to Axolotl's prepared dataset (its default folder when unset)
                   score_cache=Path(cfg.dataset_prepared_path or DEFAULT_DATASET_PREPARED_PATH)
                   / SCORE_CACHE)

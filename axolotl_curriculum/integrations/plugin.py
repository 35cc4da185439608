"""The Axolotl plugin: declares `curriculum:` and hands the built trainer to `trainer.attach`."""

from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from axolotl.common.const import DEFAULT_DATASET_PREPARED_PATH
from axolotl.integrations.base import BasePlugin

from ..core.config import Curriculum
from ..core.errors import CurriculumError, error_line, print_error
from ..core.names import SCORE_FOLDER
from .adapter_rope import choose_merge, give_adapter_rope
from .settings import check_levels, plain
from .trainer import attach, default_resume_dir

logger = logging.getLogger(__name__)
PLUGIN = "axolotl_curriculum.CurriculumPlugin"
TESTED_AXOLOTL = ((0, 19), (0, 21))  # the oldest and the newest Axolotl the tests run on


def untested_axolotl(version: str) -> str | None:
    """A warning for an Axolotl outside the tested range (the plugin uses its internals: the
    sampler, collators and config hooks, which change between releases); None inside it."""
    try:
        found = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return None  # a development build: nothing to compare
    low, high = TESTED_AXOLOTL
    if low <= found <= high:
        return None
    return (f"curriculum: axolotl {version} is outside the tested range "
            f"{'.'.join(map(str, low))}-{'.'.join(map(str, high))}; if training misbehaves, "
            f"pin axolotl=={'.'.join(map(str, high))}.* or report it")


def misspelled_key(raw: dict) -> str | None:
    """A top-level key that is `curriculum` mistyped (Axolotl drops unknown keys silently)."""
    for key in raw:
        if isinstance(key, str) and key != "curriculum" and difflib.get_close_matches(
                key.lower(), ["curriculum"], n=1, cutoff=0.8):
            return f"unknown key '{key}'; did you mean 'curriculum'?"
    return None


def lists_plugin(raw: dict) -> bool:
    """Whether the config's `plugins:` loads this plugin (a subclass of it counts)."""
    import importlib

    for name in raw.get("plugins") or []:
        if not isinstance(name, str):
            continue
        module, _, attr = name.rpartition(":") if ":" in name else name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except Exception:  # noqa: BLE001 - Axolotl reports plugins it cannot load
            continue
        if isinstance(cls, type) and issubclass(cls, CurriculumPlugin):
            return True
    return False


def _excepthook(previous):
    def hook(exc_type, exc, tb):
        line = error_line(exc)
        if line is None or os.environ.get("AXOLOTL_CURRICULUM_VERBOSE"):
            previous(exc_type, exc, tb)
        if line is not None:
            print_error(line)

    hook.curriculum = True
    return hook


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def axolotl_pack(lengths: np.ndarray, capacity: int, max_bins: int, bin_size: int) -> list[list[int]]:
    """Axolotl's own first-fit packer, bounded to the bins one optimizer step needs."""
    from axolotl.utils.samplers.multipack import pack_group

    return pack_group(lengths.astype(np.int64), 0, capacity, max_bins, bin_size, True)


def _train_cli_args():
    """`axolotl.cli.train`'s own CLI arguments (--debug...), parsed from argv as it parses
    them: Axolotl hands them to its loader but not to plugin hooks."""
    try:
        from axolotl.cli.args import TrainerCliArgs
        from transformers.hf_argparser import HfArgumentParser

        return HfArgumentParser(TrainerCliArgs).parse_args_into_dataclasses(
            return_remaining_strings=True)[0]
    except (Exception, SystemExit):  # noqa: BLE001 - not under axolotl's CLI: no debug output
        return None


def _cpu_multi_rank() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


class CurriculumPlugin(BasePlugin):
    def get_input_args(self) -> str:
        return f"{__package__}.args.CurriculumArgs"

    def register(self, cfg: dict):
        # A mistake in the curriculum settings ends the process on one line naming the key
        # (no traceback); every other error keeps Axolotl's traceback.
        if not getattr(sys.excepthook, "curriculum", False):
            sys.excepthook = _excepthook(sys.excepthook)
        typo = misspelled_key(cfg)
        if typo:
            raise CurriculumError(typo)
        import axolotl

        untested = untested_axolotl(getattr(axolotl, "__version__", ""))
        if untested and _rank0():
            logger.warning(untested)
        if cfg.get("curriculum") is None and _rank0():
            logger.warning("curriculum: no curriculum: block in the config; training runs without "
                        "a curriculum (add one, or remove %s from plugins)", PLUGIN)
        # Axolotl's console handler shows INFO from "axolotl*" loggers; ours starts out at WARNING.
        # (the package's logger: every module logs under it)
        curriculum_logger = logging.getLogger("axolotl_curriculum")
        if curriculum_logger.level == logging.NOTSET:
            curriculum_logger.setLevel(logging.INFO)
        # Several ranks on a machine without a GPU: Axolotl would train each rank alone.
        # (Not with DeepSpeed, which accelerate drops when told to use the CPU.)
        if cfg.get("curriculum") and _cpu_multi_rank() and not cfg.get("deepspeed"):
            os.environ.setdefault("ACCELERATE_USE_CPU", "true")
        if cfg.get("curriculum"):
            choose_merge(cfg)  # merge-lora keeps the RoPE the adapter was trained with

    def post_model_load(self, cfg, model):
        if cfg.curriculum and cfg.adapter and cfg.lora_model_dir:
            give_adapter_rope(cfg, model)

    def curriculum(self, cfg) -> Curriculum:
        """The block, parsed once per process: Axolotl validated it with the whole config
        (`args.CurriculumArgs`) and hands the hooks the plain dict again."""
        if getattr(self, "_parsed", None) is None or self._parsed[0] != cfg.curriculum:
            self._parsed = (cfg.curriculum, Curriculum.model_validate(plain(cfg.curriculum)))
        return self._parsed[1]

    def load_datasets(self, cfg, preprocess: bool = False):
        # Axolotl pins device_map to LOCAL_RANK when WORLD_SIZE > 1, which fails without a GPU;
        # this is the earliest hook that runs before the model loader copies it.
        if cfg.curriculum and _cpu_multi_rank():
            cfg.device_map = {"": "cpu"}
        if (not cfg.curriculum or preprocess or cfg.rl or cfg.pretraining_dataset or cfg.streaming
                or self._other_loader()):
            return None
        # Load the data as Axolotl would (the same function and arguments; returned, so it is
        # loaded once) and check every level on it before the model loads.
        from axolotl.common.datasets import load_datasets

        meta = load_datasets(cfg=cfg, cli_args=_train_cli_args())
        check_levels(cfg, meta, self.curriculum(cfg))  # a CurriculumError: one line, no traceback
        return meta

    def _other_loader(self) -> bool:
        """Another plugin loads the data (two loaders are an error in Axolotl): leave it to it."""
        from axolotl.integrations.base import PluginManager

        return any(p is not self and type(p).load_datasets is not BasePlugin.load_datasets
                   for p in PluginManager.get_instance().plugins.values())

    def post_trainer_create(self, cfg, trainer):
        if cfg.curriculum:
            def resume_dir(args, state):
                if isinstance(cfg.resume_from_checkpoint, str):
                    return Path(cfg.resume_from_checkpoint)
                return default_resume_dir(args, state)

            attach(trainer, self.curriculum(cfg), pack=axolotl_pack,
                   resume_dir=resume_dir,
                   truncate_excess=cfg.excess_length_strategy == "truncate",
                   sequence_len=cfg.sequence_len,
                   # next to Axolotl's prepared dataset (its default folder when unset)
                   score_cache=Path(cfg.dataset_prepared_path or DEFAULT_DATASET_PREPARED_PATH)
                   / SCORE_FOLDER, eot_tokens=cfg.eot_tokens)

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
from ..data.score_cache import FOLDER as SCORE_CACHE
from .trainer import attach, default_resume_dir

LOG = logging.getLogger("axolotl_curriculum")
PLUGIN = "axolotl_curriculum.CurriculumPlugin"


class CurriculumConfigError(ValueError):
    """A mistake in the config the plugin found: printed as one line, no traceback."""


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


def config_error_line(exc: BaseException) -> str | None:
    """The one line for an error in the curriculum settings; None for anything else (pydantic
    errors count only when every error is about `curriculum`)."""
    if isinstance(exc, CurriculumConfigError):
        return str(exc)
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ != "ValidationError" or not callable(errors):
        return None
    try:
        messages = [(tuple(e.get("loc") or ()), str(e["msg"]).removeprefix("Value error, "))
                    for e in errors()]
    except Exception:  # noqa: BLE001
        return None
    ours = [msg for loc, msg in messages
            if loc[:1] == ("curriculum",) or (not loc and msg.startswith("curriculum"))]
    return "; ".join(ours) if ours and len(ours) == len(messages) else None


def _excepthook(previous):
    def hook(exc_type, exc, tb):
        line = config_error_line(exc)
        if line is None or os.environ.get("AXOLOTL_CURRICULUM_VERBOSE"):
            previous(exc_type, exc, tb)
        if line is not None:
            sys.stderr.flush()
            print(f"axolotl-curriculum: error: {line}", file=sys.stderr, flush=True)

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
            raise CurriculumConfigError(typo)
        if cfg.get("curriculum") is None and _rank0():
            LOG.warning("curriculum: no curriculum: block in the config; training runs without "
                        "a curriculum (add one, or remove %s from plugins)", PLUGIN)
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
        if (not cfg.curriculum or preprocess or cfg.rl or cfg.pretraining_dataset or cfg.streaming
                or self._other_loader()):
            return None
        # Load the data as Axolotl would (the same function and arguments; returned, so it is
        # loaded once) and check every level on it before the model loads.
        from axolotl.common.datasets import load_datasets

        from ..commands.plan import check_levels

        meta = load_datasets(cfg=cfg, cli_args=_train_cli_args())
        try:
            check_levels(cfg, meta)
        except ValueError as exc:
            if str(exc).startswith("curriculum"):  # names the key: the one line, no traceback
                raise CurriculumConfigError(str(exc)) from None
            raise
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

            attach(trainer, Curriculum.model_validate(cfg.curriculum), pack=axolotl_pack,
                   resume_dir=resume_dir,
                   truncate_excess=cfg.excess_length_strategy == "truncate",
                   sequence_len=cfg.sequence_len,
                   # next to Axolotl's prepared dataset (its default folder when unset)
                   score_cache=Path(cfg.dataset_prepared_path or DEFAULT_DATASET_PREPARED_PATH)
                   / SCORE_CACHE)

"""The RoPE a LoRA adapter was trained with, carried to the models Axolotl builds from it.

A PEFT checkpoint holds the adapter only; the levels' RoPE lives in the base model's config.
So the run writes that config (`config.json`, the file Axolotl itself saves next to the adapter
before training) into every checkpoint and the output folder, carrying the RoPE in effect; and
a command that loads the adapter again (`axolotl merge-lora`, `inference`, training on from
`lora_model_dir`) gives the model the adapter's RoPE before it runs. Axolotl's default
memory-efficient merge never builds the model: it copies the base model's config.json, and the
merged model would lose the RoPE it was trained with; the plugin merges with `legacy` instead
where the RoPE differs (and refuses an explicit `memory_efficient`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..core.errors import CurriculumError
from ..core.rope import apply_rope, model_rope

logger = logging.getLogger(__name__)
CONFIG = "config.json"  # transformers' file name, Axolotl's pre-saved copy next to the adapter


def save_config(model: torch.nn.Module, folder: Path) -> None:
    """Write the model's config, with the RoPE it runs with now, into `folder`."""
    model = getattr(model, "module", model)  # DDP
    model.config.save_pretrained(str(folder))


def rope_in(folder) -> dict | None:
    """The RoPE parameters an adapter folder's config.json holds (None: no such file)."""
    if not folder or not (Path(folder) / CONFIG).is_file():
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder)).get_text_config()
    params = getattr(config, "rope_parameters", None)
    return dict(params) if isinstance(params, dict) else None


def _base_rope(cfg) -> dict | None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            str(cfg.get("base_model_config") or cfg.get("base_model")),
            trust_remote_code=bool(cfg.get("trust_remote_code")),
            revision=cfg.get("revision_of_model") or "main")
    except (OSError, ValueError):  # Axolotl names a base model it cannot load itself
        return None
    params = getattr(config.get_text_config(), "rope_parameters", None)
    return dict(params) if isinstance(params, dict) else None


def choose_merge(cfg) -> None:
    """`axolotl merge-lora` on an adapter trained with other RoPE than the base model's: merge
    by loading the model (`legacy`), where `post_model_load` gives it the adapter's RoPE."""
    if not cfg.get("merge_lora") or cfg.get("adapter") not in ("lora", "qlora"):
        return
    folder = cfg.get("lora_model_dir") or cfg.get("output_dir")  # as merge-lora picks it
    trained = rope_in(folder)
    base = _base_rope(cfg)
    if trained is None or base is None or trained == base:
        return
    if cfg.get("merge_method") == "memory_efficient":
        raise CurriculumError(
            f"merge_method: memory_efficient copies the base model's config.json, so the merged "
            f"model would run with its RoPE {base}, not the {trained} the adapter in {folder} "
            "was trained with; remove merge_method (the curriculum then merges with legacy) or "
            "set merge_method: legacy")
    if cfg.get("merge_method") is None:
        cfg["merge_method"] = "legacy"
        logger.info("curriculum: merging with merge_method: legacy: the adapter was trained with "
                    "RoPE %s, the base model has %s (the memory-efficient merge would copy the "
                    "base model's config.json)", trained, base)


def give_adapter_rope(cfg, model: torch.nn.Module) -> None:
    """A model loaded with an adapter from `lora_model_dir` runs with the adapter's RoPE."""
    trained = rope_in(cfg.get("lora_model_dir"))
    if trained is None:
        return
    try:
        current = model_rope(model)
    except CurriculumError:  # no RoPE the curriculum can set: the adapter's config has none either
        return
    if trained != current:
        apply_rope(model, trained)
        logger.info("curriculum: the model runs with the RoPE its adapter in %s was trained with: "
                    "%s (the base model's: %s)", cfg.get("lora_model_dir"), trained, current)

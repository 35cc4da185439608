"""Per-level RoPE: a level's `rope_theta` / `rope_scaling` applied to the model in place.

Context-extension recipes (Llama 3, Qwen2.5, ProLong) raise the RoPE base with each length
stage. A level that sets RoPE keys has its rotary embeddings' frequencies recomputed by
transformers' own initialisation functions (`ROPE_INIT_FUNCTIONS`, or the module's
`compute_default_rope_parameters`), never by maths of ours, and the model's config is updated,
so every checkpoint and the saved model carry the RoPE in effect and load with it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from .errors import CurriculumError


def check_rope(where: str, theta: Any, scaling: Any) -> None:
    """A level's RoPE keys, checked at config time against what transformers can compute."""
    if theta is not None and (isinstance(theta, bool) or not isinstance(theta, (int, float))
                              or not math.isfinite(theta) or theta <= 0):
        raise ValueError(f"{where}.rope_theta: got {theta!r}; use a number > 0 (the RoPE base, "
                         "e.g. 500000)")
    if scaling is None:
        return
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    types = ("default", *ROPE_INIT_FUNCTIONS)
    example = "e.g. {rope_type: yarn, factor: 4.0, original_max_position_embeddings: 8192}"
    if not isinstance(scaling, dict):
        raise ValueError(f"{where}.rope_scaling: got {scaling!r}; use a mapping, {example}")
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in types:
        raise ValueError(f"{where}.rope_scaling.rope_type: got {kind!r}; use one of "
                         f"{', '.join(types)} ({example})")
    def positive(v):
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and v > 0)

    for key, value in scaling.items():  # numbers, longrope's factor lists, yarn's truncate flag
        if key not in ("rope_type", "type") and not (
                positive(value) or isinstance(value, bool)
                or (isinstance(value, list) and value and all(map(positive, value)))):
            raise ValueError(f"{where}.rope_scaling.{key}: got {value!r}; use a number > 0")
    if "factor" in scaling and scaling["factor"] < 1:
        raise ValueError(f"{where}.rope_scaling.factor: got {scaling['factor']!r}; use a number "
                         ">= 1 (how many times longer the context gets)")
    # a small config of the lengths the scaling names (yarn warns when they disagree)
    longest = int(scaling.get("original_max_position_embeddings", 4096) * scaling.get("factor", 1))
    try:
        config = LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=longest,
                             rope_parameters={"rope_theta": 10000.0, **scaling, "rope_type": kind})
        config.validate_rope()
        inv_freq, _ = ROPE_INIT_FUNCTIONS[kind](config) if kind != "default" else (
            torch.ones(1), 1.0)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{where}.rope_scaling: transformers cannot compute {kind} RoPE from "
                         f"{scaling!r}: {err}; {example}") from None
    if not torch.isfinite(inv_freq).all():
        raise ValueError(f"{where}.rope_scaling: {scaling!r} gives non-finite frequencies")


def rotary_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's rotary embeddings: transformers' modules that hold `inv_freq` and compute it
    from their config (llama, qwen2, mistral, gemma, ... share this shape); wrappers (PEFT, DDP)
    are walked through."""
    return [m for m in model.modules()
            if isinstance(getattr(m, "inv_freq", None), torch.Tensor) and hasattr(m, "rope_type")
            and hasattr(m, "config")]


def text_config(model: torch.nn.Module):
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "module"):  # DDP
        return text_config(model.module)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_rope(model: torch.nn.Module) -> dict:
    """The RoPE parameters the model's config holds now (`rope_type`, `rope_theta`, ...), or
    an error naming why the curriculum cannot set them."""
    config = text_config(model)
    params = getattr(config, "rope_parameters", None)
    rotaries = rotary_modules(model)
    if (not rotaries or not isinstance(params, dict) or "rope_theta" not in params
            or not all(hasattr(m, "compute_default_rope_parameters") for m in rotaries)):
        kind = getattr(config, "model_type", type(model).__name__)
        raise CurriculumError(
            "curriculum.levels: rope_theta / rope_scaling need a model whose rotary embedding "
            f"transformers computes from config.rope_parameters; this {kind} model has none the "
            "curriculum recognises; remove the levels' RoPE keys")
    return copy.deepcopy(params)


def merged(base: dict, theta: float | None, scaling: dict | None) -> dict:
    """The model's RoPE with a level's keys: `rope_scaling` replaces the scaling (its type and
    numbers), `rope_theta` the base; what the level leaves out stays as the model has it."""
    if scaling is None:
        out = dict(base)
    else:
        out = {"rope_theta": base["rope_theta"],
               "rope_type": scaling.get("rope_type", scaling.get("type")),
               **{k: v for k, v in scaling.items() if k not in ("type", "rope_type")}}
        if "partial_rotary_factor" in base:
            out.setdefault("partial_rotary_factor", base["partial_rotary_factor"])
    if theta is not None:
        out["rope_theta"] = float(theta)
    return out


def apply_rope(model: torch.nn.Module, params: dict) -> None:
    """Set the model's RoPE to `params`: its config (saved with every checkpoint) and every
    rotary embedding's frequencies, recomputed by transformers from that config."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = text_config(model)
    config.rope_parameters = copy.deepcopy(params)
    configs = {id(config): config}
    for module in rotary_modules(model):
        if id(module.config) not in configs:  # a rotary holding its own config copy
            module.config.rope_parameters = copy.deepcopy(params)
            configs[id(module.config)] = module.config
        kind = params.get("rope_type", "default")
        init = module.compute_default_rope_parameters if kind == "default" else ROPE_INIT_FUNCTIONS[kind]
        with torch.no_grad():
            inv_freq, scaling = init(module.config)  # (transformers 5.18 dropped `device`)
            module.inv_freq.copy_(inv_freq.to(module.inv_freq.dtype))
            if isinstance(getattr(module, "original_inv_freq", None), torch.Tensor):
                module.original_inv_freq.copy_(inv_freq.to(module.original_inv_freq.dtype))
        module.rope_type = kind
        module.attention_scaling = scaling

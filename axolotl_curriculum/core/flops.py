"""Training compute of a decoder-only transformer, from its config and the lengths it is fed.

Convention (PaLM, Chowdhery et al. 2022, appendix B; Kaplan et al. 2020 without the causal
halving): training one token costs 3x its forward pass (backward = 2x forward), so

    flops per token = 6 * N + 12 * n_layers * n_heads * head_dim * T

where N counts the weights of every matrix multiply (attention projections, MLP, LM head; the
embedding lookup is free) and T is the length of the *example* the token belongs to: packed
examples attend only within themselves, so attention is quadratic in each example's length, not
in the packed row's. This is the one FLOPs function of the package (`plan`, the experiment).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Model types whose MLP is two matrices (up, down); every other decoder here is gated (3 matrices).
UNGATED = frozenset({"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "gpt_bigcode",
                     "starcoder2", "mpt"})


def _field(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        if value is not None:
            return value
    return default


def dims(model_config: Any) -> dict[str, int]:
    """The sizes the FLOPs depend on, from an HF config object or its dict (text part if nested)."""
    if hasattr(model_config, "get_text_config"):
        model_config = model_config.get_text_config()
    elif isinstance(model_config, dict) and isinstance(model_config.get("text_config"), dict):
        model_config = model_config["text_config"]
    d = int(_field(model_config, "hidden_size", "n_embd", "d_model"))
    heads = int(_field(model_config, "num_attention_heads", "n_head"))
    return {
        "hidden": d,
        "layers": int(_field(model_config, "num_hidden_layers", "n_layer")),
        "ffn": int(_field(model_config, "intermediate_size", "n_inner", default=4 * d)),
        "heads": heads,
        "kv_heads": int(_field(model_config, "num_key_value_heads", default=heads)),
        "head_dim": int(_field(model_config, "head_dim", default=d // heads)),
        "vocab": int(_field(model_config, "vocab_size")),
        "mlp_matrices": 2 if _field(model_config, "model_type", default="") in UNGATED else 3,
    }


def matmul_params(model_config: Any) -> int:
    """N: weights every token multiplies through (GQA's smaller K/V projections included)."""
    m = dims(model_config)
    d, hd = m["hidden"], m["head_dim"]
    attention = d * hd * (2 * m["heads"] + 2 * m["kv_heads"])  # q, o; k, v
    mlp = m["mlp_matrices"] * d * m["ffn"]
    return m["layers"] * (attention + mlp) + m["vocab"] * d


def flops_per_token(model_config: Any, length: int | float | np.ndarray) -> float | np.ndarray:
    """Training FLOPs of one token of an example `length` tokens long (forward + backward)."""
    m = dims(model_config)
    attention = 12 * m["layers"] * m["heads"] * m["head_dim"]
    return 6 * matmul_params(model_config) + attention * np.asarray(length, dtype=np.float64)


def fed_flops(model_config: Any, tokens, len_sq):
    """Training FLOPs of `tokens` tokens whose examples' squared lengths sum to `len_sq` (the
    run log's per-step `tokens` and `len_sq`, measured from the batches)."""
    m = dims(model_config)
    attention = 12 * m["layers"] * m["heads"] * m["head_dim"]
    return 6 * matmul_params(model_config) * np.asarray(tokens, dtype=np.float64) \
        + attention * np.asarray(len_sq, dtype=np.float64)


def attention_flops(model_config: Any, lengths: np.ndarray) -> float:
    """The attention part of `train_flops`: what grows with the square of each length."""
    m = dims(model_config)
    lengths = np.asarray(lengths, dtype=np.float64)
    return float(12 * m["layers"] * m["heads"] * m["head_dim"] * (lengths ** 2).sum())


def activation_bytes(model_config: Any, positions: int) -> float:
    """An estimate of the activations one micro-batch of `positions` positions keeps for
    backward: 34 bytes per position, hidden unit and layer (bf16, a memory-efficient attention
    kernel, no gradient checkpointing; Korthikanti et al. 2022, arXiv 2205.05198, without the
    attention-matrix term), plus the fp32 logits and their gradient (8 bytes per position and
    vocabulary entry). For ordering shapes and spotting the level that will not fit, not to
    the byte: gradient checkpointing keeps far less."""
    m = dims(model_config)
    return float(positions) * (34 * m["layers"] * m["hidden"] + 8 * m["vocab"])


def train_flops(model_config: Any, lengths: np.ndarray) -> float:
    """Training FLOPs of feeding examples of these lengths once (sum over examples)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return float(fed_flops(model_config, lengths.sum(), (lengths ** 2).sum()))

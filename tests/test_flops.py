"""The one FLOPs function: 6N per token plus attention quadratic in each example's length."""

import numpy as np
import pytest

from axolotl_curriculum.core.flops import flops_per_token, matmul_params, train_flops

# llama-like, grouped-query attention: d=64, 2 layers, ffn 128, 4 heads of 16, 2 KV heads
TINY = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}


def test_params_by_hand():
    q_o = 2 * 64 * 64            # q and o: d x heads*head_dim
    k_v = 2 * 64 * 2 * 16        # k and v: d x kv_heads*head_dim
    mlp = 3 * 64 * 128           # gate, up, down
    head = 100 * 64              # LM head (the embedding lookup costs nothing)
    assert matmul_params(TINY) == 2 * (q_o + k_v + mlp) + head == 80_128


def test_per_token_and_sum_by_hand():
    n = 80_128
    attention = 12 * 2 * 4 * 16  # 12 x layers x heads x head_dim, per token per token of context
    assert flops_per_token(TINY, 10) == 6 * n + attention * 10
    lengths = np.array([10, 30])
    expected = 10 * (6 * n + attention * 10) + 30 * (6 * n + attention * 30)
    assert train_flops(TINY, lengths) == pytest.approx(expected)


def test_attention_is_per_example_not_per_row():
    # one 64-token example costs more than two 32-token examples packed into the same 64 tokens
    assert train_flops(TINY, [64]) > train_flops(TINY, [32, 32])
    assert train_flops(TINY, [32, 32]) == pytest.approx(2 * train_flops(TINY, [32]))


def test_reads_config_objects_head_dim_and_ungated_mlps():
    from transformers import GPT2Config, LlamaConfig

    llama = LlamaConfig(**{k: v for k, v in TINY.items() if k != "model_type"}, head_dim=8)
    assert matmul_params(llama) == 2 * (2 * 64 * 32 + 2 * 64 * 16 + 3 * 64 * 128) + 6400
    gpt2 = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100)  # ffn 4d, 2 matrices
    assert matmul_params(gpt2) == 2 * (4 * 64 * 64 + 2 * 64 * 256) + 6400

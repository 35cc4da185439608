"""Builders of tiny models, tokenizers, corpora and Axolotl configs, all offline.

The tests, the benchmarks, the experiment and the demo build their models and data with these:
a byte-level BPE tokenizer trained here, a randomly initialised llama, completion and alpaca
rows of chosen lengths, and an Axolotl config that trains on CPU in seconds.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

WORDS = (
    "the a one every small large old new river stone city garden window light shadow bird tree "
    "road house bridge market song letter story morning evening night winter summer rain wind "
    "fire water mountain valley field forest door table lamp book paper clock ship harbor sailor "
    "farmer teacher child friend stranger king queen soldier merchant painter runs walks sleeps "
    "sings writes reads builds finds carries opens closes watches follows remembers forgets "
    "loves fears crosses climbs waits slowly quietly often never always softly quickly again "
    "under over near behind across through beside into from with without and but because while"
).split()
CLAUSE_WORDS = ("and", "but", "because", "while")
# Axolotl's alpaca prompt, so instruction data tokenizes into few tokens with the tiny vocabulary
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately "
          "completes the request.\n\n### Instruction:\n{}\n\n### Response:\n")

ENV = {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled", "AXOLOTL_DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
}
# Unless the caller set them: Axolotl's dataset work in one process. On datasets this small a
# fork costs more than it saves: its multipack length estimate opens a fresh process pool, which
# compiles numba anew, for each of its 4 samples (~20 s of a 90 s tiny run on 2 cores).
DEFAULTS = {"AXOLOTL_DATASET_NUM_PROC": "1"}


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(4, 11))]
    if rng.random() < 0.3:
        words.insert(rng.randint(1, len(words) - 1), rng.choice(CLAUSE_WORDS))
        words[0] += ","
    return " ".join(words).capitalize() + "."


def text(rng: random.Random, n_words: int) -> str:
    out: list[str] = []
    while sum(len(s.split()) for s in out) < n_words:
        out.append(sentence(rng))
    return ("\n" if rng.random() < 0.2 else " ").join(out)


def build_tokenizer(out_dir: Path, seed: int = 0, texts: list[str] | None = None,
                    vocab: int = 1024):
    """A byte-level BPE tokenizer trained on `texts` (default: the demo's sentences and prompt)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        rng = random.Random(seed)
        texts = [text(rng, 60) for _ in range(400)] + [ALPACA.format(sentence(rng))
                                                       for _ in range(200)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(out_dir)
    return fast


def save_llama(out_dir: Path, tok, *, hidden: int, layers: int, seq: int, seed: int = 0,
               **config) -> Path:
    """A randomly initialised llama for `tok` (heads of 32 wide, MLP twice the width), saved
    next to the tokenizer where `base_model` can point; `config`: more LlamaConfig keys."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    heads = max(2, hidden // 32)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads, max_position_embeddings=seq * 2,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **config)
    LlamaForCausalLM(cfg).save_pretrained(out_dir)
    return Path(out_dir)


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A 2-layer llama with a 1024-token BPE vocabulary, saved where `base_model` can point."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir, seed)
    return save_llama(out_dir, tok, hidden=32, layers=2, seq=256, seed=seed)


def write_corpus(path: str | os.PathLike, tokenizer_dir, n: int, min_tokens: int,
                 max_tokens: int, seed: int = 0) -> Path:
    """`n` completion rows ({"text": ...}) whose token counts lie in [min_tokens, max_tokens]."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        t = text(rng, rng.randint(min_tokens // 2, max_tokens))
        ids = tok(t)["input_ids"]
        if len(ids) > max_tokens - 2:
            t = tok.decode(ids[: rng.randint(min_tokens, max_tokens - 2)])
            ids = tok(t)["input_ids"]
        if min_tokens <= len(ids) + 2 <= max_tokens:  # + BOS/EOS added by Axolotl
            rows.append({"text": t})
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_instructions(path: str | os.PathLike, n: int, seed: int = 0, edge: bool = False) -> Path:
    """Alpaca rows with long-tailed answers; `edge` adds empty answers, long prompts and rows
    longer than any sequence_len used here."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = min(int(rng.lognormvariate(3.0, 0.8)), 300)
        rows.append({"instruction": sentence(rng), "input": "", "output": text(rng, max(words, 1))})
        if edge and i % 10 == 0:
            rows.append({"instruction": sentence(rng), "input": "", "output": ""})
            rows.append({"instruction": text(rng, 120), "input": "", "output": sentence(rng)})
            rows.append({"instruction": sentence(rng), "input": text(rng, 40), "output": text(rng, 400)})
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def base_config(model_dir, data_path, output_dir, **overrides) -> dict:
    """An Axolotl config that trains the tiny model on CPU in seconds."""
    cfg = {
        "base_model": str(model_dir),
        "tokenizer_type": "AutoTokenizer",
        "datasets": [{"path": str(data_path), "type": "completion", "ds_type": "json"}],
        "output_dir": str(output_dir),
        "dataset_prepared_path": str(Path(output_dir) / "prepared"),
        "sequence_len": 128,
        "sample_packing": True,
        "micro_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "max_steps": 30,
        "learning_rate": 1e-3,
        "optimizer": "adamw_torch",
        "lr_scheduler": "cosine",
        "warmup_steps": 2,
        "logging_steps": 5,
        "save_strategy": "no",
        "val_set_size": 0,
        "bf16": False, "fp16": False, "tf32": False,
        "attn_implementation": "sdpa",
        "special_tokens": {"pad_token": "<pad>"},
        "plugins": ["axolotl_curriculum.CurriculumPlugin"],
        "curriculum": {"levels": [
            {"input_len": 32, "max_steps": 10},
            {"input_len": 64, "max_steps": 10},
            {"input_len": 128},
        ]},
        "seed": 42,
    }
    cfg.update(overrides)
    return {k: v for k, v in cfg.items() if v is not None}


def axolotl_env() -> dict:
    env = {**DEFAULTS, **os.environ, **ENV}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env

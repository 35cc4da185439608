"""The models the experiment trains: a base model pretrained once on general text (cached), and
the from-scratch model. Both are small llamas with a BPE tokenizer trained on the data."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from axolotl_curriculum.demo import ALPACA, axolotl_env, base_config

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def tokenizer(texts: list[str], out: Path, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(out)
    return fast


def fresh_model(out: Path, texts: list[str], *, vocab: int, hidden: int, layers: int,
                seq: int, seed: int = 0) -> Path:
    """A randomly initialised llama with a tokenizer trained on `texts`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(texts, out, vocab)
    torch.manual_seed(seed)
    heads = max(2, hidden // 32)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads, max_position_embeddings=seq * 2,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def _texts(*paths: Path, limit: int = 20000) -> list[str]:
    texts = []
    for path in paths:
        for line in path.read_text().splitlines()[:limit]:
            row = json.loads(line)
            texts.append(row.get("text") or " ".join(
                str(row.get(k, "")) for k in ("instruction", "input", "output")))
    return texts + [ALPACA.format("x")] * 50


def pretrained(work: Path, data: dict, size: dict) -> Path:
    """The base model: `size["pretrain_steps"]` steps of plain language modelling on
    data["pretrain"] through `axolotl train`, cached by the data and the size."""
    spec = {k: size[k] for k in ("vocab", "hidden", "layers", "seq", "pretrain_steps",
                                 "pretrain_lr", "pretrain_mbs")}
    key = hashlib.sha256(json.dumps([spec, data["hash"]], sort_keys=True).encode()).hexdigest()[:10]
    out = work / f"base-{key}"
    if (out / "model.safetensors").exists():
        return out
    init = fresh_model(work / f"init-{key}", _texts(data["pretrain"], data["train"]),
                       vocab=size["vocab"], hidden=size["hidden"], layers=size["layers"],
                       seq=size["seq"])
    cfg = base_config(init, data["pretrain"], out, sequence_len=size["seq"],
                      max_steps=size["pretrain_steps"], micro_batch_size=size["pretrain_mbs"],
                      learning_rate=size["pretrain_lr"], warmup_steps=size["pretrain_steps"] // 20,
                      num_epochs=10, dataset_prepared_path=str(out / "prepared"),
                      plugins=None, curriculum=None)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"experiment: pretraining the base model ({size['pretrain_steps']} steps) in {out}",
          flush=True)
    proc = subprocess.run(["axolotl", "train", str(out / "config.yml")], env=axolotl_env(),
                          capture_output=True, text=True)
    (out / "train.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode or not (out / "model.safetensors").exists():
        raise SystemExit(f"experiment: pretraining failed, see {out / 'train.log'}")
    return out

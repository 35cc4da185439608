"""The models the experiment trains: a base model pretrained once on general text (cached), and
the from-scratch model. Both are small llamas with a BPE tokenizer trained on the data."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from axolotl_curriculum.testing import (ALPACA, axolotl_env, base_config, build_tokenizer,
                                     save_llama)

from .data import read_texts


def fresh_model(out: Path, texts: list[str], *, vocab: int, hidden: int, layers: int,
                seq: int, seed: int = 0) -> Path:
    """A randomly initialised llama with a tokenizer trained on `texts`."""
    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, texts=texts, vocab=vocab)
    return save_llama(out, tok, hidden=hidden, layers=layers, seq=seq, seed=seed,
                      tie_word_embeddings=False)


def _texts(*paths: Path, limit: int = 20000) -> list[str]:
    return [t for p in paths for t in read_texts(p, limit)] + [ALPACA.format("x")] * 50


def pretrained(work: Path, data: dict, size: dict, init: Path | None = None) -> Path:
    """The base model: `size["pretrain_steps"]` steps of plain language modelling on
    data["pretrain"] through `axolotl train`, cached by the data and the size; `init`: the
    initial model (default: a fresh one, its tokenizer trained on the data)."""
    spec = {k: size[k] for k in ("vocab", "hidden", "layers", "seq", "pretrain_steps",
                                 "pretrain_lr", "pretrain_mbs")}
    key = hashlib.sha256(json.dumps([spec, data["hash"]], sort_keys=True).encode()).hexdigest()[:10]
    out = work / f"base-{key}"
    if (out / "model.safetensors").exists():
        return out
    init = init or fresh_model(work / f"init-{key}", _texts(data["pretrain"], data["train"]),
                               vocab=size["vocab"], hidden=size["hidden"],
                               layers=size["layers"], seq=size["seq"])
    cfg = base_config(init, data["pretrain"], out, sequence_len=size["seq"],
                      max_steps=size["pretrain_steps"], micro_batch_size=size["pretrain_mbs"],
                      learning_rate=size["pretrain_lr"], warmup_steps=size["pretrain_steps"] // 20,
                      num_epochs=10, dataset_prepared_path=str(out / "prepared"),
                      plugins=None, curriculum=None, **size.get("axolotl", {}))
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

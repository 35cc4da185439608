"""A small model learns passkey retrieval through `axolotl train`, and the probe sees it (issue 22).

    .venv/bin/python benchmarks/passkey_learning.py [--steps 1500] [--work DIR]

A randomly initialised llama (2 layers, hidden 64: `testing.save_llama` with the tiny BPE
tokenizer) trained with the curriculum plugin on completion rows that are passkey prompts of
160 tokens (`core/passkey.py`'s template, keys of 2 digits drawn from seed 1, 10 depths), levels
[64 for 100 steps, 256]: level 0 cuts every row before its question, level 1 feeds them whole.
The probe measures held-out prompts (probes.seed 0: other keys, depths 0.1/0.5/0.9, 16 rows
each, 48 in all) every 100 steps. Chance is 1 in 100. The outside check: the last probe point
recomputed from the saved model with transformers' own greedy `generate`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_curriculum.core import passkey
from axolotl_curriculum.testing import axolotl_env, base_config, build_tokenizer, save_llama

LENGTH, DEPTHS, ROWS, DIGITS = 160, [0.1, 0.5, 0.9], 16, 2


def prompts_for(tok, depths, rows, seed):
    def encode(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    bos = [tok.bos_token_id] if tok("a")["input_ids"][0] == tok.bos_token_id else []
    return passkey.grid(encode, [LENGTH], depths, rows, DIGITS, seed=seed, bos=bos), bos


def learn(work: Path, steps: int = 1500, lr: float = 3e-3) -> dict:
    """Train through `axolotl train` in `work`; returns the probe's curve [(step, level,
    accuracy)] and the held-out accuracy `generate` gives on the saved model."""
    model_dir = work / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(model_dir, 0)
    save_llama(model_dir, tok, hidden=64, layers=2, seq=256)
    tok = AutoTokenizer.from_pretrained(model_dir)
    train, bos = prompts_for(tok, list(np.linspace(0.05, 0.95, 10)), 300, seed=1)
    data = work / "keys.jsonl"
    data.write_text("".join(json.dumps({"text": tok.decode(p.ids[len(bos):])}) + "\n"
                            for p in train))
    out = work / "out"
    cfg = base_config(model_dir, data, out, sequence_len=256, sample_packing=False,
                      micro_batch_size=16, learning_rate=lr, lr_scheduler="constant",
                      warmup_steps=0, max_steps=steps, logging_steps=50,
                      dataloader_num_workers=0, curriculum={
                          "levels": [{"input_len": 64, "max_steps": 100}, {"input_len": 256}],
                          "probes": {"every": 100, "passkey": {
                              "lengths": [LENGTH], "depths": DEPTHS, "rows": ROWS,
                              "digits": DIGITS}}})
    (work / "cfg.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run(["axolotl", "train", str(work / "cfg.yml")], env=axolotl_env(),
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"axolotl train failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    recs = [json.loads(line) for line in (out / "curriculum_log.jsonl").read_text().splitlines()]
    key = f"probe/passkey@{LENGTH}"
    curve = [(r["step"], r["level"], r[key]) for r in recs if key in r]
    held, _ = prompts_for(tok, DEPTHS, ROWS, seed=0)  # the probe's own prompts (probes.seed 0)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    right = []
    with torch.no_grad():
        for p in held:
            got = model.generate(torch.tensor([p.ids[:p.answer_start]]), do_sample=False,
                                 max_new_tokens=len(p.ids) - p.answer_start,
                                 pad_token_id=tok.pad_token_id)
            right.append(got[0, p.answer_start:].tolist() == p.ids[p.answer_start:])
    return {"curve": curve, "generate": float(np.mean(right)), "prompts": len(held)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="curriculum-passkey-"))
    result = learn(work, args.steps, args.lr)
    curve = result["curve"]
    print(f"passkey@{LENGTH}, {result['prompts']} held-out prompts, keys of {DIGITS} digits "
          f"(chance 0.01), lr {args.lr}, {args.steps} steps\n")
    print("| step | level | probe accuracy |\n|---|---|---|")
    for step, level, acc in curve:
        print(f"| {step} | {level} | {acc:.3f} |")
    print(f"\ngenerate on the saved model: {result['generate']:.3f} (the probe's last value: "
          f"{curve[-1][2]:.3f})")


if __name__ == "__main__":
    main()

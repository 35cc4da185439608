"""Per-step time of the plugin at full length vs the same config without it, side by side.

    .venv/bin/python benchmarks/overhead.py [--steps 300] [--rounds 3] [--work DIR]
    .venv/bin/python benchmarks/overhead.py --model real --steps 10 --rounds 2

Three arms through the real `axolotl train` on the tiny llama (CPU): no plugin; the plugin with
one level at sequence_len (the final level of any schedule); the same with sense_grad checking
every 10 steps. `--model real`: SmolLM2-135M-Instruct (testing/real_model.py) with LoRA, fp32,
packed rows of 512 tokens of standard-library docstring chats (Axolotl's chat_template), the
first two arms. Arms alternate within each round so machine noise hits them alike. Reported:
median seconds per optimizer step from the trainer's own `train_runtime`, and the ratio to the
no-plugin arm.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import yaml

from axolotl_curriculum.testing import axolotl_env, base_config, build_tiny_model, write_corpus

def arms(seq: int) -> dict[str, dict]:
    full = {"levels": [{"input_len": seq}]}
    return {
        "no plugin": dict(plugins=None, curriculum=None),
        "plugin, final level": dict(curriculum=full),
        "plugin + sense_grad, final level": dict(curriculum={**full,
                                                             "sense_grad": {"check_every": 10}}),
    }


REAL = dict(  # the real model's run: LoRA on chat rows (tests/test_e2e_real_model.py's setup)
    sequence_len=512, micro_batch_size=2, learning_rate=2e-4, special_tokens=None,
    chat_template="tokenizer_default", adapter="lora", lora_r=8, lora_alpha=16,
    lora_dropout=0.0, lora_target_linear=True, lora_mlp_kernel=False, lora_qkv_kernel=False,
    lora_o_kernel=False)


def run(work: Path, name: str, steps: int, model, data, extra: dict, arm: dict) -> float:
    out = work / re.sub(r"\W+", "-", name)
    cfg = base_config(model, data, out, max_steps=steps, logging_steps=50, **extra, **arm)
    path = work / "cfg.yml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(["axolotl", "train", str(path)], env=axolotl_env(), capture_output=True,
                          text=True, check=True)
    runtime = re.findall(r"'train_runtime': '?([\d.]+)", proc.stdout + proc.stderr)
    return float(runtime[-1]) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=None)
    ap.add_argument("--model", choices=["tiny", "real"], default="tiny")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="curriculum-overhead-"))
    if args.model == "real":
        from axolotl_curriculum.testing.real_model import build, write_chats

        model = build()
        data = write_chats(work / "chats.jsonl", 2000)
        extra = {**REAL, "datasets": [{"path": str(data), "type": "chat_template",
                                       "ds_type": "json", "field_messages": "messages"}]}
        chosen = dict(list(arms(REAL["sequence_len"]).items())[:2])
    else:
        model, extra = build_tiny_model(work / "model"), {}
        data = write_corpus(work / "corpus.jsonl", model, n=3000, min_tokens=40, max_tokens=128)
        chosen = arms(128)
    times: dict[str, list[float]] = {name: [] for name in chosen}
    for _ in range(args.rounds):
        for name, arm in chosen.items():
            times[name].append(run(work, name, args.steps, model, data, extra, arm))
    base = statistics.median(times["no plugin"])
    print(f"{args.model} model, {args.steps} steps per run, {args.rounds} rounds, median "
          "seconds per step\n")
    print("| arm | s/step | ratio | rounds (s/step) |\n|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.4f} | {med / base:.3f} | {', '.join(f'{t:.4f}' for t in ts)} |")


if __name__ == "__main__":
    main()

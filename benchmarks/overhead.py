"""Per-step time of the plugin at full length vs the same config without it, side by side.

    .venv/bin/python benchmarks/overhead.py [--steps 300] [--rounds 3] [--work DIR]

Three arms through the real `axolotl train` on the tiny llama (CPU): no plugin; the plugin with
one level at sequence_len (the final level of any schedule); the same with sense_grad checking
every 10 steps. Arms alternate within each round so machine noise hits them alike. Reported:
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

FULL = {"levels": [{"input_len": 128}]}
ARMS = {
    "no plugin": dict(plugins=None, curriculum=None),
    "plugin, final level": dict(curriculum=FULL),
    "plugin + sense_grad, final level": dict(curriculum={**FULL, "sense_grad": {"check_every": 10}}),
}


def run(work: Path, name: str, steps: int, model, data) -> float:
    out = work / re.sub(r"\W+", "-", name)
    cfg = base_config(model, data, out, max_steps=steps, logging_steps=50, **ARMS[name])
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
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="curriculum-overhead-"))
    model = build_tiny_model(work / "model")
    data = write_corpus(work / "corpus.jsonl", model, n=3000, min_tokens=40, max_tokens=128)
    times: dict[str, list[float]] = {name: [] for name in ARMS}
    for _ in range(args.rounds):
        for name in ARMS:
            times[name].append(run(work, name, args.steps, model, data))
    base = statistics.median(times["no plugin"])
    print(f"{args.steps} steps per run, {args.rounds} rounds, median seconds per step\n")
    print("| arm | s/step | ratio | rounds (s/step) |\n|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.4f} | {med / base:.3f} | {', '.join(f'{t:.4f}' for t in ts)} |")


if __name__ == "__main__":
    main()

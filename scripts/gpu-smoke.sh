#!/usr/bin/env bash
# GPU smoke run (a few minutes on one NVIDIA GPU): QLoRA + curriculum, DeepSpeed ZeRO-2 +
# curriculum, and a bf16 timing of the plugin vs no plugin, on a small llama built offline.
# Prints one summary line per check and writes them to ${OUT:-gpu-smoke}/summary.txt.
#   bash scripts/gpu-smoke.sh            (after bash scripts/setup.sh, or in any env with axolotl)
# NOT YET RUN: no GPU machine was lent to the session that wrote it; see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=${OUT:-gpu-smoke}
mkdir -p "$out"
export PATH="$(dirname "$py"):$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled \
       AXOLOTL_DO_NOT_TRACK=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
"$py" - "$out" <<'PY'
import json, subprocess, sys, time, yaml
from pathlib import Path
from axolotl_curriculum.demo import axolotl_env, base_config, build_tiny_model, write_corpus
sys.path.insert(0, "benchmarks")
from experiment import SIZES, build_model

out = Path(sys.argv[1]).resolve()
tiny = build_tiny_model(out / "tiny")
size = {**SIZES["gpu"], "hidden": 512, "layers": 4, "seq": 1024}
model = build_model(out / "model", size, tiny)
data = write_corpus(out / "corpus.jsonl", tiny, n=4000, min_tokens=100, max_tokens=1024)
levels = [{"input_len": 128, "max_steps": 20}, {"input_len": 512, "max_steps": 20},
          {"input_len": 1024}]
common = dict(sequence_len=1024, micro_batch_size=4, max_steps=60, bf16=True, tf32=True,
              attn_implementation="sdpa", logging_steps=10)
checks = {
    "qlora": dict(adapter="qlora", load_in_4bit=True, lora_r=16, lora_alpha=32,
                  lora_target_linear=True, optimizer="paged_adamw_8bit",
                  curriculum={"levels": levels, "sense_grad": True}),
    "zero2": dict(deepspeed=str(Path("example_configs/deepspeed/zero2.json").resolve()),
                  curriculum={"levels": levels, "sense_grad": True}),
    "bf16-no-plugin": dict(plugins=None, curriculum=None, max_steps=200),
    "bf16-plugin-final-level": dict(curriculum={"levels": [{"input_len": 1024}]}, max_steps=200),
}
lines = []
for name, extra in checks.items():
    run = out / name
    cfg = base_config(model, data, run, **{**common, **extra})
    (out / f"{name}.yml").write_text(yaml.safe_dump(cfg))
    t = time.time()
    proc = subprocess.run(["axolotl", "train", str(out / f"{name}.yml")], env=axolotl_env(),
                          capture_output=True, text=True)
    (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    log = run / "curriculum_log.jsonl"
    recs = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
    levels_seen = sorted({r["level"] for r in recs})
    ok = proc.returncode == 0 and all(r["max_example_len"] <= r["input_len"] for r in recs)
    runtime = [l for l in (proc.stdout + proc.stderr).split("'train_runtime': '")[1:]]
    secs = float(runtime[-1].split("'")[0]) if runtime else float("nan")
    lines.append(f"{name}: {'ok' if ok else 'FAILED rc=%d' % proc.returncode}, levels {levels_seen}, "
                 f"train_runtime {secs:.1f}s, wall {time.time() - t:.0f}s")
    print(lines[-1], flush=True)
(out / "summary.txt").write_text("\n".join(lines) + "\n")
PY

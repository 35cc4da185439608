"""GPU smoke run: QLoRA, DeepSpeed ZeRO-2 and FSDP2 with a curriculum, and a bf16 timing.

Each check is a real Axolotl training run (`axolotl.cli.train` under torchrun, one process) on
a small llama built offline; what was fed comes from `curriculum_log.jsonl`, what was trained
from tests/plugins/model_probe.py (4-bit layers, the DeepSpeed engine, the FSDP2 module).
`--cpu` rehearses the checks on a machine without a GPU (tiny model, fp32, Axolotl's CUDA-only
LoRA kernels off, DeepSpeed through tests/shims, no FSDP), so the script is known to work before
a GPU session spends its minutes on it.

    python scripts/gpu_smoke.py OUT [--cpu]      (scripts/gpu-smoke.sh sets up the environment)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from axolotl_curriculum.testing import (axolotl_env, base_config, build_tiny_model,  # noqa: E402
                                     save_llama, write_corpus)


def checks(cpu: bool) -> dict[str, dict]:
    seq = 128 if cpu else 1024
    levels = [{"input_len": seq // 8, "max_steps": 10 if cpu else 20},
              {"input_len": seq // 2, "max_steps": 10 if cpu else 20}, {"input_len": seq}]
    gate = {"check_every": 5, "min_steps": 5}
    lora = dict(lora_r=16, lora_alpha=32, lora_target_linear=True)
    if cpu:  # Axolotl's fused LoRA kernels dequantize NF4 through CUDA only
        lora.update(lora_qkv_kernel=False, lora_o_kernel=False, lora_mlp_kernel=False)
    probe = ["axolotl_curriculum.CurriculumPlugin", "model_probe.ModelProbe"]
    timing_steps = 40 if cpu else 200
    return {
        "qlora": dict(adapter="qlora", load_in_4bit=True, optimizer="paged_adamw_8bit", plugins=probe,
                      curriculum={"levels": levels, "sense_grad": gate}, **lora),
        "zero2": dict(deepspeed=str(ROOT / "example_configs/deepspeed/zero2.json"), plugins=probe,
                      curriculum={"levels": levels, "sense_grad": gate}),
        # FSDP2 (one GPU is enough for accelerate to take the FSDP path; not on CPU, see engines.md)
        **({} if cpu else {"fsdp2": dict(
            fsdp_version=2, plugins=probe, curriculum={"levels": levels, "sense_grad": gate},
            fsdp_config={"auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                         "transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                         "state_dict_type": "FULL_STATE_DICT", "reshard_after_forward": True})}),
        # the same full-length training with and without the plugin: its cost per step
        "no-plugin": dict(plugins=None, curriculum=None, max_steps=timing_steps),
        "plugin-full-length": dict(curriculum={"levels": [{"input_len": seq}]}, max_steps=timing_steps),
    }


def wider(out: Path, tokenizer_dir: Path, hidden: int, layers: int, seq: int) -> Path:
    """The tiny llama's tokenizer with a wider, deeper body (GPU-sized)."""
    import shutil

    from transformers import AutoTokenizer

    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for f in tokenizer_dir.glob("tokenizer*"):
        shutil.copy(f, out / f.name)
    return save_llama(out, AutoTokenizer.from_pretrained(tokenizer_dir), hidden=hidden,
                      layers=layers, seq=seq)


def build(out: Path, cpu: bool) -> tuple[Path, Path, dict]:
    tiny = build_tiny_model(out / "tiny")
    if cpu:
        model, seq = tiny, 128
    else:
        seq = 1024
        model = wider(out / "model", tiny, hidden=512, layers=4, seq=seq)
    data = write_corpus(out / "corpus.jsonl", tiny, n=2000 if cpu else 4000, min_tokens=seq // 4,
                        max_tokens=seq)
    common = dict(sequence_len=seq, micro_batch_size=2 if cpu else 4, max_steps=30 if cpu else 60,
                  logging_steps=10)
    common.update(dict(bf16=False, tf32=False) if cpu else
                  dict(bf16=True, tf32=True, attn_implementation="sdpa"))
    return model, data, common


def run_check(name: str, cfg: dict, out: Path, cpu: bool) -> dict:
    path = out / f"{name}.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**axolotl_env(), "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "tests" / "plugins"), *([str(ROOT / "tests" / "shims")] if cpu else []),
         str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if cpu and "deepspeed" in cfg:
        env["DS_CPU_SHIM"] = "1"
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "1", "-m", "axolotl.cli.train", str(path)],
                          env=env, capture_output=True, text=True, timeout=900)
    text = proc.stdout + proc.stderr
    (out / f"{name}.log").write_text(text)
    run = Path(cfg["output_dir"])
    log = run / "curriculum_log.jsonl"
    recs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    probe_file = run / "model_probe.rank0.json"
    probe = json.loads(probe_file.read_text()) if probe_file.exists() else {}
    runtime = re.findall(r"'train_runtime': '?([0-9.]+)", text)
    result = {
        "check": name, "rc": proc.returncode, "wall_s": round(time.time() - started, 1),
        "train_runtime_s": float(runtime[-1]) if runtime else None,
        "levels": sorted({r["level"] for r in recs}),
        "max_example_len": {},
        "fed_within_level": all(r["max_example_len"] <= r["input_len"] for r in recs),
        "decisions": sorted({r["decision"] for r in recs if "decision" in r}),
        "linear4bit": probe.get("modules", {}).get("bitsandbytes.nn.modules.Linear4bit", 0),
        "zero_stage": probe.get("zero_stage"),
        "wrapped": probe.get("wrapped"),
    }
    for r in recs:
        longest = result["max_example_len"]
        longest[r["level"]] = max(longest.get(r["level"], 0), r["max_example_len"])
    curriculum = cfg.get("curriculum")
    want_levels = list(range(len(curriculum["levels"]))) if curriculum else []
    result["ok"] = (proc.returncode == 0 and result["levels"] == want_levels
                    and result["fed_within_level"]
                    and (name != "qlora" or result["linear4bit"] > 0)
                    and (name != "zero2" or result["zero_stage"] == 2)
                    and (name != "fsdp2" or str(result["wrapped"]).startswith("FSDP")))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--cpu", action="store_true", help="rehearse on a machine without a GPU")
    ap.add_argument("--only", nargs="*", help="a subset of checks")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    model, data, common = build(out, args.cpu)
    results = []
    for name, extra in checks(args.cpu).items():
        if args.only and name not in args.only:
            continue
        cfg = base_config(model, data, out / name, **{**common, **extra})
        results.append(run_check(name, cfg, out, args.cpu))
        print(json.dumps(results[-1]), flush=True)
    timed = {r["check"]: r["train_runtime_s"] for r in results}
    if timed.get("no-plugin") and timed.get("plugin-full-length"):
        ratio = timed["plugin-full-length"] / timed["no-plugin"]
        print(f"plugin / no plugin train_runtime at full length: {ratio:.3f}", flush=True)
    (out / "summary.json").write_text(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

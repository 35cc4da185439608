"""Runs examples/custom_loop.py's loop with a probe on the model's forward (test-only).

    accelerate launch --multi_gpu --num_processes 2 tests/custom_loop_probe.py WORKDIR
    python tests/custom_loop_probe.py WORKDIR --plain [--stop-at N | --resume] [--probe NAME]

Each rank writes WORKDIR/{NAME}.rank{R}.jsonl (default NAME: probe): per forward, what it
received, measured outside the curriculum: the length of every row (attention mask sums) and its
token ids (padding left out).
"""

import argparse
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_example():
    spec = importlib.util.spec_from_file_location("custom_loop", ROOT / "examples" / "custom_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe(path: Path):
    def on_model(model):
        def record(module, args, kwargs):
            mask = kwargs["attention_mask"]
            ids = [[t for t, m in zip(row, keep) if m]
                   for row, keep in zip(kwargs["input_ids"].tolist(), mask.tolist())]
            with path.open("a") as f:
                f.write(json.dumps({"lengths": mask.sum(dim=1).tolist(), "ids": ids}) + "\n")
        model.register_forward_pre_hook(record, with_kwargs=True)
    return on_model


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


if __name__ == "__main__":
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--plain", action="store_true", help="one process, no accelerate")
    parser.add_argument("--stop-at", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--probe", default="probe")
    args = parser.parse_args()
    work = args.workdir.resolve()
    rank = int(os.environ.get("RANK", 0))
    load_example().main(work, use_accelerate=not args.plain, stop_at=args.stop_at,
                        resume=args.resume, on_model=probe(work / f"{args.probe}.rank{rank}.jsonl"))

"""Runs examples/custom_loop.py's loop with a probe on the model's forward (test-only).

    accelerate launch --multi_gpu --num_processes 2 tests/custom_loop_probe.py WORKDIR

Each rank writes WORKDIR/probe.rank{R}.jsonl: per forward, the length of every row it received
(attention mask sums), measured outside the curriculum.
"""

import importlib.util
import json
import sys
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
            with path.open("a") as f:
                f.write(json.dumps(kwargs["attention_mask"].sum(dim=1).tolist()) + "\n")
        model.register_forward_pre_hook(record, with_kwargs=True)
    return on_model


if __name__ == "__main__":
    import os

    work = Path(sys.argv[1]).resolve()
    rank = int(os.environ.get("RANK", 0))
    load_example().main(work, use_accelerate=True, on_model=probe(work / f"probe.rank{rank}.jsonl"))

"""A test-only Axolotl plugin: writes what each rank really trains once training begins.

Lets a test see that `load_in_4bit` quantized the model (rather than loading it in full
precision) and which engine wraps it (DeepSpeed's ZeRO stage, its optimizer, the world size).
"""

import json
from collections import Counter
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback


class _Probe(TrainerCallback):
    def __init__(self, trainer, out: Path):
        self.trainer, self.out = trainer, out

    def on_train_begin(self, args, state, control, **kwargs):
        model, wrapped = self.trainer.model, self.trainer.model_wrapped
        stage = getattr(wrapped, "zero_optimization_stage", None)
        report = {
            "modules": Counter(f"{type(m).__module__}.{type(m).__name__}" for m in model.modules()),
            "quant_types": Counter(str(getattr(getattr(p, "quant_state", None), "quant_type", None))
                                   for p in model.parameters()),
            "wrapped": type(wrapped).__name__,
            "zero_stage": stage() if callable(stage) else None,
            "engine_optimizer": type(getattr(wrapped, "optimizer", None)).__name__,
            "world_size": args.world_size,
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        (self.out.parent / f"{self.out.name}.rank{args.process_index}.json").write_text(json.dumps(report))


class ModelProbe(BasePlugin):
    def post_trainer_create(self, cfg, trainer):
        trainer.add_callback(_Probe(trainer, Path(cfg.output_dir) / "model_probe"))

"""A test-only Axolotl plugin: writes which layer types the trained model really has.

Lets a test see that `load_in_4bit` quantized the model rather than loading it in full precision.
"""

import json
from collections import Counter
from pathlib import Path

from axolotl.integrations.base import BasePlugin


class ModelProbe(BasePlugin):
    def post_trainer_create(self, cfg, trainer):
        types = Counter(type(m).__module__ + "." + type(m).__name__ for m in trainer.model.modules())
        quant = Counter(getattr(getattr(p, "quant_state", None), "quant_type", None)
                        for p in trainer.model.parameters())
        out = Path(cfg.output_dir) / "model_probe.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"modules": types, "quant_types": {str(k): v for k, v in quant.items()}}))

"""A test-only Axolotl plugin: writes the dataset rows of each micro-batch a rank fetches, in
order (unpacked loaders), so a test can count from outside how often each example was fed."""

import json
from pathlib import Path

from axolotl.integrations.base import BasePlugin


class FedProbe(BasePlugin):
    def post_trainer_create(self, cfg, trainer):
        from axolotl_curriculum import loader

        path = Path(cfg.output_dir) / f"fed.rank{trainer.args.process_index}.jsonl"
        get = loader.CutDataset.__getitems__

        def recorded(self, specs):
            with path.open("a") as f:
                f.write(json.dumps([int(spec[0]) for spec in specs]) + "\n")
            return get(self, specs)

        loader.CutDataset.__getitems__ = recorded

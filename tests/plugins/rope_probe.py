"""A test-only Axolotl plugin: before every step, compares the model's rotary embeddings (and,
without an adapter, its logits) with a freshly built copy whose config carries the RoPE the test
expects at that step (env ROPE_EXPECTED: [[first_step, rope_parameters], ...]). Writes what it
saw per rank to rope_probe.rank<r>.json."""

import copy
import json
import os
from pathlib import Path

import torch
from axolotl.integrations.base import BasePlugin
from transformers import AutoModelForCausalLM, TrainerCallback


def expected_at(step: int) -> dict:
    table = json.loads(os.environ["ROPE_EXPECTED"])
    return [params for first, params in table if first <= step][-1]


class _Probe(TrainerCallback):
    def __init__(self, trainer, out: Path):
        self.trainer, self.out, self.seen = trainer, out, []

    def on_step_begin(self, args, state, control, **kwargs):
        step = state.global_step + 1
        model = self.trainer.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        want = expected_at(step)
        config = copy.deepcopy(base.config)
        config.rope_parameters = dict(want)
        fresh = AutoModelForCausalLM.from_config(config)
        rotary = [m for m in base.modules() if hasattr(m, "inv_freq") and hasattr(m, "rope_type")]
        fresh_rotary = [m for m in fresh.modules() if hasattr(m, "inv_freq") and hasattr(m, "rope_type")]
        record = {"step": step, "rank": args.process_index,
                  "config": dict(base.config.rope_parameters),
                  "inv_freq": all(torch.equal(a.inv_freq.cpu(), b.inv_freq) for a, b in zip(rotary, fresh_rotary)),
                  "scaling": [a.attention_scaling == b.attention_scaling
                              for a, b in zip(rotary, fresh_rotary)]}
        # full weights: the logits too (not under ZeRO-3, whose parameters are partitioned)
        if not hasattr(model, "get_base_model") and not os.environ.get("ROPE_NO_LOGITS"):
            fresh.load_state_dict(base.state_dict())
            probe = torch.arange(3, 103).unsqueeze(0)
            with torch.no_grad():
                was = base.training
                own = base.eval()(probe).logits
                base.train(was)
                record["logits_diff"] = (own - fresh.eval()(probe).logits).abs().max().item()
        self.seen.append(record)
        self.out.with_name(f"{self.out.name}.rank{args.process_index}.json").write_text(
            json.dumps(self.seen))


class RopeProbe(BasePlugin):
    def post_trainer_create(self, cfg, trainer):
        trainer.add_callback(_Probe(trainer, Path(cfg.output_dir) / "rope_probe"))

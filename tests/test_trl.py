"""The same curriculum in a plain TRL SFTTrainer script (examples/trl_sft.py), no Axolotl CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from axolotl_curriculum.testing import axolotl_env

ROOT = Path(__file__).resolve().parents[1]


# Runs examples/trl_sft.py with a probe: a forward pre-hook on the model records, for every
# training forward, each row's token ids (padding left out); the trainer's tokenized train
# dataset is written beside it, the reference each fed row is checked against.
PROBED = """
import importlib.util, json, sys
from pathlib import Path
import torch
work = Path(sys.argv[1])
spec = importlib.util.spec_from_file_location("trl_sft", sys.argv[2])
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
load, attach = example.AutoModelForCausalLM.from_pretrained, example.attach

def record(module, args, kwargs):
    if not (module.training and torch.is_grad_enabled()):
        return
    ids = kwargs["input_ids"].tolist()
    if kwargs.get("attention_mask") is not None:
        rows = [[t for t, m in zip(r, keep) if m] for r, keep in zip(ids, kwargs["attention_mask"].tolist())]
    else:  # padding-free: one row of examples, split where position_ids restart
        rows = []
        for t, p in zip(ids[0], kwargs["position_ids"].tolist()[0]):
            rows.append([t]) if p == 0 or not rows else rows[-1].append(t)
    with (work / "forward.jsonl").open("a") as f:
        f.write(json.dumps(rows) + "\\n")

class Model:
    @staticmethod
    def from_pretrained(*a, **k):
        model = load(*a, **k)
        model.register_forward_pre_hook(record, with_kwargs=True)
        return model

def attached(trainer, block):
    (work / "train_rows.json").write_text(json.dumps([list(r) for r in trainer.train_dataset["input_ids"]]))
    return attach(trainer, block)

example.AutoModelForCausalLM, example.attach = Model, attached
example.main(work)
"""


@pytest.mark.e2e
def test_trl_example_feeds_the_levels(tmp_path):
    proc = subprocess.run([sys.executable, "-c", PROBED, str(tmp_path),
                           str(ROOT / "examples" / "trl_sft.py")],
                          env=axolotl_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    forwards = [json.loads(l) for l in (tmp_path / "forward.jsonl").read_text().splitlines()]
    dataset = json.loads((tmp_path / "train_rows.json").read_text())
    assert len(forwards) == 30  # a forward per step (batch 4, no accumulation)
    # the level each step fed, from the forward alone: rows are 70-128 tokens, so level 0 cuts
    # every row to exactly 32 tokens, level 1 to 64, and level 2 feeds whole rows
    lengths = [{len(row) for row in rows} for rows in forwards]
    fed = [0 if n == {32} else 1 if n == {64} else 2 if min(n) > 64 else None for n in lengths]
    assert fed == [0] * 10 + [1] * 10 + [2] * 10  # the levels' max_steps: 10, 10, the rest
    # every row fed is the head of a row of the trainer's dataset, cut to the level
    by_head = {tuple(ids[:32]): ids for ids in dataset}
    assert len(by_head) == len(dataset)
    for level, rows in zip(fed, forwards):
        for ids in rows:
            assert ids == by_head[tuple(ids[:32])][:(32, 64, 128)[level]]
    # and the curriculum's log says what the forward received
    recs = [json.loads(l) for l in (tmp_path / "out" / "curriculum_log.jsonl").read_text().splitlines()]
    assert [r["level"] for r in recs] == fed
    assert [r["max_example_len"] for r in recs] == [max(n) for n in lengths]


@pytest.mark.parametrize("settings, block, message", [
    ({"packing": True}, {"levels": [{"input_len": 64}]},
     "packing=True packs rows before the curriculum"),
    ({"max_grad_norm": 0.0}, {"levels": [{"input_len": 64}], "sense_grad": True},
     "curriculum.sense_grad reads the gradient norm"),
    ({}, {"levels": [{"input_len": 64}], "sense_grad": {"windw": 5}},
     "curriculum.sense_grad: unknown key 'windw'"),
])
def test_trl_settings_the_curriculum_cannot_use_are_refused(tiny_model, long_corpus, tmp_path,
                                                           settings, block, message):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from axolotl_curriculum import attach

    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, max_length=128, report_to=[],
                     use_cpu=True, **{"packing": False, **settings})
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args,
                         train_dataset=load_dataset("json", data_files=str(long_corpus), split="train"),
                         processing_class=AutoTokenizer.from_pretrained(tiny_model))
    with pytest.raises(ValueError, match=message):
        attach(trainer, block)  # the plain dict of the YAML block

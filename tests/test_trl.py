"""The same curriculum in a plain TRL SFTTrainer script (examples/trl_sft.py), no Axolotl CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from axolotl_curriculum.demo import axolotl_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_trl_example_feeds_the_levels(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "trl_sft.py"), str(tmp_path)],
                          env=axolotl_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = [json.loads(l) for l in (tmp_path / "out" / "curriculum_log.jsonl").read_text().splitlines()]
    # the same level sequence the Axolotl e2e test asserts for this block
    expected = [0] * 10 + [1] * 10 + [2] * 10
    assert [r["level"] for r in recs] == expected
    previous = {0: 0, 1: 32, 2: 64}
    for r in recs:
        assert previous[r["level"]] < r["max_example_len"] <= r["input_len"]


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

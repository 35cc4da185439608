"""`axolotl-curriculum plan`: the table and files on the demo config; bad input exits 2 in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import yaml

from axolotl_curriculum.commands import cli
from axolotl_curriculum.testing import axolotl_env, base_config


def write(path, cfg):
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.e2e
@pytest.mark.axolotl_api
def test_plan_on_the_demo_config(tmp_path, tiny_model, long_corpus):
    config = write(tmp_path / "config.yml", base_config(tiny_model, long_corpus, tmp_path / "run"))
    proc = subprocess.run(["axolotl-curriculum", "plan", str(config), "--out", str(tmp_path / "plan")],
                          env=axolotl_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "level  input_len" in out and "compute:" in out
    assert (tmp_path / "run" / "prepared").is_dir()  # tokenized and saved as preprocess does
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert [lv["input_len"] for lv in plan["levels"]] == [32, 64, 128]
    assert [lv["steps"] for lv in plan["levels"]] == [10, 10, 10]
    assert plan["settings"]["rows"] == 400 and plan["total"]["exact"]
    assert plan["levels"][0]["rows_cut"] == 400  # every row of long_corpus is above 64 tokens
    assert plan["levels"][0]["examples_per_step"] == 2 * 128 / 32  # 2 full rows of 32-token pieces
    assert (tmp_path / "plan" / "plan.png").stat().st_size > 20_000

    no_block = base_config(tiny_model, long_corpus, tmp_path / "run", curriculum=None)
    config = write(tmp_path / "plain.yml", no_block)
    proc = subprocess.run([sys.executable, "-m", "axolotl_curriculum", "plan", str(config)],
                          env=axolotl_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pasted = yaml.safe_load(proc.stdout.split("would choose:\n", 1)[1])
    assert pasted == {"curriculum": {"levels": [{"input_len": 64, "max_steps": 9},
                                                {"input_len": 128}]}}


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "absent.yml", "absent.yml: no such file"),
    (lambda d: (d / "bad.yml").write_text("a: [1,\n") and d / "bad.yml", "not readable YAML"),
    (lambda d: (d / "list.yml").write_text("- 1\n") and d / "list.yml", "expected a mapping"),
    (lambda d: write(d / "nodata.yml", base_config(d, d / "gone.jsonl", d / "out")),
     "datasets[0].path: " ),
    (lambda d: write(d / "auto.yml", base_config(d, d, d / "out", curriculum={
        "levels": "auto", "auto": {"max_levels": 1}})), "curriculum.auto.max_levels: got 1"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, make, message):
    assert cli.main(["plan", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("axolotl-curriculum plan: error: ") and message in err[0]


def test_bad_input_through_the_console_script(tmp_path):
    proc = subprocess.run(["axolotl-curriculum", "plan", str(tmp_path / "nope.yml")],
                          env=axolotl_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"axolotl-curriculum plan: error: config {tmp_path / 'nope.yml'}: "
                                   "no such file")


def test_report_is_dispatched(monkeypatch):
    calls = []
    fake = types.ModuleType("axolotl_curriculum.commands.report")
    fake.run = lambda output_dir, out: calls.append((output_dir, out)) or 0
    monkeypatch.setitem(sys.modules, "axolotl_curriculum.commands.report", fake)
    assert cli.main(["report", "some/run", "--out", "figs"]) == 0
    assert calls == [("some/run", "figs")]


def test_report_bad_input_is_the_same_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "gone")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"axolotl-curriculum report: error: output dir {tmp_path / 'gone'} does not exist"]


CFG = {"micro_batch_size": 2, "sequence_len": 128, "gradient_accumulation_steps": 3}


@pytest.mark.parametrize("overrides, want", [
    ({}, {"batch_size": 2, "packed": False, "capacity": 128}),
    ({"sample_packing": True}, {"batch_size": 2, "packed": True, "capacity": 128}),
    ({"sample_packing": True, "attn_supports_packing": True},
     {"batch_size": 1, "packed": True, "capacity": 256}),
    ({"sample_packing": True, "attn_supports_packing": True, "multipack_real_batches": True},
     {"batch_size": 2, "packed": True, "capacity": 128}),
    ({"sample_packing": True, "pretraining_dataset": "some/corpus"},
     {"batch_size": 2, "packed": False, "capacity": 128}),
])
def test_run_settings_follow_axolotls_micro_batch(overrides, want):
    """The one reading of the config that both `plan` and the plugin's level check build on."""
    from axolotl.utils.dict import DictDefault

    from axolotl_curriculum.integrations.settings import run_settings

    got = run_settings(DictDefault({**CFG, **overrides}))
    assert got == {**want, "world_size": 1, "grad_accum": 3, "bin_size": 200,
                   "truncate_excess": False, "sequence_len": 128}
    cfg = DictDefault({**CFG, **overrides, "world_size": 4, "excess_length_strategy": "truncate"})
    assert run_settings(cfg)["world_size"] == 4 and run_settings(cfg, world_size=2)["world_size"] == 2
    assert run_settings(cfg)["truncate_excess"] is True

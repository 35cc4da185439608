"""Every example config passes Axolotl's own validation with the plugin (no model is loaded)."""

from pathlib import Path

import pytest
import torch
import yaml

from axolotl_curriculum import Curriculum

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "example_configs").glob("*.yml"))
GPU = {"bf16": True, "fp8": False, "tf32": True, "n_gpu": 8, "compute_capability": "sm_90"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_validates(path, monkeypatch):
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    monkeypatch.chdir(ROOT)  # deepspeed json paths are relative to the repo
    cfg = DictDefault(yaml.safe_load(path.read_text()))
    prepare_plugins(cfg)
    out = validate_config(cfg, capabilities=GPU,
                          env_capabilities={"torch_version": torch.__version__.split("+")[0]})
    curriculum = Curriculum.model_validate(out.curriculum)
    assert curriculum.input_lens[-1] == out.sequence_len
    assert "axolotl_curriculum.CurriculumPlugin" in out.plugins


"""A first-time user's config mistakes: each is a clear error (or one warning line), never silence.

Through Axolotl's own config loading (`prepare_plugins` + `validate_config`, as `load_cfg` runs
them), the real `axolotl train` CLI and `axolotl-curriculum plan`; nothing of Axolotl is mocked.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from axolotl_curriculum.commands import cli
from axolotl_curriculum.core.config import Curriculum
from axolotl_curriculum.testing import base_config, write_instructions

ROOT = Path(__file__).resolve().parents[1]
CAPABILITIES = {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "compute_capability": None}
ENV = {"torch_version": "2.13.0"}
LEVELS = [{"input_len": 32, "max_steps": 60}, {"input_len": 64, "max_steps": 60}, {"input_len": 128}]


def validated(tiny_model, **overrides):
    """The config as `axolotl train` validates it (plugins registered on the raw dict first)."""
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    cfg = DictDefault(base_config(tiny_model, "data.jsonl", "out", **overrides))
    prepare_plugins(cfg)
    return validate_config(cfg, capabilities=CAPABILITIES, env_capabilities=ENV)


def stderr_lines(run) -> list[str]:
    return [line for line in run.proc.stderr.splitlines() if line.strip()]


# -- 14: a misspelled `curriculum:` key, and the plugin listed without a block --------------------

@pytest.mark.axolotl_api
def test_a_misspelled_curriculum_key_is_an_error(tiny_model):
    with pytest.raises(ValueError, match=r"^unknown key 'curriculm'; did you mean 'curriculum'\?$"):
        validated(tiny_model, curriculum=None, curriculm={"levels": LEVELS})
    # Axolotl's own key that starts alike is not taken for one
    assert validated(tiny_model, curriculum_sampling=True).curriculum is not None


@pytest.mark.axolotl_api
def test_the_plugin_without_a_block_warns_once(tiny_model, caplog):
    with caplog.at_level(logging.WARNING, logger="axolotl_curriculum"):
        validated(tiny_model, curriculum=None)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("axolotl_curriculum")]
    assert len(said) == 1 and "training runs without a curriculum" in said[0], said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="axolotl_curriculum"):
        validated(tiny_model)  # with a block: nothing to say
    assert not [r for r in caplog.records if r.name.startswith("axolotl_curriculum")]


# -- 15: levels that take the whole run --------------------------------------------------------

def test_check_run_length_names_both_numbers_and_the_fix():
    block = Curriculum.model_validate({"levels": LEVELS})
    with pytest.raises(ValueError) as err:
        block.check_run_length(100)
    assert str(err.value) == (
        "curriculum.levels: the levels before the last take 120 steps, the run's max_steps is 100: "
        "the last level (input_len 128) would never train; lower the levels' max_steps or raise "
        "max_steps")
    with pytest.raises(ValueError, match="the run's max_steps is 120"):  # 0 steps left: too
        block.check_run_length(120)
    assert block.check_run_length(121) is None
    with pytest.raises(ValueError, match=r"the run has 90 \(from num_epochs\).*raise num_epochs"):
        block.check_run_length(90, length_from="num_epochs")
    gated = Curriculum.model_validate({"levels": LEVELS, "sense_grad": True})
    assert "with sense_grad they are caps" in gated.check_run_length(100)
    assert Curriculum.model_validate({"levels": "auto"}).check_run_length(1) is None


@pytest.mark.axolotl_api
def test_levels_longer_than_max_steps_fail_axolotl_validation(tiny_model):
    with pytest.raises(ValueError, match=r"the levels before the last take 120 steps, the run's "
                                         r"max_steps is 100: the last level \(input_len 128\)"):
        validated(tiny_model, max_steps=100, curriculum={"levels": LEVELS})
    validated(tiny_model, max_steps=121, curriculum={"levels": LEVELS})
    # with sense_grad the max_steps are caps: no error (the run warns before step 1,
    # tests/test_admission.py)
    validated(tiny_model, max_steps=100, max_grad_norm=1.0,
              curriculum={"levels": LEVELS, "sense_grad": True})


# -- 17: the plugin's message is the last line; Axolotl's own errors keep their traceback ----------

@pytest.mark.axolotl_api
def test_only_curriculum_errors_lose_their_traceback(tiny_model, capsys):
    from axolotl_curriculum.integrations.plugin import _excepthook

    seen = []
    hook = _excepthook(lambda *exc: seen.append(exc[1]))
    for overrides in ({"micro_batch_size": "two"},  # Axolotl's own key: its traceback stays
                      {"curriculum": {"levels": [{"input_len": 1}]}}):
        with pytest.raises(ValueError) as err:
            validated(tiny_model, **overrides)
        hook(type(err.value), err.value, err.value.__traceback__)
    assert seen and "micro_batch_size" in str(seen[0]) and len(seen) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["axolotl-curriculum: error: curriculum.levels[0].input_len: got 1; use an "
                   "integer >= 2"]


@pytest.mark.e2e
@pytest.mark.axolotl_api
def test_axolotl_train_ends_on_the_plugins_line(axolotl_train):
    """In the process that reads the config the plugin's line is the last one, with no
    traceback. `axolotl train` execs `accelerate launch`, which prints its own
    CalledProcessError after the child; the plugin cannot run there (docs/design.md)."""
    run = axolotl_train(check=False,
                        curriculum={"levels": [{"input_len": "x", "max_steps": 10}, {"input_len": 128}]})
    assert run.proc.returncode != 0
    assert stderr_lines(run)[-1] == ("axolotl-curriculum: error: curriculum.levels[0].input_len: "
                                     "got 'x'; use an integer >= 2")
    assert "Traceback" not in run.proc.stderr
    # 14 through the default launcher: the misspelled key fails the run, named once, and the
    # child prints no traceback of its own (the one left is accelerate's)
    run = axolotl_train(launcher_args=(), check=False, curriculum=None,
                        curriculm={"levels": LEVELS})
    assert run.proc.returncode != 0
    line = "axolotl-curriculum: error: unknown key 'curriculm'; did you mean 'curriculum'?"
    assert stderr_lines(run).count(line) == 1
    child = run.proc.stderr.split(line)[0]
    assert "Traceback" not in child and "training runs without a curriculum" not in run.output


# -- 16: a level no row can fill fails before the model loads ------------------------------------

PROBE = '''
from pathlib import Path
from axolotl.integrations.base import BasePlugin


class LoadProbe(BasePlugin):
    def pre_model_load(self, cfg):
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.output_dir) / "model_load_started").write_text("yes")
'''


@pytest.mark.e2e
@pytest.mark.axolotl_api
def test_a_level_no_row_fills_fails_before_the_model_loads(axolotl_train, tmp_path):
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "load_probe.py").write_text(PROBE)
    data = write_instructions(tmp_path / "alpaca.jsonl", n=120, seed=3)
    run = axolotl_train(
        check=False,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path / "probe"),
                                            os.environ.get("PYTHONPATH", "")])},
        plugins=["axolotl_curriculum.CurriculumPlugin", "load_probe.LoadProbe"],
        datasets=[{"path": str(data), "type": "alpaca", "ds_type": "json"}], train_on_inputs=False,
        # the alpaca prompt alone is longer than 8 tokens: no row keeps an answer token
        curriculum={"prompt_cut": "none",
                    "levels": [{"input_len": 8, "max_steps": 10}, {"input_len": 128}]})
    assert run.proc.returncode != 0
    assert (run.out / "prepared").is_dir()  # the data was loaded (and checked) ...
    assert not (run.out / "model_load_started").exists()  # ... and the model was not
    last = stderr_lines(run)[-1]
    assert last.startswith("axolotl-curriculum: error: curriculum.levels[0].input_len: 0 examples "
                           "keep a trainable token when cut to 8"), last


# -- 18: a curriculum block without the plugin ---------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"plugins": None}, "curriculum: is ignored by axolotl train: plugins: does not list the "
                        "plugin; add `plugins: [axolotl_curriculum.CurriculumPlugin]`"),
    ({"plugins": ["some_other.Plugin"]}, "curriculum: is ignored by axolotl train"),
    ({"curriculum": None, "curriculm": {"levels": LEVELS}},
     "unknown key 'curriculm'; did you mean 'curriculum'?"),
])
def test_plan_reports_a_block_axolotl_would_ignore(tmp_path, capsys, overrides, message):
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(base_config(tmp_path, tmp_path, tmp_path / "out", **overrides)))
    assert cli.main(["plan", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"axolotl-curriculum plan: error: config {config}: ")
    assert message in err[0]


def test_quick_start_says_the_plugins_entry_is_required():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "without it Axolotl ignores `curriculum:`" in quick_start

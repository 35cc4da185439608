"""The run's checkpoint state: what a resume keeps, refuses or starts over."""

import pytest

from axolotl_curriculum.run.run import CurriculumRun

BLOCK = {"levels": [{"input_len": 8, "max_steps": 5}, {"input_len": 16}],
         "sense_grad": {"min_steps": 2}}


def saved_run(**extra):
    run = CurriculumRun({**BLOCK, **extra}, "/nonexistent")
    run.timeline.switch(3, 1)  # a decision: level 1 from step 4
    run.ledger.totals = {0: {"steps": 3, "examples": 30}}
    return run.state_dict(global_step=6)


@pytest.mark.parametrize("extra", [{"preflight": True}, {"restart_on_resume": True}])
def test_settings_that_change_nothing_fed_keep_the_progress(extra):
    run = CurriculumRun({**BLOCK, **extra}, "/nonexistent")
    run.load_state_dict(saved_run(), global_step=6)
    assert run.timeline.level_at(3) == 1  # the decision survived
    assert run.ledger.totals == {0: {"steps": 3, "examples": 30}}  # and the summary so far


def test_a_changed_level_is_refused_or_restarted():
    changed = {"levels": [{"input_len": 8, "max_steps": 7}, {"input_len": 16}]}
    with pytest.raises(ValueError, match="trained with other levels; .*restart_on_resume: true"):
        CurriculumRun({**BLOCK, **changed}, "/nonexistent").load_state_dict(saved_run(), 6)
    run = CurriculumRun({**BLOCK, **changed, "restart_on_resume": True}, "/nonexistent")
    run.load_state_dict(saved_run(), 6)
    assert [run.timeline.level_at(s) for s in (5, 6, 12, 13)] == [1, 0, 0, 1]

from axolotl_curriculum.schedule import Timeline


def test_step_schedule_switches_exactly():
    tl = Timeline.from_max_steps([8, 16, 32], [3, 2, None])
    assert [tl.level_at(s) for s in range(8)] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert [tl.input_len_at(s) for s in (0, 3, 5, 10_000)] == [8, 16, 32, 32]


def test_single_level_runs_forever():
    tl = Timeline.from_max_steps([64], [None])
    assert tl.level_at(0) == tl.level_at(10**9) == 0

from axolotl_curriculum.core.schedule import Timeline


def test_step_schedule_switches_exactly():
    tl = Timeline([8, 16, 32], [3, 2, None])
    assert [tl.level_at(s) for s in range(8)] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert [tl.input_lens[tl.level_at(s)] for s in (0, 3, 5, 10_000)] == [8, 16, 32, 32]


def test_single_level_runs_forever():
    tl = Timeline([64], [None])
    assert tl.level_at(0) == tl.level_at(10**9) == 0


def test_decisions_append_segments_and_caps_still_apply():
    tl = Timeline([8, 16, 32], [10, 10, None])
    tl.switch(4, 1)                     # the gate advanced early
    assert [tl.level_at(s) for s in (3, 4, 13, 14)] == [0, 1, 1, 2]  # level 1 capped at 10 steps
    assert tl.position(13) == (1, 4) and tl.position(14) == (2, 14)


def test_backoff_segment_returns_after_its_cap():
    tl = Timeline([8, 16, 32], [10, 10, None])
    tl.switch(12, 0, cap=3)             # back to level 0 for 3 steps
    assert [tl.level_at(s) for s in (9, 10, 11, 12, 14, 15, 24, 25)] == [0, 1, 1, 0, 0, 1, 1, 2]


def test_round_trip():
    tl = Timeline([8, 16], [5, None])
    tl.switch(3, 1)
    other = Timeline([8, 16], [5, None])
    other.load_state_dict(tl.state_dict())
    assert other.segments == tl.segments

"""The rules of the `curriculum:` block, one small function each, named for the rule.

`Curriculum` (config.py) checks the keys, then runs `BLOCK_RULES` on its own copy of the raw
block, in the order listed; `check_levels` runs `LEVEL_RULES` on each level in turn. The order is
part of the contract: a block with several mistakes always reports the same one first. Each rule
raises `CurriculumError` naming the key and the fix; a few also fill in what the YAML
abbreviates (`sense_grad: true`, a difficulty's name, a ramp) so the later rules and pydantic
see it in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .blocks import MIN_INPUT_LEN, Auto, Difficulty, Level, SenseGrad
from .checks import check_bool, check_choice, check_float, check_int, check_keys
from .errors import CurriculumError
from .probe_blocks import Probes, SenseEval
from .ramp import MAX_RAMP_LEVELS, SHAPES, ramp_levels

TRUNCATIONS = ("head", "segment", "filter", "split")
PROMPT_CUTS = ("left", "none")
BUDGETS = ("tokens", "examples")
RAMP_KEYS = ("from", "to", "steps", "step_size", "shape", "degree", "rope_theta")


def check_sense_grad(data: dict) -> None:
    """`sense_grad: true` (or {}) turns the gate on with its defaults; false or null leave it
    off, so the later rules can ask `data.get("sense_grad") is not None`."""
    sense = data.get("sense_grad")
    if sense is True or sense == {}:
        data["sense_grad"] = {}
    elif sense is False or sense is None:
        data.pop("sense_grad", None)
    elif isinstance(sense, dict):
        SenseGrad.validate_raw("curriculum.sense_grad", sense)
    elif not isinstance(sense, SenseGrad):
        raise CurriculumError(
            f"curriculum.sense_grad: got {sense!r}; use true, or a mapping of its settings"
        )


def check_probes(data: dict) -> None:
    """`probes:` (probe_blocks.py); `sense_eval:` decides on them, and a ramp's length follows
    the steps, not a gate."""
    for key in ("probes", "sense_eval"):
        if data.get(key) is None or data.get(key) is False:
            data.pop(key, None)
    probes = data.get("probes")
    if isinstance(probes, Probes):
        probes = probes.model_dump(exclude_none=True)
    elif probes is not None:
        data["probes"] = probes = Probes.validate_raw(probes)
    sense = data.get("sense_eval")
    if sense is None or isinstance(sense, SenseEval):
        return
    data["sense_eval"] = SenseEval.validate_raw(sense, probes)
    if isinstance(data.get("levels"), dict) or data.get("ramp") is not None:
        raise CurriculumError("curriculum.sense_eval: a ramp's length follows the steps, not the "
                              "gate; remove sense_eval (probes still measure), or list levels")


def check_difficulty(data: dict) -> None:
    """`difficulty: rarity` is short for {score: rarity}: checked, and written out in full."""
    diff = data.get("difficulty")
    if diff is not None and not isinstance(diff, Difficulty):
        data["difficulty"] = Difficulty.validate_raw(diff)


def check_switches(data: dict) -> None:
    """true or false only: pydantic would read "no" or 0 as false without a word."""
    check_bool("curriculum.restart_on_resume", data.get("restart_on_resume", False))
    if data.get("preflight") is not None:
        check_bool("curriculum.preflight", data["preflight"],
                   " (leave it out: on when training on a GPU)")


def check_cut_settings(data: dict) -> None:
    """How rows longer than a level are cut, and what a level's batch holds (docs/cuts.md)."""
    check_choice("curriculum.truncation", data.get("truncation"), TRUNCATIONS)
    check_choice("curriculum.prompt_cut", data.get("prompt_cut"), PROMPT_CUTS)
    check_choice("curriculum.budget", data.get("budget"), BUDGETS)
    if "segment_window" in data:
        check_float("curriculum.segment_window", data["segment_window"], 0.0, 1.0, low_open=True)
    check_int("curriculum.keep_prompt_head", data.get("keep_prompt_head"), 0)


def _check_share(where: str, value: Any) -> None:
    """A share of a step's tokens: 0 keeps none; 1 would leave the level no tokens of its own."""
    check_float(where, value, 0.0, 1.0)
    if value == 1:
        raise CurriculumError(f"{where}: got 1; use a share below 1 (the level needs tokens of "
                              "its own), e.g. 0.25")


def check_short_share(data: dict) -> None:
    """`short_share` keeps short examples in every later level's steps (docs/long-context.md)."""
    if data.get("short_share") is not None:
        _check_share("curriculum.short_share", data["short_share"])
        if data.get("levels") == "auto" and data["short_share"] > 0:
            raise CurriculumError("curriculum.short_share: levels: auto chooses its levels from "
                                  "the data; write the levels out to keep short data in them")


def check_boundaries(data: dict) -> None:
    """Segment ends are matched as token texts: a list of them, none empty."""
    marks = data.get("boundaries")
    if marks is not None and (not isinstance(marks, list) or not marks
                              or not all(isinstance(m, str) and m for m in marks)):
        raise CurriculumError(f"curriculum.boundaries: got {marks!r}; use a non-empty list of "
                              "strings, e.g. ['.', '!', '?', '\\n']")


def expand_ramp(data: dict) -> None:
    """`levels: {ramp: {...}}` becomes the levels it passes through (ramp.py), so everything after
    treats a ramp as levels; the ramp is kept in `ramp`, and a dumped block (the levels listed
    beside their ramp) must list exactly those levels."""
    levels, ramp = data.get("levels"), data.get("ramp")
    if not isinstance(levels, dict) and ramp is None:
        return
    if isinstance(levels, dict):
        check_keys("curriculum.levels", levels, ["ramp"])
        ramp = levels.get("ramp")
    _check_ramp(ramp)
    if data.get("sense_grad") is not None:
        raise CurriculumError("curriculum.sense_grad: a ramp's length follows the steps, not the "
                              "gate; remove sense_grad, or list levels instead of a ramp")
    expanded = ramp_levels(ramp)
    if len(expanded) > MAX_RAMP_LEVELS:
        raise CurriculumError(f"curriculum.levels.ramp.step_size: the ramp passes through "
                              f"{len(expanded)} lengths, more than {MAX_RAMP_LEVELS}; raise "
                              "step_size")
    if isinstance(levels, list) and [
            lv.model_dump(exclude_none=True) if isinstance(lv, Level)
            else {k: v for k, v in lv.items() if v is not None} for lv in levels] != expanded:
        raise CurriculumError("curriculum.ramp: set a ramp as levels: {ramp: {...}}, not beside a "
                              "list of levels")
    data["levels"], data["ramp"] = expanded, dict(ramp)


def _check_ramp(ramp: Any) -> None:
    """A ramp grows from `from` to `to` over `steps`; its shape decides the lengths between."""
    where = "curriculum.levels.ramp"
    example = "e.g. {ramp: {from: 64, to: 4096, steps: 2000, step_size: 64, shape: linear}}"
    if not isinstance(ramp, dict):
        raise CurriculumError(f"{where}: got {ramp!r}; use a mapping, {example}")
    check_keys(where, ramp, list(RAMP_KEYS))
    for key in ("from", "to", "steps"):
        if key not in ramp:
            raise CurriculumError(f"{where}.{key}: missing; {example}")
    check_int(f"{where}.from", ramp["from"], MIN_INPUT_LEN)
    check_int(f"{where}.to", ramp["to"], MIN_INPUT_LEN)
    if ramp["from"] >= ramp["to"]:
        raise CurriculumError(f"{where}.from: got {ramp['from']}, not below to ({ramp['to']}); "
                              "a ramp grows: use from < to")
    check_int(f"{where}.steps", ramp["steps"], 1)
    check_int(f"{where}.step_size", ramp.get("step_size"), 1)
    check_choice(f"{where}.shape", ramp.get("shape"), SHAPES)
    if "degree" in ramp:
        if ramp.get("shape") != "root":
            raise CurriculumError(f"{where}.degree: only used with shape: root; remove it")
        check_float(f"{where}.degree", ramp["degree"], 1.0)
    if ramp.get("rope_theta") is not None:
        from .rope import check_rope

        check_rope(where, ramp["rope_theta"], None)


def check_auto(data: dict) -> None:
    """`auto:` tunes how `levels: auto` chooses the levels; beside listed levels it does nothing."""
    auto = data.get("auto")
    if auto is None:
        return
    if data.get("levels") != "auto":
        raise CurriculumError("curriculum.auto: only used with `levels: auto`; remove it or "
                              "set levels: auto")
    Auto.validate_raw("curriculum.auto", auto.model_dump() if isinstance(auto, Auto) else auto)


def check_levels(data: dict) -> None:
    """Each level through `LEVEL_RULES`, all of them before the next level: the first mistake
    reported is the earliest level's. `levels: auto` is chosen when training starts (auto.py)."""
    levels = data.get("levels")
    if levels == "auto":
        return
    if not isinstance(levels, list) or not levels:
        raise CurriculumError(
            "curriculum.levels: give a non-empty list of levels, e.g. "
            "[{input_len: 256, max_steps: 100}, {input_len: 1024}]"
        )
    before: list[dict] = []
    for i, level in enumerate(levels):
        where = f"curriculum.levels[{i}]"
        at = LevelAt(where, _as_mapping(where, level), tuple(before), i == len(levels) - 1, data)
        for rule in LEVEL_RULES:
            rule(at)
        before.append(at.level)


def _as_mapping(where: str, level: Any) -> dict:
    """A level as the rules read it: a mapping, as written or dumped from a `Level`."""
    if isinstance(level, Level):
        return level.model_dump(exclude_none=True)
    if not isinstance(level, dict):
        raise CurriculumError(f"{where}: expected a mapping like {{input_len: 256}}, got {level!r}")
    return level


BLOCK_RULES = (check_sense_grad, check_probes, check_difficulty, check_switches, check_cut_settings,
               check_boundaries, check_short_share, expand_ramp, check_auto, check_levels)


# The rules of one level. Growth and admission compare a level with the one before it, and the
# steps rules need the block's sense_grad, so each rule gets the level with that context.


@dataclass(frozen=True)
class LevelAt:
    """One level under check, with what its rules need from the block and the earlier levels."""

    where: str                  # curriculum.levels[i], the prefix of every message
    level: dict                 # the level as written
    before: tuple[dict, ...]    # the levels before it, already checked
    last: bool                  # the last level runs to the end and admits every example
    block: dict                 # the whole block, as the block's rules left it

    @property
    def previous_input_len(self) -> int | None:
        return self.before[-1]["input_len"] if self.before else None

    @property
    def previous_admit(self) -> float:
        """The share the level before admits (1 when it sets none); 0 before the first level."""
        if not self.before:
            return 0.0
        admit = self.before[-1].get("admit")
        return 1.0 if admit is None else admit


def check_level_keys(at: LevelAt) -> None:
    """A misspelt key (input_length) is named with the key it meant."""
    check_keys(at.where, at.level, list(Level.model_fields))


def check_input_len(at: LevelAt) -> None:
    """Every level needs its length; one token has no label to train on (MIN_INPUT_LEN)."""
    if "input_len" not in at.level:
        raise CurriculumError(f"{at.where}.input_len: missing; every level needs an input_len "
                              "(tokens kept per example)")
    check_int(f"{at.where}.input_len", at.level["input_len"], MIN_INPUT_LEN)


def check_admit(at: LevelAt) -> None:
    """`admit` takes the easiest share of the examples, so it needs a score to rank them; shares
    never shrink, and the last level, the task itself, takes every example."""
    admit = at.level.get("admit")
    if admit is None:
        return
    if at.block.get("difficulty") is None:
        raise CurriculumError(f"{at.where}.admit: needs curriculum.difficulty (the score that "
                              "says which examples are easiest); add e.g. `difficulty: "
                              "rarity`, or remove admit")
    check_float(f"{at.where}.admit", admit, 0.0, 1.0, low_open=True)
    if admit < at.previous_admit:
        raise CurriculumError(f"{at.where}.admit: got {admit}; admission shares may not shrink, "
                              f"use at least {at.previous_admit} (the previous level's)")
    if admit < 1 and at.last:
        raise CurriculumError(f"{at.where}.admit: the last level admits every example; remove "
                              "admit (or set 1)")


def check_levels_grow(at: LevelAt) -> None:
    """Each level is longer than the one before, or as long while admitting more examples: a
    level that adds nothing would only spend steps."""
    input_len, previous = at.level["input_len"], at.previous_input_len
    admit = at.level.get("admit")
    grows = (1.0 if admit is None else admit) > at.previous_admit
    if previous is not None and (input_len < previous or (input_len == previous and not grows)):
        raise CurriculumError(
            f"{at.where}.input_len: got {input_len}; levels must grow, use a value above "
            f"{previous} (the previous level's input_len), or the same input_len with a "
            "larger admit"
        )


def check_level_truncation(at: LevelAt) -> None:
    """Each level may cut its rows its own way (default: the block's truncation)."""
    check_choice(f"{at.where}.truncation", at.level.get("truncation"), TRUNCATIONS)


def check_level_rope(at: LevelAt) -> None:
    """A level's RoPE keys, against what transformers can compute (imported only when used)."""
    theta, scaling = at.level.get("rope_theta"), at.level.get("rope_scaling")
    if theta is not None or scaling is not None:
        from .rope import check_rope

        check_rope(at.where, theta, scaling)


def check_level_steps(at: LevelAt) -> None:
    """Every level but the last needs max_steps: without it the level would never end."""
    check_int(f"{at.where}.max_steps", at.level.get("max_steps"), 1)
    check_int(f"{at.where}.min_steps", at.level.get("min_steps"), 1)
    if at.level.get("max_steps") is None and not at.last:
        raise CurriculumError(f"{at.where}.max_steps: missing; every level but the last needs "
                              "max_steps (optimizer steps spent in it, at most with sense_grad)")


def check_min_steps(at: LevelAt) -> None:
    """min_steps is the gate's floor: meaningless without sense_grad, impossible above the cap."""
    sense = at.block.get("sense_grad")
    sense = sense.model_dump() if isinstance(sense, SenseGrad) else sense
    low, high = at.level.get("min_steps"), at.level.get("max_steps")
    if low is not None and sense is None and at.block.get("sense_eval") is None:
        raise CurriculumError(f"{at.where}.min_steps: only means something with sense_grad or "
                              "sense_eval; add `sense_grad: true` or remove it")
    if sense is None or high is None:
        return
    if low is None:  # sense_grad.min_steps, or its default
        low = sense.get("min_steps") or SenseGrad().min_steps
    if low > high:
        raise CurriculumError(
            f"{at.where}.min_steps: {low} is above max_steps {high}; "
            "lower min_steps (or sense_grad.min_steps) or raise max_steps"
        )


def check_level_short_share(at: LevelAt) -> None:
    """The first level is the short data the later levels keep: it cannot keep a share of
    itself."""
    share = at.level.get("short_share")
    if share is None:
        return
    _check_share(f"{at.where}.short_share", share)
    if not at.before and share > 0:
        raise CurriculumError(f"{at.where}.short_share: the first level is the short data the "
                              "later levels keep; remove it here and set it on a later level "
                              "(or curriculum.short_share for all of them)")


LEVEL_RULES = (check_level_keys, check_input_len, check_admit, check_levels_grow,
               check_level_truncation, check_level_rope, check_level_steps, check_min_steps,
               check_level_short_share)

"""The `curriculum:` block: levels of input length, validated with messages a user can act on.

Pure pydantic, so the Axolotl plugin and plain transformers/TRL scripts share one contract.
Everything is checked on the raw YAML first, so each error names the exact key and the fix.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

MIN_INPUT_LEN = 2  # one token has nothing to predict: its label is never scored
TRUNCATIONS = ("head", "segment", "filter", "split")
PROMPT_CUTS = ("left", "none")
BUDGETS = ("tokens", "examples")


def _check_keys(where: str, data: dict, allowed: list[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(
                f"{where}: unknown key '{key}'; {hint}allowed keys: {', '.join(allowed)}"
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(where: str, value: Any, low: int) -> None:
    if value is not None and (not _is_int(value) or value < low):
        raise ValueError(f"{where}: got {value!r}; use an integer >= {low}")


def _check_choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise ValueError(f"{where}: got {value!r}; use one of {', '.join(choices)}")


def _check_float(where: str, value: Any, low: float, high: float = math.inf,
                 low_open: bool = False) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if low_open else value >= low) and value <= high)
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        bound += f" and <= {high}" if high != math.inf else ""
        raise ValueError(f"{where}: got {value!r}; use a number {bound}")


class SenseGrad(BaseModel):
    """SENSE_GRAD: advance a level only when gradient and loss statistics say training settled.

    Statistics are taken over the last `window` optimizer steps of the level, leaving out the
    first `settle_steps` after it began (a switch moves the gradient norm by itself).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    check_every: int = 10          # steps between decisions (the only host reads of statistics)
    window: int = 20               # steps the statistics look back
    settle_steps: int = 5          # steps after a switch left out of the statistics
    min_steps: int = 20            # default least steps per level (a level may set its own)
    max_grad_cv: float = 0.3       # grad-norm std / mean over the window must be at most this
    grad_spike_factor: float = 2.5  # a step's grad norm above this x its running mean is a spike
    loss_spike_factor: float = 1.5  # a step's loss above this x its running mean is a spike
    max_spikes: int = 0            # spikes allowed in the window
    max_loss_slope: float = 0.001  # loss trend (fraction of its mean per step) must be at most this
    ema_beta: float = 0.9          # weight of the past in the running means
    backoff: bool = False          # return to the previous level after spikes right after a switch
    backoff_spikes: int = 3        # spikes in the settle steps that trigger a back-off
    backoff_steps: int = 20        # steps spent back at the previous level (once per level)

    @classmethod
    def validate_raw(cls, where: str, data: dict) -> None:
        _check_keys(where, data, list(cls.model_fields))
        for key, low in _SENSE_GRAD_INT_MINIMA.items():
            _check_int(f"{where}.{key}", data.get(key), low)
        for key in ("max_grad_cv",):
            if key in data:
                _check_float(f"{where}.{key}", data[key], 0.0, low_open=True)
        for key in ("grad_spike_factor", "loss_spike_factor"):
            if key in data:
                _check_float(f"{where}.{key}", data[key], 1.0, low_open=True)
        if "max_loss_slope" in data:
            _check_float(f"{where}.max_loss_slope", data["max_loss_slope"], -1.0, 1.0)
        if "ema_beta" in data:
            _check_float(f"{where}.ema_beta", data["ema_beta"], 0.0, 0.999, low_open=True)
        if "backoff" in data and not isinstance(data["backoff"], bool):
            raise ValueError(f"{where}.backoff: got {data['backoff']!r}; use true or false")


_SENSE_GRAD_INT_MINIMA = {"check_every": 1, "window": 3, "settle_steps": 0, "min_steps": 1,
                          "max_spikes": 0, "backoff_spikes": 1, "backoff_steps": 1}


class Auto(BaseModel):
    """Knobs of `levels: auto` (docs/auto.md says how the ladder is chosen and why)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_input_len: int = 64      # the first level's input_len; each next level doubles it
    max_levels: int = 4          # levels at most, the last (sequence_len) included
    warmup_share: float = 0.3    # share of the run's steps spent below the last level

    @classmethod
    def validate_raw(cls, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: got {data!r}; use a mapping, e.g. {{max_levels: 3}}")
        _check_keys(where, data, list(cls.model_fields))
        _check_int(f"{where}.min_input_len", data.get("min_input_len"), MIN_INPUT_LEN)
        _check_int(f"{where}.max_levels", data.get("max_levels"), 2)
        if "warmup_share" in data:
            _check_float(f"{where}.warmup_share", data["warmup_share"], 0.0, 0.9, low_open=True)


MODEL_SCORES = ("loss", "ifd")  # a pass of the model being trained, before step 1
SCORES = ("length", "segments", "compression", "rarity", "random", "column", *MODEL_SCORES)


class Difficulty(BaseModel):
    """DIFFICULTY: the score that orders examples, easiest (lowest) first (docs/difficulty.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score: str
    column: str | None = None      # score: column: the dataset column that holds the score
    seed: int = 0                  # score: random: the draw
    rescore: bool = False          # model scores: re-score with the current model at each switch
    sample: float | None = None    # model scores: the share of the training set scored
    cache: bool = True             # keep the scores next to the prepared dataset (score_cache.py)

    @classmethod
    def validate_raw(cls, data: Any) -> dict:
        where = "curriculum.difficulty"
        if isinstance(data, str):
            data = {"score": data}
        if not isinstance(data, dict):
            raise ValueError(f"{where}: got {data!r}; use a score's name, e.g. `difficulty: "
                             "rarity`, or a mapping like {score: column, column: my_score}")
        _check_keys(where, data, list(cls.model_fields))
        score = data.get("score")
        _check_choice(f"{where}.score", score, SCORES)
        if score is None:
            raise ValueError(f"{where}.score: missing; use one of {', '.join(SCORES)}")
        if score == "column" and not isinstance(data.get("column"), str):
            raise ValueError(f"{where}.column: score: column needs the column's name, e.g. "
                             "{score: column, column: my_score}")
        if data.get("column") is not None and score != "column":
            raise ValueError(f"{where}.column: only used with score: column; remove it")
        if "rescore" in data and not isinstance(data["rescore"], bool):
            raise ValueError(f"{where}.rescore: got {data['rescore']!r}; use true or false")
        if data.get("rescore") and score not in MODEL_SCORES:
            raise ValueError(f"{where}.rescore: re-scoring needs a model score (loss or ifd); "
                             f"{score!r} does not change as the model trains; remove rescore")
        if "sample" in data:
            if score not in MODEL_SCORES:
                raise ValueError(f"{where}.sample: only model scores (loss, ifd) sample the data; "
                                 "remove sample")
            _check_float(f"{where}.sample", data["sample"], 0.0, 1.0, low_open=True)
        _check_int(f"{where}.seed", data.get("seed"), 0)
        if "cache" in data and not isinstance(data["cache"], bool):
            raise ValueError(f"{where}.cache: got {data['cache']!r}; use true or false (false "
                             "recomputes the scores every run)")
        return data


RAMP_KEYS = ("from", "to", "steps", "step_size", "shape", "degree")


def _ramp(levels: Any, ramp: Any, sense: Any) -> tuple[list[dict], dict]:
    """`levels: {ramp: {...}}` checked and expanded into the levels it passes through (ramp.py);
    a dumped block (levels listed beside its ramp) must list exactly those levels."""
    from .ramp import MAX_RAMP_LEVELS, SHAPES, ramp_levels

    where = "curriculum.levels.ramp"
    example = "e.g. {ramp: {from: 64, to: 4096, steps: 2000, step_size: 64, shape: linear}}"
    if isinstance(levels, dict):
        _check_keys("curriculum.levels", levels, ["ramp"])
        ramp = levels.get("ramp")
    if not isinstance(ramp, dict):
        raise ValueError(f"{where}: got {ramp!r}; use a mapping, {example}")
    _check_keys(where, ramp, list(RAMP_KEYS))
    for key in ("from", "to", "steps"):
        if key not in ramp:
            raise ValueError(f"{where}.{key}: missing; {example}")
    _check_int(f"{where}.from", ramp["from"], MIN_INPUT_LEN)
    _check_int(f"{where}.to", ramp["to"], MIN_INPUT_LEN)
    if ramp["from"] >= ramp["to"]:
        raise ValueError(f"{where}.from: got {ramp['from']}, not below to ({ramp['to']}); a ramp "
                         "grows: use from < to")
    _check_int(f"{where}.steps", ramp["steps"], 1)
    _check_int(f"{where}.step_size", ramp.get("step_size"), 1)
    _check_choice(f"{where}.shape", ramp.get("shape"), SHAPES)
    if "degree" in ramp:
        if ramp.get("shape") != "root":
            raise ValueError(f"{where}.degree: only used with shape: root; remove it")
        _check_float(f"{where}.degree", ramp["degree"], 1.0)
    if sense is not None:
        raise ValueError("curriculum.sense_grad: a ramp's length follows the steps, not the gate; "
                         "remove sense_grad, or list levels instead of a ramp")
    expanded = ramp_levels(ramp)
    if len(expanded) > MAX_RAMP_LEVELS:
        raise ValueError(f"{where}.step_size: the ramp passes through {len(expanded)} lengths, "
                         f"more than {MAX_RAMP_LEVELS}; raise step_size")
    if isinstance(levels, list) and [
            lv.model_dump(exclude_none=True) if isinstance(lv, Level)
            else {k: v for k, v in lv.items() if v is not None} for lv in levels] != expanded:
        raise ValueError("curriculum.ramp: set a ramp as levels: {ramp: {...}}, not beside a list "
                         "of levels")
    return expanded, dict(ramp)


class Level(BaseModel):
    """LEVEL: one stage of training; every example is cut to at most `input_len` tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_len: int
    max_steps: int | None = None   # steps in this level at most (the last level runs to the end)
    min_steps: int | None = None   # with sense_grad: steps in this level at least
    truncation: str | None = None  # this level's cut mode (default: curriculum.truncation)
    admit: float | None = None     # with difficulty: the easiest share of examples admitted
    rope_theta: float | None = None  # the RoPE base from this level on (rope.py)
    rope_scaling: dict | None = None  # transformers' RoPE scaling from this level on, e.g. yarn


class Curriculum(BaseModel):
    """Staged input lengths, shortest level first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: list[Level] | Literal["auto"]
    difficulty: Difficulty | None = None  # which score orders the examples (levels' admit)
    auto: Auto | None = None         # knobs of levels: auto
    sense_grad: SenseGrad | None = None
    restart_on_resume: bool = False  # resuming under a changed block starts the levels over
    truncation: str = "head"         # head | segment | filter (see docs/cuts.md)
    segment_window: float = 0.5      # segment: a boundary must lie in this last fraction of input_len
    boundaries: list[str] | None = None  # segment: token text that ends a segment
    prompt_cut: str = "left"         # left: keep the answer, shorten the prompt | none: skip the row
    keep_prompt_head: int = 0        # left: tokens kept from the prompt's start (the instruction)
    budget: str | None = None        # tokens | examples; default: tokens if packed, else examples
    preflight: bool | None = None    # full-length forward+backward before training; default: on GPU
    ramp: dict | None = None         # `levels: {ramp: ...}` as written; `levels` holds its steps

    @model_validator(mode="before")
    @classmethod
    def _validate_raw(cls, data: Any) -> Any:
        if isinstance(data, Curriculum):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"curriculum: expected a mapping with a 'levels' list, got {data!r}")
        _check_keys("curriculum", data, list(cls.model_fields))
        data = dict(data)
        sense = data.get("sense_grad")
        if sense is True or sense == {}:
            data["sense_grad"] = sense = {}
        elif sense is False or sense is None:
            data.pop("sense_grad", None)
            sense = None
        elif isinstance(sense, SenseGrad):
            sense = sense.model_dump()
        elif isinstance(sense, dict):
            SenseGrad.validate_raw("curriculum.sense_grad", sense)
        else:
            raise ValueError(
                f"curriculum.sense_grad: got {sense!r}; use true, or a mapping of its settings"
            )
        if data.get("difficulty") is not None:
            diff = data["difficulty"]
            data["difficulty"] = (diff if isinstance(diff, Difficulty)
                                  else Difficulty.validate_raw(diff))
        restart = data.get("restart_on_resume", False)
        if not isinstance(restart, bool):
            raise ValueError(f"curriculum.restart_on_resume: got {restart!r}; use true or false")
        preflight = data.get("preflight")
        if preflight is not None and not isinstance(preflight, bool):
            raise ValueError(f"curriculum.preflight: got {preflight!r}; use true or false "
                             "(leave it out: on when training on a GPU)")
        _check_choice("curriculum.truncation", data.get("truncation"), TRUNCATIONS)
        _check_choice("curriculum.prompt_cut", data.get("prompt_cut"), PROMPT_CUTS)
        _check_choice("curriculum.budget", data.get("budget"), BUDGETS)
        if "segment_window" in data:
            _check_float("curriculum.segment_window", data["segment_window"], 0.0, 1.0, low_open=True)
        _check_int("curriculum.keep_prompt_head", data.get("keep_prompt_head"), 0)
        marks = data.get("boundaries")
        if marks is not None and (not isinstance(marks, list) or not marks
                                  or not all(isinstance(m, str) and m for m in marks)):
            raise ValueError(f"curriculum.boundaries: got {marks!r}; use a non-empty list of "
                             "strings, e.g. ['.', '!', '?', '\\n']")

        levels = data.get("levels")
        if isinstance(levels, dict) or data.get("ramp") is not None:
            levels, data["ramp"] = _ramp(levels, data.get("ramp"), sense)
            data["levels"] = levels
        if "auto" in data and data["auto"] is not None:
            if levels != "auto":
                raise ValueError("curriculum.auto: only used with `levels: auto`; remove it or "
                                 "set levels: auto")
            auto = data["auto"]
            Auto.validate_raw("curriculum.auto", auto.model_dump() if isinstance(auto, Auto) else auto)
        if levels == "auto":  # chosen from the data when training starts (auto.py)
            return data
        if not isinstance(levels, list) or not levels:
            raise ValueError(
                "curriculum.levels: give a non-empty list of levels, e.g. "
                "[{input_len: 256, max_steps: 100}, {input_len: 1024}]"
            )
        default_min = (sense or {}).get("min_steps", SenseGrad().min_steps)
        previous, previous_admit = None, 0.0
        for i, level in enumerate(levels):
            where = f"curriculum.levels[{i}]"
            if isinstance(level, Level):
                level = level.model_dump(exclude_none=True)
            if not isinstance(level, dict):
                raise ValueError(f"{where}: expected a mapping like {{input_len: 256}}, got {level!r}")
            _check_keys(where, level, list(Level.model_fields))
            if "input_len" not in level:
                raise ValueError(f"{where}.input_len: missing; every level needs an input_len "
                                 "(tokens kept per example)")
            input_len = level["input_len"]
            _check_int(f"{where}.input_len", input_len, MIN_INPUT_LEN)
            admit = level.get("admit")
            if admit is not None:
                if data.get("difficulty") is None:
                    raise ValueError(f"{where}.admit: needs curriculum.difficulty (the score that "
                                     "says which examples are easiest); add e.g. `difficulty: "
                                     "rarity`, or remove admit")
                _check_float(f"{where}.admit", admit, 0.0, 1.0, low_open=True)
                if admit < previous_admit:
                    raise ValueError(f"{where}.admit: got {admit}; admission shares may not "
                                     f"shrink, use at least {previous_admit} (the previous level's)")
            if admit is not None and admit < 1 and i == len(levels) - 1:
                raise ValueError(f"{where}.admit: the last level admits every example; remove "
                                 "admit (or set 1)")
            grows = (1.0 if admit is None else admit) > previous_admit
            if previous is not None and (input_len < previous or (input_len == previous and not grows)):
                raise ValueError(
                    f"{where}.input_len: got {input_len}; levels must grow, use a value above "
                    f"{previous} (the previous level's input_len), or the same input_len with a "
                    "larger admit"
                )
            previous, previous_admit = input_len, admit if admit is not None else 1.0
            _check_choice(f"{where}.truncation", level.get("truncation"), TRUNCATIONS)
            if level.get("rope_theta") is not None or level.get("rope_scaling") is not None:
                from .rope import check_rope  # transformers' RoPE functions, only when used

                check_rope(where, level.get("rope_theta"), level.get("rope_scaling"))
            _check_int(f"{where}.max_steps", level.get("max_steps"), 1)
            _check_int(f"{where}.min_steps", level.get("min_steps"), 1)
            if level.get("max_steps") is None and i < len(levels) - 1:
                raise ValueError(f"{where}.max_steps: missing; every level but the last needs "
                                 "max_steps (optimizer steps spent in it, at most with sense_grad)")
            if level.get("min_steps") is not None and sense is None:
                raise ValueError(f"{where}.min_steps: only means something with sense_grad; "
                                 "add `sense_grad: true` or remove it")
            low = level.get("min_steps", default_min)
            if sense is not None and level.get("max_steps") is not None and low > level["max_steps"]:
                raise ValueError(
                    f"{where}.min_steps: {low} is above max_steps {level['max_steps']}; "
                    "lower min_steps (or sense_grad.min_steps) or raise max_steps"
                )
        return data

    @property
    def is_auto(self) -> bool:
        return self.levels == "auto"

    def resolved(self, levels: list[dict | Level]) -> "Curriculum":
        """A copy with concrete levels (the ladder `levels: auto` chose), validated as YAML is."""
        block = self.model_dump(exclude={"levels", "auto"}, exclude_none=True)
        return Curriculum.model_validate({**block, "levels": levels})

    @property
    def input_lens(self) -> list[int]:
        if self.is_auto:
            raise ValueError("curriculum.levels: auto is chosen once the data and the run's steps "
                             "are known; use Curriculum.resolved(auto.choose_levels(...)) first")
        return [level.input_len for level in self.levels]

    def admit_of(self, level: int) -> float:
        """The share of examples this level admits by difficulty (1: all)."""
        admit = self.levels[level].admit
        return 1.0 if admit is None else admit

    def truncation_of(self, level: int) -> str:
        return self.levels[level].truncation or self.truncation

    def rope_of(self, level: int) -> tuple[float | None, dict | None] | None:
        """(rope_theta, rope_scaling) in effect at `level`: each key as the latest level up to
        it set it (a raised base stays raised); None while no level has set either."""
        theta = scaling = None
        for lv in self.levels[:level + 1]:
            theta = lv.rope_theta if lv.rope_theta is not None else theta
            scaling = lv.rope_scaling if lv.rope_scaling is not None else scaling
        return None if theta is None and scaling is None else (theta, scaling)

    @property
    def sets_rope(self) -> bool:
        return not self.is_auto and any(self.rope_of(k) for k in range(len(self.levels)))

    def min_steps(self, level: int) -> int:
        own = self.levels[level].min_steps
        return own if own is not None else (self.sense_grad or SenseGrad()).min_steps

    def check_sequence_len(self, sequence_len: int) -> None:
        """No level may ask for more tokens than the model is trained on."""
        if self.is_auto:  # auto never goes above sequence_len
            return
        for i, level in enumerate(self.levels):
            if level.input_len > sequence_len:
                raise ValueError(
                    f"curriculum.levels[{i}].input_len: got {level.input_len}, above "
                    f"sequence_len {sequence_len}; use at most {sequence_len} or raise sequence_len"
                )

    def check_run_length(self, total_steps: int, *, length_from: str = "max_steps") -> str | None:
        """The last (full-length) level must get steps: the levels before it may not take the
        whole run (`total_steps` optimizer steps, set by the config key `length_from`).

        Raises `ValueError` naming both numbers and the fix. With sense_grad the levels'
        max_steps are caps a level may end before, so it is not an error: the same message is
        returned for the caller to warn with. None when the run is long enough (or levels: auto,
        which chooses its steps from the run's length).
        """
        if self.is_auto or len(self.levels) < 2:
            return None
        before = sum(level.max_steps or 0 for level in self.levels[:-1])
        if before < total_steps:
            return None
        run = (f"the run's max_steps is {total_steps}" if length_from == "max_steps"
               else f"the run has {total_steps} (from {length_from})")
        message = (f"curriculum.levels: the levels before the last take {before} steps, {run}: "
                   f"the last level (input_len {self.levels[-1].input_len}) would never train; "
                   f"lower the levels' max_steps or raise {length_from}")
        if self.sense_grad is None:
            raise ValueError(message)
        return (f"{message} (with sense_grad they are caps: the last level trains only if "
                "earlier levels end sooner)")

    def budget_for(self, packed: bool) -> str:
        """The budget in effect: packed rows stay full unless told otherwise (docs/cuts.md)."""
        return self.budget or ("tokens" if packed else "examples")

    def check_training(self, *, max_grad_norm: float | None, deepspeed: bool, packed: bool) -> None:
        """What the block needs from the rest of the training setup (Axolotl's YAML or a Trainer).

        sense_grad reads the norm the trainer computes for clipping; DeepSpeed fixes
        train_micro_batch_size_per_gpu, which unpacked `budget: tokens` would vary per level.
        """
        if self.sense_grad is not None and max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError("curriculum.sense_grad reads the gradient norm the trainer clips "
                             "with: set max_grad_norm > 0 (1e9 measures without clipping)")
        if deepspeed and not packed and self.budget_for(packed) == "tokens":
            raise ValueError(
                "curriculum.budget: tokens without sample packing changes the micro-batch size at "
                "each level, which DeepSpeed's fixed train_micro_batch_size_per_gpu does not allow; "
                "use budget: examples, or sample_packing: true"
            )

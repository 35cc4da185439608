"""The sub-blocks of `curriculum:`: `sense_grad`, `auto`, `difficulty`, and one level.

Those that stand on their own check their raw mapping themselves (`validate_raw`), before
pydantic sees it, so a mistake is named by its full key (`curriculum.sense_grad.window`) with the
fix; a level's rules need the rest of the block, so they are in rules.py. The names are
re-exported from config.py.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .checks import check_bool, check_choice, check_float, check_int, check_keys
from .errors import CurriculumError

MIN_INPUT_LEN = 2  # one token has nothing to predict: its label is never scored
MODEL_SCORES = ("loss", "ifd")  # a pass of the model being trained, before step 1
SCORES = ("length", "segments", "compression", "rarity", "random", "column", *MODEL_SCORES)

_SENSE_GRAD_INT_MINIMA = {"check_every": 1, "window": 3, "settle_steps": 0, "min_steps": 1,
                          "max_spikes": 0, "backoff_spikes": 1, "backoff_steps": 1}


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
        """Each setting within the range the gate's statistics make sense in."""
        check_keys(where, data, list(cls.model_fields))
        for key, low in _SENSE_GRAD_INT_MINIMA.items():
            check_int(f"{where}.{key}", data.get(key), low)
        if "max_grad_cv" in data:
            check_float(f"{where}.max_grad_cv", data["max_grad_cv"], 0.0, low_open=True)
        for key in ("grad_spike_factor", "loss_spike_factor"):
            if key in data:
                check_float(f"{where}.{key}", data[key], 1.0, low_open=True)
        if "max_loss_slope" in data:
            check_float(f"{where}.max_loss_slope", data["max_loss_slope"], -1.0, 1.0)
        if "ema_beta" in data:
            check_float(f"{where}.ema_beta", data["ema_beta"], 0.0, 0.999, low_open=True)
        if "backoff" in data:
            check_bool(f"{where}.backoff", data["backoff"])


class Auto(BaseModel):
    """Knobs of `levels: auto` (docs/auto.md says how the ladder is chosen and why)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_input_len: int = 64      # the first level's input_len; each next level doubles it
    max_levels: int = 4          # levels at most, the last (sequence_len) included
    warmup_share: float = 0.3    # share of the run's steps spent below the last level

    @classmethod
    def validate_raw(cls, where: str, data: Any) -> None:
        """Also called by auto.py, whose knobs may come without a `curriculum:` block."""
        if not isinstance(data, dict):
            raise CurriculumError(f"{where}: got {data!r}; use a mapping, e.g. {{max_levels: 3}}")
        check_keys(where, data, list(cls.model_fields))
        check_int(f"{where}.min_input_len", data.get("min_input_len"), MIN_INPUT_LEN)
        check_int(f"{where}.max_levels", data.get("max_levels"), 2)
        if "warmup_share" in data:
            check_float(f"{where}.warmup_share", data["warmup_share"], 0.0, 0.9, low_open=True)


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
        """The block as a mapping, checked: `difficulty: rarity` is short for {score: rarity}."""
        where = "curriculum.difficulty"
        if isinstance(data, str):
            data = {"score": data}
        if not isinstance(data, dict):
            raise CurriculumError(f"{where}: got {data!r}; use a score's name, e.g. `difficulty: "
                                  "rarity`, or a mapping like {score: column, column: my_score}")
        check_keys(where, data, list(cls.model_fields))
        score = _check_score(where, data)
        _check_model_score_keys(where, data, score)
        check_int(f"{where}.seed", data.get("seed"), 0)
        if "cache" in data:
            check_bool(f"{where}.cache", data["cache"],
                       " (false recomputes the scores every run)")
        return data


def _check_score(where: str, data: dict) -> str:
    """The score is required; `column` is the one score that needs (and takes) a column name."""
    score = data.get("score")
    check_choice(f"{where}.score", score, SCORES)
    if score is None:
        raise CurriculumError(f"{where}.score: missing; use one of {', '.join(SCORES)}")
    if score == "column" and not isinstance(data.get("column"), str):
        raise CurriculumError(f"{where}.column: score: column needs the column's name, e.g. "
                              "{score: column, column: my_score}")
    if data.get("column") is not None and score != "column":
        raise CurriculumError(f"{where}.column: only used with score: column; remove it")
    return score


def _check_model_score_keys(where: str, data: dict, score: str) -> None:
    """rescore and sample only mean something for a score the model computes: the others do not
    change as the model trains, and are cheap enough to compute on every example."""
    if "rescore" in data:
        check_bool(f"{where}.rescore", data["rescore"])
    if data.get("rescore") and score not in MODEL_SCORES:
        raise CurriculumError(f"{where}.rescore: re-scoring needs a model score (loss or ifd); "
                              f"{score!r} does not change as the model trains; remove rescore")
    if "sample" in data:
        if score not in MODEL_SCORES:
            raise CurriculumError(f"{where}.sample: only model scores (loss, ifd) sample the "
                                  "data; remove sample")
        check_float(f"{where}.sample", data["sample"], 0.0, 1.0, low_open=True)


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
    short_share: float | None = None  # share of a step fed the first level's cuts (docs/)

"""The `probes:` and `sense_eval:` sub-blocks: what the run measures on held-out data, and the
eval gate that advances a level on it (Llama 3's rule: a length stage ends when short-context
evaluations have recovered and the needle is found at that length).

Each block checks its raw mapping itself (`validate_raw`), naming the full key and the fix; the
rules that need the rest of the block (levels, ramps) are in rules.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .checks import check_bool, check_choice, check_float, check_int, check_keys
from .errors import CurriculumError

COMBINE = ("both", "either")  # with sense_grad: both gates must agree, or either one suffices


def _mapping(where: str, data: Any, example: str) -> dict:
    """A sub-block as a mapping; `true` (or {}) means its defaults."""
    if data is True:
        return {}
    if not isinstance(data, dict):
        raise CurriculumError(f"{where}: got {data!r}; use true for the defaults, or a mapping "
                              f"like {example}")
    return data


class PasskeyProbe(BaseModel):
    """A random key hidden at a depth in filler text, asked for at the end (exact match)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lengths: list[int] | None = None  # prompt lengths in tokens; default: every level's input_len
    depths: list[float] = [0.1, 0.5, 0.9]  # where the key sits, as a share of the filler
    rows: int = 4                     # prompts per (length, depth)
    digits: int = 5                   # the key's digits
    chat: bool = False                # also asked as a chat turn (the tokenizer's template)

    @classmethod
    def validate_raw(cls, where: str, data: Any) -> dict:
        data = _mapping(where, data, "{lengths: [1024, 2048], depths: [0.1, 0.5, 0.9], rows: 4}")
        check_keys(where, data, list(cls.model_fields))
        lengths = data.get("lengths")
        if lengths is not None:
            if not isinstance(lengths, list) or not lengths:
                raise CurriculumError(f"{where}.lengths: got {lengths!r}; use a list of prompt "
                                      "lengths in tokens, e.g. [1024, 2048, 4096]")
            for i, length in enumerate(lengths):
                check_int(f"{where}.lengths[{i}]", length, 16)
        depths = data.get("depths", [0.5])
        if not isinstance(depths, list) or not depths:
            raise CurriculumError(f"{where}.depths: got {depths!r}; use a list of shares of the "
                                  "filler in [0, 1], e.g. [0.1, 0.5, 0.9]")
        for i, depth in enumerate(depths):
            check_float(f"{where}.depths[{i}]", depth, 0.0, 1.0)
        check_int(f"{where}.rows", data.get("rows"), 1)
        check_int(f"{where}.digits", data.get("digits"), 1)
        if "chat" in data:
            check_bool(f"{where}.chat", data["chat"], " (true also asks each prompt as a user "
                       "turn of the tokenizer's chat template)")
        return data


class PositionLossProbe(BaseModel):
    """The loss on held-out long rows by position bucket: do later positions gain from context?"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = 8            # held-out rows (the longest)
    first_bucket: int = 512  # positions [0, first) [first, 2 first) [2 first, 4 first) ...

    @classmethod
    def validate_raw(cls, where: str, data: Any) -> dict:
        data = _mapping(where, data, "{rows: 8, first_bucket: 512}")
        check_keys(where, data, list(cls.model_fields))
        check_int(f"{where}.rows", data.get("rows"), 1)
        check_int(f"{where}.first_bucket", data.get("first_bucket"), 1)
        return data


class ShortProbe(BaseModel):
    """The loss on held-out rows cut to the first level's input_len: short-context retention.

    `input_len` cuts them to another length: the model's original context, say, so that runs
    whose first levels differ (a jump straight to the target length among them) are compared
    on the same short rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = 32
    input_len: int | None = None

    @classmethod
    def validate_raw(cls, where: str, data: Any) -> dict:
        data = _mapping(where, data, "{rows: 32}")
        check_keys(where, data, list(cls.model_fields))
        check_int(f"{where}.rows", data.get("rows"), 1)
        check_int(f"{where}.input_len", data.get("input_len"), 2)
        return data


class Probes(BaseModel):
    """PROBES: measured every `every` steps and at every level's start and end."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: int = 200
    seed: int = 0                 # the held-out rows drawn and the passkeys (never torch's RNG)
    passkey: PasskeyProbe | None = None
    position_loss: PositionLossProbe | None = None
    short: ShortProbe | None = None

    @classmethod
    def validate_raw(cls, data: Any) -> dict:
        where = "curriculum.probes"
        data = dict(_mapping(where, data, "{every: 50, short: {rows: 32}}"))
        check_keys(where, data, list(cls.model_fields))
        check_int(f"{where}.every", data.get("every"), 1)
        check_int(f"{where}.seed", data.get("seed"), 0)
        kinds = {"passkey": PasskeyProbe, "position_loss": PositionLossProbe, "short": ShortProbe}
        for key, kind in kinds.items():
            if data.get(key) is False or data.get(key) is None:
                data.pop(key, None)
            else:
                data[key] = kind.validate_raw(f"{where}.{key}", data[key])
        if not any(key in data for key in kinds):
            raise CurriculumError(f"{where}: no probe set; add passkey, position_loss or short, "
                                  "e.g. {short: {rows: 32}}")
        return data


class SenseEval(BaseModel):
    """SENSE_EVAL: a level ends when the probes say the model can use its length."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: int | None = None             # steps between decisions; default probes.every
    short_tolerance: float | None = None  # short loss within this share above its value before
    passkey_min: float | None = None      # passkey accuracy at the level's length at least this
    combine: Literal["both", "either"] = "both"  # with sense_grad: both must agree, or either

    @classmethod
    def validate_raw(cls, data: Any, probes: dict | None) -> dict:
        where = "curriculum.sense_eval"
        data = _mapping(where, data, "{short_tolerance: 0.02, passkey_min: 0.9}")
        check_keys(where, data, list(cls.model_fields))
        if probes is None:
            raise CurriculumError(f"{where}: decides on the probes; add curriculum.probes, e.g. "
                                  "{every: 50, short: {rows: 32}, passkey: {}}")
        check_int(f"{where}.every", data.get("every"), 1)
        every = data.get("every")
        probe_every = probes.get("every", Probes().every)
        if every is not None and every % probe_every:
            raise CurriculumError(f"{where}.every: got {every}, not a multiple of probes.every "
                                  f"({probe_every}); the gate decides on fresh probes")
        if data.get("short_tolerance") is None and data.get("passkey_min") is None:
            raise CurriculumError(f"{where}: set short_tolerance (e.g. 0.02) and/or passkey_min "
                                  "(e.g. 0.9): what the level must reach")
        if data.get("short_tolerance") is not None:
            check_float(f"{where}.short_tolerance", data["short_tolerance"], 0.0)
            if probes.get("short") is None:
                raise CurriculumError(f"{where}.short_tolerance: needs the short probe; add "
                                      "curriculum.probes.short")
        if data.get("passkey_min") is not None:
            check_float(f"{where}.passkey_min", data["passkey_min"], 0.0, 1.0)
            if probes.get("passkey") is None:
                raise CurriculumError(f"{where}.passkey_min: needs the passkey probe; add "
                                      "curriculum.probes.passkey")
        check_choice(f"{where}.combine", data.get("combine"), COMBINE)
        return data

"""The arms: each is a `curriculum:` block for a run of `steps` optimizer steps at `seq` tokens.

Add an arm by adding an entry to `arms()`: finished runs are cached by (arm, seed, settings,
data), so the next invocation runs only the new arm's runs.
"""

from __future__ import annotations

STAGED_SHARE = 0.4  # the short levels of the staged arms take 40% of the steps


def staircase(seq: int, steps: int, n: int = 4, share: float = STAGED_SHARE) -> list[dict]:
    """n levels of equal length steps (seq/n, 2seq/n, ...), the short ones `share` of the run."""
    lens = [max(8, seq * (k + 1) // n) for k in range(n)]
    per = max(1, int(steps * share) // (n - 1))
    return [{"input_len": L, "max_steps": per} for L in lens[:-1]] + [{"input_len": seq}]


def one_word(seq: int, steps: int, share: float = STAGED_SHARE) -> list[dict]:
    """The literal idea: one token more each step, from 8 tokens, for `share` of the run (then
    full length: a run of this length cannot grow one token a step all the way)."""
    n = max(1, min(seq - 8, int(steps * share)))
    return [{"input_len": 8 + k, "max_steps": 1} for k in range(n)] + [{"input_len": seq}]


def one_length(seq: int, steps: int, share: float = STAGED_SHARE) -> list[dict]:
    """one_word's short steps at one fixed input_len, the mean of its lengths: what growing one
    token a step adds over merely starting short."""
    short = one_word(seq, steps, share)[:-1]
    mean = round(sum(lv["input_len"] for lv in short) / len(short))
    return [{"input_len": mean, "max_steps": len(short)}, {"input_len": seq}]


def admit_ladder(seq: int, steps: int) -> list[dict]:
    """Full length throughout; a third, then two thirds of the examples, 20% of the steps each."""
    per = max(1, steps // 5)
    return [{"input_len": seq, "max_steps": per, "admit": 0.33},
            {"input_len": seq, "max_steps": per, "admit": 0.66}, {"input_len": seq}]


def arms(seq: int, steps: int) -> dict[str, dict]:
    linear = staircase(seq, steps)
    gated = [{**lv, "max_steps": 2 * lv["max_steps"]} if "max_steps" in lv else lv for lv in linear]
    return {
        "baseline": {"levels": [{"input_len": seq}]},
        "staircase": {"levels": linear},
        "sense_grad": {"levels": gated, "sense_grad": {"check_every": 5, "window": 10,
                                                       "settle_steps": 3, "min_steps": 10}},
        "segment": {"levels": linear, "truncation": "segment"},
        "filter": {"levels": linear, "truncation": "filter"},
        "examples_budget": {"levels": linear, "budget": "examples"},
        "one_word": {"levels": one_word(seq, steps)},
        # the control for one_word's growth: its short steps at one length (their mean)
        "one_length": {"levels": one_length(seq, steps)},
        # the control for ordering: one short level as a warm-up (10% of the steps), then every
        # example at full length in random order
        "warmup_shuffle": {"levels": [{"input_len": max(8, seq // 4),
                                       "max_steps": max(1, steps // 10)}, {"input_len": seq}]},
        "auto": {"levels": "auto"},
        # difficulty at full length (docs/difficulty.md) and its control at the same shares
        "rarity": {"difficulty": "rarity", "levels": admit_ladder(seq, steps)},
        "compression": {"difficulty": "compression", "levels": admit_ladder(seq, steps)},
        "loss": {"difficulty": "loss", "levels": admit_ladder(seq, steps)},  # the base model's
        "random_admit": {"difficulty": {"score": "random", "seed": 1},
                         "levels": admit_ladder(seq, steps)},
    }


# the arms every preset runs; the rest join with --arms or the full preset
CORE = ("baseline", "staircase", "sense_grad", "segment", "filter", "examples_budget", "one_word",
        "warmup_shuffle")
EXTRA = ("one_length", "auto", "rarity", "compression", "loss", "random_admit")

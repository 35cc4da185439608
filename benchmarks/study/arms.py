"""The arms: each is a `curriculum:` block for a run of `steps` optimizer steps at `seq` tokens.

Add an arm by adding an entry to `arms()`: finished runs are cached by (arm, seed, settings,
data), so the next invocation runs only the new arm's runs.
"""

from __future__ import annotations

import math

STAGED_SHARE = 0.4  # the short levels of the staged arms take 40% of the steps
WARMUP = "warmup_share"  # an arm's own LR warmup (share of the steps), not a curriculum key


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


def staircase_from(seq: int, steps: int, first: int, n: int = 4,
                   share: float = STAGED_SHARE) -> list[dict]:
    """The staircase from `first` tokens: n levels evenly spaced from `first` to `seq`, the
    short ones `share` of the run (from seq/4 it is `staircase`)."""
    lens = [round(first + k * (seq - first) / (n - 1)) for k in range(n)]
    per = max(1, int(steps * share) // (n - 1))
    return [{"input_len": L, "max_steps": per} for L in lens[:-1]] + [{"input_len": seq}]


def ratio_arms(seq: int, steps: int, share: float = STAGED_SHARE) -> dict[str, dict]:
    """Issue 26: arms that differ from `staircase` and `warmup_shuffle` (both from seq/4) only
    in their first length: seq/16 and seq/64 (8 tokens at least), and DeepSpeed's
    `fixed_linear` (from 8 tokens, 8 more every few steps, over the same share of the run)."""
    out = {}
    for ratio in (16, 64):
        first = max(8, seq // ratio)
        out[f"staircase_r{ratio}"] = {"levels": staircase_from(seq, steps, first, share=share)}
        out[f"warmup_shuffle_r{ratio}"] = {"levels": [
            {"input_len": first, "max_steps": max(1, steps // 10)}, {"input_len": seq}]}
    out["fixed_linear"] = {"levels": {"ramp": {"from": 8, "to": seq, "step_size": 8,
                                               "steps": max(1, int(steps * share))}}}
    return out


def first_length(arm: dict) -> int:
    """An arm's first input_len (a ramp's `from`): its length ratio is seq / this."""
    levels = arm["levels"]
    if isinstance(levels, dict):
        return levels["ramp"]["from"]
    return levels[0]["input_len"] if isinstance(levels, list) else 0


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
        **ratio_arms(seq, steps),
    }


# the arms every preset runs; the rest join with --arms or the full preset
CORE = ("baseline", "staircase", "sense_grad", "segment", "filter", "examples_budget", "one_word",
        "warmup_shuffle")
EXTRA = ("one_length", "auto", "rarity", "compression", "loss", "random_admit")
# issue 26: the staircase and the warm-up control at length ratios 4, 16 and 64, and a ramp
RATIOS = ("baseline", "staircase", "staircase_r16", "staircase_r64", "fixed_linear",
          "warmup_shuffle", "warmup_shuffle_r16", "warmup_shuffle_r64")
# fine-tuning's runs cost ~4x scratch's: the control at the longest ratio only (from scratch it
# matched the staircase at every ratio)
RATIOS_FINETUNE = ("baseline", "staircase", "staircase_r16", "staircase_r64", "fixed_linear",
                   "warmup_shuffle_r64")


# -- the context-extension setting (issue 24): a model pretrained at `base` tokens, extended to
# `seq`; the staged arms' levels double from `short`, their short levels 40% of the steps
BASE_THETA = 10_000.0    # the pretrained model's RoPE base (testing.save_llama: LlamaConfig's)
FINAL_THETA = 500_000.0  # at the target length: 50x for 16x the context (Qwen2.5 took 1e4 -> 1e6
                         # for 8x, ProLong 8e6 at 64K from Llama-3's 5e5 at 8K)


def theta_at(length: int, base: int, seq: int) -> float:
    """The RoPE base at `length`, geometric between the base model's and the final one's."""
    share = math.log(length / base) / math.log(seq / base)
    return round(BASE_THETA * (FINAL_THETA / BASE_THETA) ** share, -2)


def extend_levels(seq: int, steps: int, base: int, short: int = 512,
                  share: float = STAGED_SHARE) -> list[dict]:
    """short, 2 short, ... seq, each level's RoPE base raised with its length (Qwen2.5, ProLong)."""
    lens = [short]
    while lens[-1] * 2 < seq:
        lens.append(lens[-1] * 2)
    per = max(1, int(steps * share) // len(lens))
    return ([{"input_len": L, "max_steps": per, "rope_theta": theta_at(L, base, seq)}
             for L in lens] + [{"input_len": seq, "rope_theta": FINAL_THETA}])


def extend_arms(seq: int, steps: int, base: int, probes: dict) -> dict[str, dict]:
    """The arms of issue 24, each with the same probes. `baseline` is the jump: every step at
    `seq` with the final RoPE base from step 1 (Fu et al. 2024, UltraLong)."""
    staged = extend_levels(seq, steps, base)
    fixed = [{**lv, "rope_theta": FINAL_THETA} for lv in staged]
    short_steps = sum(lv.get("max_steps", 0) for lv in staged)
    gated = [{**lv, "max_steps": 2 * lv["max_steps"]} if "max_steps" in lv else lv
             for lv in staged]
    arms = {
        "baseline": {"levels": [{"input_len": seq, "rope_theta": FINAL_THETA}]},
        "staged_rope": {"levels": staged},
        "staged_fixed": {"levels": fixed},  # DeepSeek-V3, Kimi-K2: the final base from step 1
        "staged_short": {"levels": staged, "short_share": 0.25},  # Qwen2.5-1M keeps 25% short
        "staged_split": {"levels": staged, "truncation": "split"},  # documents split, not cut
        "ramp": {"levels": {"ramp": {"from": base, "to": seq, "steps": short_steps,
                                     "step_size": base, "rope_theta": FINAL_THETA}}},
        # levels end when short loss has recovered and the passkey is found at their length
        # (at most twice the staged arms' steps)
        "gated": {"levels": [{**lv, "min_steps": max(1, lv["max_steps"] // 4)}
                             if "max_steps" in lv else lv for lv in gated],
                  "sense_eval": {"short_tolerance": 0.05, "passkey_min": 0.5}},
        # most tokens short, one jump at the end (Fu et al.'s short_bulk)
        "short_bulk": {"levels": [{"input_len": staged[0]["input_len"],
                                   "max_steps": int(steps * 0.8), "rope_theta": FINAL_THETA},
                                  {"input_len": seq, "rope_theta": FINAL_THETA}]},
    }
    # the control for the staged arms' slow start: the jump with their short steps as warmup
    arms["jump_warmup"] = {**arms["baseline"], WARMUP: short_steps / steps}
    return {name: {**arm, "probes": probes} for name, arm in arms.items()}


# the arms of the extension setting; the jump with the staged arms' warmup is a Knobs change
EXTEND = ("baseline", "staged_rope", "staged_fixed", "staged_short", "staged_split", "ramp",
          "gated", "short_bulk", "jump_warmup")

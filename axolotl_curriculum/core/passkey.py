"""Passkey retrieval prompts (Mohtashami & Jaggi 2023, the probe LongLoRA and YaRN report): a
random key hidden at a depth in neutral filler, asked for at the end.

Built in token space over an `encode(text) -> ids` function, so each prompt is exactly its
length; keys come from a numpy Generator the caller seeds (never torch's RNG: probing must not
change the training stream). Scored as exact match of the key's tokens under greedy decoding:
the argmax at every answer position equals the key's next token. With the answer fed (teacher
forcing) that is one forward, and equals greedy generation, which reproduces the key exactly
when, and only when, every one of those argmaxes is right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and "
         "memorize it. I will quiz you about the important information there.\n")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"


@dataclass(frozen=True)
class PasskeyPrompt:
    ids: list[int]        # the prompt and the key's tokens, `length` in all
    answer_start: int     # index of the key's first token
    length: int
    depth: float
    key: str


def random_key(rng: np.random.Generator, digits: int) -> str:
    first = str(rng.integers(1, 10))
    return first + "".join(str(d) for d in rng.integers(0, 10, digits - 1))


def shortest(encode: Callable[[str], list[int]], digits: int) -> int:
    """The fewest tokens a prompt with a `digits`-digit key takes (no filler)."""
    key = "9" * digits
    return (len(encode(INTRO)) + len(encode(NEEDLE.format(key=key)))
            + len(encode(QUESTION)) + len(encode(" " + key)))


def prompt(encode: Callable[[str], list[int]], length: int, depth: float, key: str,
           bos: list[int] = ()) -> PasskeyPrompt:
    """One prompt of exactly `length` tokens, the key `depth` of the way into the filler."""
    intro = list(bos) + encode(INTRO)
    needle, question, answer = encode(NEEDLE.format(key=key)), encode(QUESTION), encode(" " + key)
    budget = length - len(intro) - len(needle) - len(question) - len(answer)
    if budget < 0:
        raise ValueError(f"a passkey prompt needs at least {length - budget} tokens, got {length}")
    filler = encode(FILLER)
    filler = (filler * (budget // max(len(filler), 1) + 1))[:budget]
    cut = round(depth * budget)
    ids = intro + filler[:cut] + needle + filler[cut:] + question + answer
    return PasskeyPrompt(ids, len(ids) - len(answer), length, depth, key)


def grid(encode: Callable[[str], list[int]], lengths: list[int], depths: list[float], rows: int,
         digits: int, seed: int, bos: list[int] = ()) -> list[PasskeyPrompt]:
    """`rows` prompts per (length, depth), keys drawn from `seed` alone."""
    rng = np.random.default_rng(seed)
    return [prompt(encode, length, depth, random_key(rng, digits), bos)
            for length in lengths for depth in depths for _ in range(rows)]

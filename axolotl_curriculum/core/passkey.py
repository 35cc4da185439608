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
ASK = "What is the pass key?"
LEAD = " The pass key is"  # the answer's start: with a chat template, the assistant's turn
QUESTION = ASK + LEAD


@dataclass(frozen=True)
class PasskeyPrompt:
    ids: list[int]        # the prompt and the key's tokens, `length` in all
    answer_start: int     # index of the key's first token
    length: int
    depth: float
    key: str
    chat: bool = False    # asked as a user turn of the tokenizer's chat template


def random_key(rng: np.random.Generator, digits: int) -> str:
    first = str(rng.integers(1, 10))
    return first + "".join(str(d) for d in rng.integers(0, 10, digits - 1))


def turn(template: Callable[[str], str], encode: Callable[[str], list[int]]) -> tuple[list[int], list[int]]:
    """The chat template's tokens before and after a user turn's content (the generation
    prompt included), from `template(content) -> text` rendered around a marker."""
    marker = "\x00PASSKEY\x00"
    before, after = template(marker).split(marker)
    return encode(before), encode(after)


def shortest(encode: Callable[[str], list[int]], digits: int,
             chat: tuple[list[int], list[int]] = ((), ())) -> int:
    """The fewest tokens a prompt with a `digits`-digit key takes (no filler)."""
    key = "9" * digits
    return (len(chat[0]) + len(chat[1]) + len(encode(INTRO)) + len(encode(NEEDLE.format(key=key)))
            + len(encode(ASK)) + len(encode(LEAD)) + len(encode(" " + key)))


def prompt(encode: Callable[[str], list[int]], length: int, depth: float, key: str,
           bos: list[int] = (), chat: tuple[list[int], list[int]] | None = None) -> PasskeyPrompt:
    """One prompt of exactly `length` tokens, the key `depth` of the way into the filler;
    `chat`: the template's tokens around the user turn (`turn`), the answer in the assistant's."""
    before, after = chat or ((), ())
    intro = list(bos) + list(before) + encode(INTRO)
    needle, answer = encode(NEEDLE.format(key=key)), encode(" " + key)
    question = encode(ASK) + list(after) + encode(LEAD)
    budget = length - len(intro) - len(needle) - len(question) - len(answer)
    if budget < 0:
        raise ValueError(f"a passkey prompt needs at least {length - budget} tokens, got {length}")
    filler = encode(FILLER)
    filler = (filler * (budget // max(len(filler), 1) + 1))[:budget]
    cut = round(depth * budget)
    ids = intro + filler[:cut] + needle + filler[cut:] + question + answer
    return PasskeyPrompt(ids, len(ids) - len(answer), length, depth, key, chat is not None)


def grid(encode: Callable[[str], list[int]], lengths: list[int], depths: list[float], rows: int,
         digits: int, seed: int, bos: list[int] = (),
         chat: tuple[list[int], list[int]] | None = None) -> list[PasskeyPrompt]:
    """`rows` prompts per (length, depth), keys drawn from `seed` alone; with `chat`, each
    prompt a second time as a chat turn (the same key)."""
    rng = np.random.default_rng(seed)
    out = []
    for length in lengths:
        for depth in depths:
            for _ in range(rows):
                key = random_key(rng, digits)
                out.append(prompt(encode, length, depth, key, bos))
                if chat is not None:
                    out.append(prompt(encode, length, depth, key, bos, chat))
    return out

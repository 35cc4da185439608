"""Segment cuts of chat rows end at a turn's end, checked against a slow row-by-row reference
(hypothesis draws the chats), and the rows of a real chat template (SmolLM2's, through
Axolotl's chat_template strategy) in tests/test_e2e_real_model.py."""

import numpy as np
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from axolotl_curriculum.core.cut import level_cuts
from axolotl_curriculum.data.rows import row_stats

END, COMMA, VOCAB = 2, 3, 50  # the end-of-turn token, a boundary inside turns


@st.composite
def chats(draw):
    """Rows of turns, each ending in END: system/user turns not trained, assistant turns
    trained (their END too: train_on_eos turn), or a plain text row (one END, at its end)."""
    rows = []
    for _ in range(draw(st.integers(1, 12))):
        ids, labels = [], []
        for k in range(draw(st.integers(1, 7))):
            n = draw(st.integers(1, 20))
            body = [draw(st.sampled_from([COMMA, *range(5, VOCAB)])) for _ in range(n)]
            trained = k % 2 == 1 and draw(st.booleans() | st.just(True))
            ids += body + [END]
            labels += (body + [END]) if trained else [-100] * (n + 1)
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def reference(row, input_len, prompt_cut, keep_prompt_head):
    """What a segment cut of a chat row must feed, turn by turn: the row whole if it fits;
    else up to the last turn end within input_len that leaves a trained token (the label at
    position 0 trains nothing); else, with prompt_cut left, the first trained turn whole
    behind the first `keep_prompt_head` tokens and as much of the prompt's end as fits.
    None: the rule leaves the row to the ordinary segment cut (a text row, or an answer
    longer than the level)."""
    ids, labels = row["input_ids"], row["labels"]
    n = len(ids)
    ends = [i + 1 for i, t in enumerate(ids) if t == END]
    if n <= input_len or len(ends) < 2:
        return None
    first = next((i for i in range(1, n) if labels[i] != -100), None)
    if first is None:
        return None
    fits = [e for e in ends if e <= input_len and first < e and e >= 2]
    if fits:
        return (0, 0, max(fits))
    if prompt_cut != "left":
        return None
    answer_end = next(e for e in ends if e > first)
    h = min(keep_prompt_head, max(input_len - 2, 0))
    start = max(answer_end - (input_len - h), h)
    if start < first or (h > 0 and start == first):
        return (h, start, answer_end)
    return None


@settings(max_examples=150, deadline=None)
@given(chats(), st.integers(4, 60), st.sampled_from(["left", "none"]), st.integers(0, 3))
def test_segment_cuts_chat_rows_at_turn_ends(rows, input_len, prompt_cut, keep_prompt_head):
    dataset = Dataset.from_list(rows)
    is_boundary = np.zeros(VOCAB, dtype=bool)
    is_boundary[[END, COMMA]] = True
    stats = row_stats(dataset, is_boundary, np.array([END]))
    cuts = level_cuts(stats, input_len, "segment", prompt_cut=prompt_cut,
                      keep_prompt_head=keep_prompt_head)
    for r, row in enumerate(rows):
        want = reference(row, input_len, prompt_cut, keep_prompt_head)
        got = (int(cuts.head[r]), int(cuts.start[r]), int(cuts.end[r]))
        if want is not None:
            assert cuts.fed[r] and got == want, (r, row, got, want)
            fed = row["input_ids"][:got[0]] + row["input_ids"][got[1]:got[2]]
            labels = row["labels"][:got[0]] + row["labels"][got[1]:got[2]]
            assert fed[-1] == END and len(fed) <= input_len
            assert any(x != -100 for x in labels[1:])  # a trained token, not at position 0
        if cuts.fed[r]:  # every example the level feeds fits it and trains a token
            length = got[0] + got[2] - got[1]
            labels = row["labels"][:got[0]] + row["labels"][got[1]:got[2]]
            assert length <= input_len and any(x != -100 for x in labels[1:])


def test_a_short_level_keeps_the_first_exchanges_whole():
    """A chat of three exchanges (10 tokens a turn): a level of 45 keeps two exchanges (40),
    one of 25 the first (20), one of 12 only the first answer behind the prompt's end."""
    ids, labels = [], []
    for k in range(6):
        body = list(range(10 + k * 9, 19 + k * 9))
        ids += body + [END]
        labels += (body + [END]) if k % 2 else [-100] * 10
    stats = row_stats(Dataset.from_list([{"input_ids": ids, "labels": labels}]),
                      np.isin(np.arange(70), [END, 30]), np.array([END]))
    for input_len, want in ((45, (0, 0, 40)), (25, (0, 0, 20)), (12, (0, 8, 20))):
        cuts = level_cuts(stats, input_len, "segment")
        assert (int(cuts.head[0]), int(cuts.start[0]), int(cuts.end[0])) == want


def test_an_eot_token_the_tokenizer_lacks_is_named(tmp_path, caplog):
    """An `eot_tokens` entry that is no token of the tokenizer would silently stop segment cuts
    ending turns at it: the warning names the key and the entry, once (the plan and each dataset
    ask again); known entries still count."""
    from axolotl_curriculum.data.rows import turn_end_ids
    from axolotl_curriculum.testing import build_tokenizer

    tok = build_tokenizer(tmp_path, texts=["a b c"] * 20, vocab=300)
    with caplog.at_level("WARNING", logger="axolotl_curriculum"):
        ids = turn_end_ids(tok, ["</s>", "<|im_end|>"])
    assert ids.tolist() == [tok.eos_token_id]
    assert "eot_tokens ['<|im_end|>']" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="axolotl_curriculum"):
        assert turn_end_ids(tok, ["</s>", "<|im_end|>"]).tolist() == [tok.eos_token_id]
    assert "eot_tokens" not in caplog.text
    with caplog.at_level("WARNING", logger="axolotl_curriculum"):
        assert turn_end_ids(tok).tolist() == [tok.eos_token_id]
    assert "eot_tokens" not in caplog.text

"""The probes and the eval gate in one process: the passkey prompts, the measured values against
slow references (transformers' own loss and `generate`), the verdict and its combination with
sense_grad, and a custom loop whose fed batches are the same with probes as without."""

import copy
import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_curriculum import Curriculum, CurriculumRun
from axolotl_curriculum.core import passkey
from axolotl_curriculum.core.errors import CurriculumError
from axolotl_curriculum.core.schedule import Timeline
from axolotl_curriculum.core.sense_eval import EvalVerdicts
from axolotl_curriculum.core.sense_grad import Gate
from axolotl_curriculum.run.probes import Probes, buckets

LEVELS = [{"input_len": 32, "max_steps": 4}, {"input_len": 64, "max_steps": 4}, {"input_len": 128}]


@pytest.fixture(scope="module")
def tok(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def encoder(tok):
    return lambda text: tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("block, message", [
    ({"probes": {}}, "curriculum.probes: no probe set"),
    ({"probes": {"every": 0, "short": True}}, "curriculum.probes.every: got 0"),
    ({"probes": {"passkey": {"depths": [1.5]}}}, "curriculum.probes.passkey.depths[0]: got 1.5"),
    ({"probes": {"passkey": {"lengths": []}}}, "curriculum.probes.passkey.lengths: got []"),
    ({"probes": {"short": {"rowz": 3}}}, "did you mean 'rows'"),
    ({"probes": {"short": {"input_len": 1}}}, "curriculum.probes.short.input_len: got 1"),
    ({"sense_eval": {"passkey_min": 0.9}}, "curriculum.sense_eval: decides on the probes"),
    ({"probes": {"short": True}, "sense_eval": {}}, "set short_tolerance"),
    ({"probes": {"short": True}, "sense_eval": {"passkey_min": 0.9}},
     "curriculum.sense_eval.passkey_min: needs the passkey probe"),
    ({"probes": {"passkey": True}, "sense_eval": {"passkey_min": 1.5}},
     "curriculum.sense_eval.passkey_min: got 1.5"),
    ({"probes": {"short": True, "every": 10}, "sense_eval": {"every": 15, "short_tolerance": 0.1}},
     "not a multiple of probes.every"),
    ({"probes": {"short": True}, "sense_eval": {"short_tolerance": 0.1, "combine": "any"}},
     "curriculum.sense_eval.combine: got 'any'"),
])
def test_bad_probe_settings_are_named(block, message):
    with pytest.raises(ValueError, match=None) as err:
        Curriculum.model_validate({"levels": LEVELS, **block})
    assert message in str(err.value)


def test_sense_eval_is_refused_on_a_ramp_and_lets_levels_set_min_steps():
    with pytest.raises(ValueError, match="sense_eval: a ramp's length follows the steps"):
        Curriculum.model_validate({"levels": {"ramp": {"from": 32, "to": 128, "steps": 10}},
                                   "probes": {"short": True},
                                   "sense_eval": {"short_tolerance": 0.1}})
    cur = Curriculum.model_validate({"levels": [{**LEVELS[0], "min_steps": 2}, *LEVELS[1:]],
                                     "probes": {"short": True},
                                     "sense_eval": {"short_tolerance": 0.1}})
    assert cur.min_steps(0) == 2 and cur.min_steps(1) == 0 and cur.gated


@settings(max_examples=40, deadline=None)
@given(extra=st.integers(0, 300), depth=st.floats(0, 1), seed=st.integers(0, 2**16),
       digits=st.integers(1, 8))
def test_a_passkey_prompt_is_its_length_with_the_key_at_its_depth(tok, extra, depth, seed, digits):
    encode = encoder(tok)
    length = passkey.shortest(encode, digits) + extra
    key = passkey.random_key(np.random.default_rng(seed), digits)
    p = passkey.prompt(encode, length, depth, key)
    assert len(key) == digits and key[0] != "0"
    assert len(p.ids) == length
    assert p.ids[p.answer_start:] == encode(" " + key)
    text = tok.decode(p.ids)
    assert text.endswith(passkey.QUESTION + " " + key) or text.replace(" ", "").endswith(
        (passkey.QUESTION + key).replace(" ", ""))
    # the needle sits `depth` of the way through the filler (to a filler token)
    needle = encode(passkey.NEEDLE.format(key=key))
    intro = encode(passkey.INTRO)
    at = next(i for i in range(len(p.ids)) if p.ids[i:i + len(needle)] == needle)
    filler = length - len(intro) - len(needle) - len(encode(passkey.QUESTION)) - len(
        encode(" " + key))
    assert at - len(intro) == round(depth * filler)


def test_prompts_are_drawn_from_the_seed_alone(tok):
    encode = encoder(tok)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = passkey.grid(encode, [200, 240], [0.1, 0.9], 3, 5, seed=7)
    assert torch.equal(state, torch.get_rng_state())  # torch's stream untouched
    b = passkey.grid(encode, [200, 240], [0.1, 0.9], 3, 5, seed=7)
    c = passkey.grid(encode, [200, 240], [0.1, 0.9], 3, 5, seed=8)
    assert a == b and [p.key for p in a] != [p.key for p in c]
    assert [(p.length, p.depth) for p in a][:4] == [(200, 0.1)] * 3 + [(200, 0.9)]


def test_buckets_double_from_the_first():
    assert buckets(16, 128) == [(0, 16), (16, 32), (32, 64), (64, 128)]
    assert buckets(512, 300) == [(0, 512)]


def _curriculum(**probes):
    return Curriculum.model_validate({"levels": LEVELS, "probes": {"every": 2, **probes}})


def _rows(tok, n=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ids = rng.integers(3, len(tok), int(rng.integers(40, 130))).tolist()
        labels = [-100] * 5 + ids[5:]  # a prompt left unscored
        rows.append({"input_ids": ids, "labels": labels})
    return Dataset.from_list(rows)


def test_measured_values_equal_slow_references(tiny_model, tok):
    """short: transformers' own loss over the rows' trained tokens cut to the first level;
    position_loss: a per-token loss computed row by row; passkey: `generate`'s greedy answer."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    cur = Curriculum.model_validate({
        "levels": [{"input_len": 32, "max_steps": 4}, {"input_len": 100, "max_steps": 4},
                   {"input_len": 200}],
        "probes": {"short": {"rows": 5}, "position_loss": {"rows": 3, "first_bucket": 16},
                   "passkey": {"lengths": [160, 200], "depths": [0.2, 0.8], "rows": 2,
                               "digits": 2}}})
    timeline = Timeline(cur.input_lens, [lv.max_steps for lv in cur.levels])
    probes = Probes(cur, timeline, model, 0, 1, lambda t: t)
    rows = _rows(tok)
    probes.build(rows, tok)
    # give the model a key to find: train it a little on the prompts themselves
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for p in probes.prompts[::2] * 20:  # half the prompts memorised, half not
        ids = torch.tensor([p.ids])
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    values = probes.measure(level=2)
    assert model.training  # the mode is given back
    model.eval()
    with torch.no_grad():
        total = count = 0.0
        for ids, labels in probes.short_rows:
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            n = sum(t != -100 for t in labels[1:])
            total, count = total + out.loss.item() * n, count + n
        assert values["probe/short"] == pytest.approx(total / count, rel=1e-5)
        assert all(len(ids) <= 32 for ids, _ in probes.short_rows)
        per_bucket = {}
        for ids, labels in probes.long_rows:
            ids, labels = ids[:200], labels[:200]
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            for pos in range(1, len(ids)):
                if labels[pos] == -100:
                    continue
                loss = -torch.log_softmax(logits[pos - 1], -1)[labels[pos]].item()
                b = next(k for k, (lo, hi) in enumerate(probes.buckets) if lo <= pos < hi)
                per_bucket.setdefault(b, []).append(loss)
        for b, losses in per_bucket.items():
            lo, hi = probes.buckets[b]
            assert values[f"probe/position_loss@{lo}-{hi}"] == pytest.approx(np.mean(losses), rel=1e-4)
        for length in (160, 200):
            for depth in (0.2, 0.8):
                cell = [p for p in probes.prompts if (p.length, p.depth) == (length, depth)]
                right = []
                for p in cell:
                    prompt = torch.tensor([p.ids[:p.answer_start]])
                    out = model.generate(prompt, max_new_tokens=len(p.ids) - p.answer_start,
                                         do_sample=False, pad_token_id=tok.pad_token_id)
                    right.append(out[0, p.answer_start:].tolist() == p.ids[p.answer_start:])
                assert values[f"probe/passkey@{length}/depth{depth:g}"] == np.mean(right)
            assert values[f"probe/passkey@{length}"] == pytest.approx(np.mean(
                [values[f"probe/passkey@{length}/depth{d:g}"] for d in (0.2, 0.8)]))
    accuracies = [values[f"probe/passkey@{n}"] for n in (160, 200)]
    assert 0 < np.mean(accuracies) < 1, values  # right and wrong answers both compared


def test_a_level_probes_passkey_up_to_the_next_levels_length(tiny_model, tok):
    cur = _curriculum(passkey={"lengths": [160, 200, 240], "depths": [0.5], "rows": 1})
    cur = Curriculum.model_validate({**cur.model_dump(exclude_none=True), "levels": [
        {"input_len": 160, "max_steps": 4}, {"input_len": 200, "max_steps": 4},
        {"input_len": 256}]})
    timeline = Timeline(cur.input_lens, [lv.max_steps for lv in cur.levels])
    probes = Probes(cur, timeline, None, 0, 1, lambda t: t)
    probes.build(None, tok)
    assert sorted({i.length for i in probes.items(0)}) == [160, 200]
    assert sorted({i.length for i in probes.items(2)}) == [160, 200, 240]
    with pytest.raises(CurriculumError, match="probes.short: needs held-out rows"):
        Probes(_curriculum(short=True), timeline, None, 0, 1, lambda t: t).build(None, tok)
    with pytest.raises(CurriculumError, match="cannot hold a passkey prompt"):
        Probes(_curriculum(passkey={"lengths": [64]}), timeline, None, 0, 1, lambda t: t).build(None, tok)


def _gate(**sense_eval):
    block = {"levels": [{"input_len": 16, "max_steps": 100}, {"input_len": 32}],
             "probes": {"every": 5, "short": True, "passkey": {"lengths": [16, 32]}},
             "sense_eval": {"short_tolerance": 0.1, "passkey_min": 0.5, **sense_eval}}
    if "combine" in sense_eval:
        block["sense_grad"] = {"window": 6, "settle_steps": 0, "min_steps": 6}
    cur = Curriculum.model_validate(block)
    timeline = Timeline(cur.input_lens, [lv.max_steps for lv in cur.levels])
    return cur, Gate(cur, timeline, delay=2), timeline


def test_the_verdict_asks_short_recovered_and_the_passkey_found_at_the_levels_length():
    cur, _, _ = _gate()
    verdicts = EvalVerdicts(cur)
    verdicts.note_start(0, {"probe/short": 2.0})
    ok, why, stats = verdicts.verdict(0, 0, {"probe/short": 2.3, "probe/passkey@16": 0.9})
    assert not ok and "short 2.3 > 2 x (1 + 0.1)" in why
    ok, why, _ = verdicts.verdict(0, 0, {"probe/short": 2.1, "probe/passkey@16": 0.25,
                                         "probe/passkey@32": 1.0})
    assert not ok and why == "passkey@16 0.25 < 0.5"  # judged at its own length, not the next
    ok, why, stats = verdicts.verdict(0, 0, {"probe/short": 2.1, "probe/passkey@16": 0.5})
    assert ok and why.startswith("recovered: short 2.1 within 0.1 of 2")
    assert stats == {"short": 2.1, "short_before": 2.0, "passkey_length": 16, "passkey": 0.5}
    ok, why, _ = verdicts.verdict(1, 40, {"probe/short": 1.0, "probe/passkey@32": 1.0})
    assert not ok and "no short probe before the level began" in why
    restored = EvalVerdicts(cur)
    restored.load_state_dict(verdicts.state_dict())
    assert restored.before == {0: 2.0}


def test_the_gate_advances_on_the_verdict_alone_or_combined_with_sense_grad():
    _, gate, timeline = _gate()
    for step in range(10):
        gate.observe(step, 1.0, 2.0)
    assert gate.decide(10, None).reason == "no probe in this level yet"
    assert gate.decide(10, (False, "short 3 > 2")).action == "hold"
    decision = gate.decide(10, (True, "recovered: x"))
    assert decision.action == "advance" and decision.reason == "recovered: x; level 1 from step 12"
    assert timeline.level_at(11) == 1 and timeline.level_at(10) == 0
    for combine, passed, expected in (("both", True, "advance"), ("both", False, "hold"),
                                      ("either", False, "advance")):
        _, gate, _ = _gate(combine=combine)
        for step in range(10):  # calm: sense_grad is settled
            gate.observe(step, 1.0, 2.0)
        decision = gate.decide(10, (passed, "v"))
        assert decision.action == expected, (combine, passed, decision)
        assert decision.reason.startswith("sense_grad: settled")
    _, gate, _ = _gate(combine="either")
    for step in range(10):  # volatile: sense_grad holds, the verdict alone decides
        gate.observe(step, [1.0, 5.0][step % 2], 2.0)
    assert gate.decide(10, (False, "v")).action == "hold"
    assert gate.decide(10, (True, "v")).action == "advance"


def _loop(tiny_model, tok, block, steps=12, world=1, stop_at=None, resume=None):
    """A hand-written loop over a fixed dataset; returns the token ids fed per step, torch's
    random draws after each step and the run. `stop_at`: stop after that step (the run's
    state_dict and the model's weights are on the run as `.saved`); `resume`: (saved, step)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    if resume is not None:
        model.load_state_dict(resume[0]["weights"])
    train = _rows(tok, n=96, seed=1)
    run = CurriculumRun(block, _loop.out, rank=0, world_size=world)

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = (torch.tensor(r["input_ids"]),
                                                      torch.tensor(r["labels"]), 1)
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    loader = run.train_loader(train, collate, 4, seed=3, tokenizer=tok, model=model,
                              max_steps=steps, eval_dataset=_rows(tok, n=10, seed=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fed, dropout_draws = [], []
    first = 1
    if resume is not None:
        run.load_state_dict(resume[0]["run"], resume[1])
        opt.load_state_dict(resume[0]["opt"])
        first = resume[1] + 1
    run.start()
    for g, batch in zip(range(first, steps + 1), loader):
        fed.append(batch["input_ids"].tolist())
        loss = model(**batch).loss
        loss.backward()
        run.on_micro_batch(batch, loss)
        opt.step()
        opt.zero_grad()
        run.on_step_end(g, torch.ones(()))
        dropout_draws.append(torch.rand(()).item())  # torch's stream after the step
        if g == stop_at:
            run.saved = {"run": json.loads(json.dumps(run.state_dict(g))),
                         "weights": copy.deepcopy(model.state_dict()),
                         "opt": copy.deepcopy(opt.state_dict())}
            run.log.flush()
            return fed, dropout_draws, run
    run.finish()
    return fed, dropout_draws, run


def test_a_run_with_probes_feeds_the_batches_of_the_run_without(tiny_model, tok, tmp_path):
    levels = [{"input_len": 32, "max_steps": 6}, {"input_len": 64, "max_steps": 6},
              {"input_len": 256}]
    _loop.out = tmp_path / "plain"
    plain, plain_rng, _ = _loop(tiny_model, tok, {"levels": levels}, steps=18)
    _loop.out = tmp_path / "probed"
    block = {"levels": levels, "probes": {
        "every": 3, "short": {"rows": 4}, "position_loss": {"rows": 2, "first_bucket": 16},
        "passkey": {"lengths": [160, 384], "depths": [0.5], "rows": 1}},
        "sense_eval": {"passkey_min": 1.0}}  # unreachable: every level runs to its cap
    probed, probed_rng, run = _loop(tiny_model, tok, block, steps=18)
    assert probed == plain  # token ids, step by step
    assert probed_rng == plain_rng  # and torch's random stream after every step
    lines = [json.loads(x) for x in (tmp_path / "probed" / "curriculum_log.jsonl").open()]
    # every 3 steps; the levels' starts (after steps 6 and 12) and the end fall on them
    assert [r["step"] for r in lines if "probe/short" in r] == [3, 6, 9, 12, 15, 18]
    # from level 1 on: a level probes up to the next level's length (256)
    assert [r["step"] for r in lines if "probe/passkey@160" in r] == [9, 12, 15, 18]
    # the last level (256) also probes the length beyond it it was asked for
    assert [r["step"] for r in lines if "probe/passkey@384" in r] == [15, 18]
    # the probes before step 1 (the model as it came): with the evals, no step line to ride on
    before = [json.loads(x) for x in (tmp_path / "probed" / "curriculum_evals.jsonl").open()]
    assert [r["step"] for r in before] == [0] and before[0]["probe/short"] > 0
    assert "probe/position_loss@0-16" in before[0]
    assert [r["level"] for r in lines] == [0] * 6 + [1] * 6 + [2] * 6
    decisions = {r["step"]: r["decision"] for r in lines if "decision" in r}
    assert decisions == {3: "hold", 6: "pending", 9: "hold", 12: "pending", 15: "last_level",
                         18: "last_level"}
    assert all("passkey" in r["reason"] for r in lines if r.get("decision") == "hold")
    holds = [r for r in lines if r.get("decision") == "hold"]
    assert [(r["reason"], r["passkey_length"]) for r in holds] == [
        ("no passkey probe within input_len 32", None),
        ("no passkey probe within input_len 64", None)]  # 160 tokens fit in neither: they run to the cap


def test_a_reachable_verdict_ends_the_level_at_the_logged_step(tiny_model, tok, tmp_path):
    _loop.out = tmp_path / "gated"
    block = {"levels": [{"input_len": 32, "max_steps": 8}, {"input_len": 64, "max_steps": 8},
                        {"input_len": 128}],
             "probes": {"every": 2, "short": {"rows": 4}},
             "sense_eval": {"short_tolerance": 10.0}}
    fed, _, _ = _loop(tiny_model, tok, block, steps=14)
    lines = [json.loads(x) for x in (tmp_path / "gated" / "curriculum_log.jsonl").open()]
    advances = [r for r in lines if r.get("decision") == "advance"]
    assert advances[0]["step"] == 2 and advances[0]["reason"].startswith("recovered: short")
    first = int(advances[0]["reason"].rsplit(" ", 1)[1])  # "... level 1 from step N"
    widths = [max(sum(t != tok.pad_token_id for t in row) for row in step) for step in fed]
    # the witness: the batches themselves get longer on the step the decision named
    assert all(w <= 32 for w in widths[:first - 1]) and widths[first - 1] > 32, (first, widths)
    assert first < 9  # before max_steps would have forced it


def test_a_resume_keeps_the_levels_before_value_and_decides_as_the_uninterrupted_run(
        tiny_model, tok, tmp_path):
    block = {"levels": [{"input_len": 32, "max_steps": 8}, {"input_len": 64, "max_steps": 8},
                        {"input_len": 128}],
             "probes": {"every": 2, "short": {"rows": 4}},
             "sense_eval": {"short_tolerance": 10.0}}

    def decisions(out):
        return [(r["step"], r["level"], r.get("decision"), r.get("reason"), r.get("short_before"))
                for r in map(json.loads, (out / "curriculum_log.jsonl").open())]

    _loop.out = tmp_path / "whole"
    whole, _, _ = _loop(tiny_model, tok, block, steps=14)
    _loop.out = tmp_path / "resumed"
    _, _, stopped = _loop(tiny_model, tok, block, steps=14, stop_at=5)
    assert stopped.decisions.verdicts.before  # level 1's `before`, measured before step 5
    resumed, _, _ = _loop(tiny_model, tok, block, steps=14, resume=(stopped.saved, 5))
    assert resumed == whole[5:]  # the same batches after the resume
    got, want = decisions(tmp_path / "resumed"), decisions(tmp_path / "whole")
    assert [d[:3] for d in got] == [d[:3] for d in want]
    advances = [d for d in want if d[2] == "advance"]
    assert [d[1] for d in advances] == [0, 1] and advances[1][0] > 5  # decided after the resume
    resumed_advance = next(d for d in got if d[2] == "advance" and d[1] == 1)
    assert resumed_advance[4] == pytest.approx(advances[1][4])  # the restored `before`


CHAT = ("{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_a_chat_passkey_asks_the_same_key_as_a_user_turn(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    cur = Curriculum.model_validate({
        "levels": [*LEVELS[:2], {"input_len": 256}],
        "probes": {"passkey": {"lengths": [200], "depths": [0.5], "rows": 2, "chat": True}}})
    timeline = Timeline(cur.input_lens, [lv.max_steps for lv in cur.levels])
    with pytest.raises(CurriculumError, match="passkey.chat: the tokenizer has no chat template"):
        Probes(cur, timeline, None, 0, 1, lambda t: t).build(None, tok)
    tok.chat_template = CHAT
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    probes = Probes(cur, timeline, model, 0, 1, lambda t: t)
    probes.build(None, tok)
    plain, chat = probes.prompts[0::2], probes.prompts[1::2]
    assert [p.key for p in plain] == [p.key for p in chat] and all(p.chat for p in chat)
    for p in chat:
        assert len(p.ids) == 200
        text = tok.decode(p.ids)
        # the template's own rendering of the question turn, then the answer
        turn = tok.apply_chat_template([{"role": "user", "content": "Q"}], tokenize=False,
                                       add_generation_prompt=True)
        assert text.startswith(turn.split("Q")[0]) and "<|end|><|assistant|>" in text
        assert p.ids[p.answer_start:] == encoder(tok)(" " + p.key)
    values = probes.measure(level=2)
    assert {"probe/passkey@200", "probe/passkey_chat@200", "probe/passkey_chat@200/depth0.5"} <= set(values)


def test_short_input_len_cuts_the_held_out_rows_there(tok):
    """short.input_len: each short row is a held-out row's first input_len tokens (not the
    first level's 32), the rows without a trained token there left out."""
    rows = _rows(tok)
    cur = Curriculum.model_validate({"levels": LEVELS, "probes": {"short": {
        "rows": 50, "input_len": 48}}})
    timeline = Timeline(cur.input_lens, [lv.max_steps for lv in cur.levels])
    probes = Probes(cur, timeline, None, 0, 1, lambda t: t)
    probes.build(rows, tok)
    want = sorted((r["input_ids"][:48], r["labels"][:48]) for r in rows)
    assert sorted(probes.short_rows) == want and max(len(i) for i, _ in want) == 48

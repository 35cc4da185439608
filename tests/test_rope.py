"""Per-level RoPE in a hand-written loop, on two model families (llama, qwen2) built offline.

The witness: at each level, a freshly built model whose config carries that level's RoPE
(transformers computes its rotary frequencies itself) with the trained weights gives the same
logits as the trained model; the saved model reloads with the last level's RoPE; a resume
restores the level's RoPE; a model without RoPE is refused before step 1."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from datasets import Dataset
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          Qwen2Config)

from axolotl_curriculum import CurriculumRun

THETAS = (10_000.0, 80_000.0, 640_000.0)
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}
BLOCK = {"levels": [{"input_len": 16, "max_steps": 3},  # the model's own RoPE (theta 1e4)
                    {"input_len": 32, "max_steps": 3, "rope_theta": THETAS[1]},
                    {"input_len": 64, "rope_theta": THETAS[2], "rope_scaling": YARN}]}
# what each level's config carries, written out by hand (the last: yarn on the raised base)
EXPECTED = [{"rope_type": "default", "rope_theta": THETAS[0]},
            {"rope_type": "default", "rope_theta": THETAS[1]},
            {"rope_theta": THETAS[2], **YARN}]


def config_of(family: str):
    common = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                  rope_parameters={"rope_type": "default", "rope_theta": THETAS[0]})
    return LlamaConfig(**common) if family == "llama" else Qwen2Config(**common)


def data(n=64):
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(3, 128, (int(torch.randint(8, 64, (1,), generator=g)),), generator=g)
        rows.append({"input_ids": ids.tolist(), "labels": ids.tolist()})
    return Dataset.from_list(rows)


def pad(batch):
    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    labels = torch.full((len(batch), width), -100)
    for i, r in enumerate(batch):
        ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
        labels[i, :len(r["labels"])] = torch.tensor(r["labels"])
    return {"input_ids": ids, "labels": labels}


PROBE = torch.arange(3, 3 + 100).remainder(125).add(3).unsqueeze(0)


def fresh_logits(model, rope: dict) -> torch.Tensor:
    """A model built anew from a config carrying `rope`, with `model`'s weights."""
    config = copy.deepcopy(model.config)
    config.rope_parameters = dict(rope)
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        return fresh.eval()(PROBE).logits


def own_logits(model) -> torch.Tensor:
    with torch.no_grad():
        was = model.training
        out = model.eval()(PROBE).logits
        model.train(was)
        return out


def train(run, loader, model, steps, first=1, at_step=lambda g: None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run.start()
    for g, batch in zip(range(first, steps + 1), loader):
        at_step(g)
        loss = model(**pad(batch)).loss
        loss.backward()
        run.on_micro_batch(pad(batch), loss)
        opt.step()
        opt.zero_grad()
        run.on_step_end(g, torch.ones(()))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_each_level_trains_with_its_rope_and_the_saved_model_keeps_the_last(family, tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config_of(family))
    ds = data()
    run = CurriculumRun(BLOCK, tmp_path / "out")
    loader = run.train_loader(ds, lambda b: b, batch_size=2, max_steps=9, model=model)
    checked = {}

    def witness(g):  # before the step's forward: the model as it trains this step
        level = (g - 1) // 3
        if g in (1, 4, 7):
            own = own_logits(model)
            same = (own - fresh_logits(model, EXPECTED[level])).abs().max().item()
            assert same < 1e-5, (level, same)
            # and not the previous level's RoPE (the check can tell them apart)
            if level:
                other = (own - fresh_logits(model, EXPECTED[level - 1])).abs().max().item()
                assert other > 100 * max(same, 1e-7), (level, same, other)
            checked[level] = True

    train(run, loader, model, 9, at_step=witness)
    assert sorted(checked) == [0, 1, 2]
    run.finish()
    summary = json.loads((tmp_path / "out" / "curriculum_summary.json").read_text())
    assert {k: summary["rope"][k] for k in EXPECTED[2]} == EXPECTED[2]
    lines = (tmp_path / "out" / "curriculum_log.jsonl").read_text().splitlines()
    thetas = [json.loads(line)["rope_theta"] for line in lines]
    assert thetas == [THETAS[0]] * 3 + [THETAS[1]] * 3 + [THETAS[2]] * 3

    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert {k: reloaded.config.rope_parameters[k] for k in EXPECTED[2]} == EXPECTED[2]
    torch.testing.assert_close(own_logits(reloaded), own_logits(model), rtol=1e-5, atol=1e-5)


def test_a_resume_restores_the_levels_rope_on_a_model_loaded_anew(tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config_of("llama"))
    ds = data()
    run = CurriculumRun(BLOCK, tmp_path / "a")
    loader = run.train_loader(ds, lambda b: b, batch_size=2, max_steps=9, model=model)
    train(run, loader, model, 5)
    state, weights = run.state_dict(5), copy.deepcopy(model.state_dict())

    again = AutoModelForCausalLM.from_config(config_of("llama"))  # the base config: theta 1e4
    again.load_state_dict(weights)
    resumed = CurriculumRun(BLOCK, tmp_path / "b")
    resumed.train_loader(ds, lambda b: b, batch_size=2, max_steps=9, model=again)
    resumed.load_state_dict(state, 5)
    resumed.start()  # step 6 trains at level 1
    torch.testing.assert_close(own_logits(again), fresh_logits(again, EXPECTED[1]))
    assert again.config.rope_parameters["rope_theta"] == THETAS[1]


def test_rope_on_a_model_without_rope_is_refused_before_step_1(tmp_path):
    model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=1, n_head=2))
    run = CurriculumRun(BLOCK, tmp_path)
    with pytest.raises(ValueError, match="rope_theta / rope_scaling need a model whose rotary"):
        run.train_loader(data(), lambda b: b, batch_size=2, max_steps=9, model=model)
    with pytest.raises(ValueError, match="pass model= to train_loader"):
        CurriculumRun(BLOCK, tmp_path).train_loader(data(), lambda b: b, batch_size=2, max_steps=9)


def test_rope_goes_through_a_peft_wrapper(tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_config(config_of("llama")),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    run = CurriculumRun(BLOCK, tmp_path)
    loader = run.train_loader(data(), lambda b: b, batch_size=2, max_steps=9, model=model)
    train(run, loader, model, 7)  # step 8 trains at level 2
    merged = model.merge_and_unload()
    torch.testing.assert_close(own_logits(merged), fresh_logits(merged, EXPECTED[2]),
                               rtol=1e-5, atol=1e-5)

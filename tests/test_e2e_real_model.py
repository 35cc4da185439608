"""The real pretrained model (SmolLM2-135M-Instruct, from PyPI) on real chat data through
`axolotl train`: Axolotl's chat_template strategy with the model's own template, multi-turn
rows cut at turn ends. Witnessed from the model's forward (tests/plugins/fed_probe.py): every
cut example ends with the template's end-of-turn token and trains a token, every step's
longest example fits its logged level and the levels grow; the saved model reloads with plain
transformers (peft for the adapter), reads held-out chats better than the base model does,
and generates."""

import json
import math
import os
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_curriculum.testing.real_model import END_OF_TURN, write_chats
from e2e_checks import examples_in, forwards, pad_token_id
from conftest import two_ranks

pytestmark = pytest.mark.e2e


def chat_config(real_model, data, **overrides):
    cfg = dict(
        base_model=str(real_model), sequence_len=256, micro_batch_size=2,
        datasets=[{"path": str(data), "type": "chat_template", "ds_type": "json",
                   "field_messages": "messages", "roles_to_train": ["assistant"],
                   "train_on_eos": "turn"}],
        chat_template="tokenizer_default", special_tokens=None, learning_rate=1e-3,
        warmup_steps=0, logging_steps=1, max_steps=6,
        curriculum={"truncation": "segment", "levels": [
            {"input_len": 64, "max_steps": 2}, {"input_len": 128, "max_steps": 2},
            {"input_len": 256}]})
    cfg.update(overrides)
    return cfg


def check_fed_at_turn_ends(run, ranks, lens):
    """Every example the forward received, on every rank: a whole row or cut after an
    end-of-turn token, with a trained token; each step's longest example fits its logged
    level, the same micro-batches per step on every rank, and later levels feed longer
    examples than the level before allows."""
    out = run.out
    end = AutoTokenizer.from_pretrained(out).convert_tokens_to_ids(END_OF_TURN)
    pad = pad_token_id(out)
    rows = {tuple(json.loads(line)["input_ids"]) for line in (out / "train_rows.jsonl").open()}
    longest, batches = {}, {}
    for rank in range(ranks):
        logged = {r["step"]: r for r in run.rank(rank)}
        for forward in forwards(out, rank):
            step = forward["step"]
            batches[rank, step] = batches.get((rank, step), 0) + 1
            for pieces in examples_in(forward, pad):
                for ids, labels in pieces:
                    assert ids[-1] == end or tuple(ids) in rows, (step, ids[-8:])
                    assert any(x != -100 for x in labels[1:]), step
                    assert len(ids) <= logged[step]["input_len"], step
                    level = logged[step]["level"]
                    longest[level] = max(longest.get(level, 0), len(ids))
    assert {s: n for (r, s), n in batches.items() if r == 0} == \
        {s: n for (r, s), n in batches.items() if r == ranks - 1}
    assert sorted(longest) == list(range(len(lens)))
    assert all(longest[k] > lens[k - 1] for k in range(1, len(lens))), longest


def held_out_loss(model, tok, chats):
    """The mean loss per token of held-out chats, rendered with the model's template."""
    total, count = 0.0, 0
    for messages in chats:
        ids = tok.apply_chat_template(messages, return_tensors="pt")
        ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()
        total, count = total + loss * (ids.shape[1] - 1), count + ids.shape[1] - 1
    return total / count


def check_reloads_learns_and_generates(real_model, trained, tmp_path):
    tok = AutoTokenizer.from_pretrained(trained)
    held = write_chats(tmp_path / "held.jsonl", 6, seed=99, max_chars=200)
    chats = [json.loads(line)["messages"] for line in held.open()]
    base = AutoModelForCausalLM.from_pretrained(real_model, torch_dtype=torch.float32).eval()
    before = held_out_loss(base, tok, chats)
    if (trained / "adapter_config.json").exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, trained).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(trained, torch_dtype=torch.float32).eval()
    after = held_out_loss(model, tok, chats)
    assert math.isfinite(after) and after < before, (before, after)
    prompt = tok.apply_chat_template([chats[0][-2]] if chats[0][-2]["role"] == "user" else
                                     chats[0][:2], add_generation_prompt=True,
                                     return_tensors="pt")
    prompt = prompt if isinstance(prompt, torch.Tensor) else prompt["input_ids"]
    with torch.no_grad():
        new = model.generate(prompt, max_new_tokens=12, do_sample=False)[0, prompt.shape[1]:]
    assert tok.decode(new, skip_special_tokens=True).strip()
    return before, after


@pytest.mark.axolotl_api
def test_lora_on_two_ranks_cuts_chat_rows_at_turn_ends(axolotl_train, real_model, tmp_path):
    """LoRA, packed, 2 gloo ranks, segment levels 64/128/256 on 1-4-exchange chats."""
    data = write_chats(tmp_path / "chats.jsonl", 160, seed=0, max_chars=200)
    run = axolotl_train(launcher_args=two_ranks(), env={"ACCELERATE_USE_CPU": "true"},
                        probe=True, **chat_config(
                            real_model, data, adapter="lora", lora_r=8, lora_alpha=16,
                            lora_dropout=0.0, lora_target_linear=True,
                            # Axolotl turns its Triton LoRA kernels on for llama: CUDA only
                            lora_mlp_kernel=False, lora_qkv_kernel=False, lora_o_kernel=False))
    recs = run.rank(0)
    assert [r["level"] for r in recs] == [0, 0, 1, 1, 2, 2]
    assert all(math.isfinite(r["loss"]) for r in recs)
    assert sum(r["global_cut"] + r["global_prompt_cut"] for r in recs) > 0  # rows were cut
    check_fed_at_turn_ends(run, ranks=2, lens=[64, 128, 256])
    check_reloads_learns_and_generates(real_model, run.out, tmp_path)


def test_full_fine_tune_unpacked_keeps_the_answer(axolotl_train, real_model, tmp_path):
    """A full fine-tune, 1 rank, not packed, prompt_cut left with a system prompt kept
    (keep_prompt_head), levels 48 then 256: a short level feeds a first answer behind its
    prompt's end where the first exchange does not fit."""
    data = write_chats(tmp_path / "chats.jsonl", 120, seed=1, max_chars=150)
    run = axolotl_train(probe=True, **chat_config(
        real_model, data, sample_packing=False, max_steps=4, learning_rate=2e-5,
        curriculum={"truncation": "segment", "keep_prompt_head": 8, "levels": [
            {"input_len": 48, "max_steps": 2}, {"input_len": 256}]}))
    recs = run.rank(0)
    assert [r["level"] for r in recs] == [0, 0, 1, 1]
    assert sum(r["global_prompt_cut"] for r in recs[:2]) > 0
    assert all(math.isfinite(r["loss"]) for r in recs)
    check_fed_at_turn_ends(run, ranks=1, lens=[48, 256])
    try:
        check_reloads_learns_and_generates(real_model, run.out, tmp_path)
    finally:  # a full fine-tune writes 0.5 GB of weights
        for path in run.out.glob("*.safetensors"):
            os.remove(path)
        shutil.rmtree(run.out / "prepared", ignore_errors=True)

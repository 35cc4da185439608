"""A curriculum in a plain TRL `SFTTrainer` script, no Axolotl config involved.

    python examples/trl_sft.py [workdir]

Builds the demo's tiny llama and corpus offline, then trains with the same `curriculum:` block
an Axolotl YAML would hold. The only curriculum line is `attach(trainer, curriculum)`.
"""

import sys
from pathlib import Path

import yaml
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from axolotl_curriculum import Curriculum, attach
from axolotl_curriculum.testing import build_tiny_model, write_corpus

CURRICULUM = yaml.safe_load("""
levels:
  - input_len: 32
    max_steps: 10
  - input_len: 64
    max_steps: 10
  - input_len: 128
""")


def main(work: Path) -> None:
    model_dir = build_tiny_model(work / "model")
    data = write_corpus(work / "corpus.jsonl", model_dir, n=400, min_tokens=70, max_tokens=128,
                        seed=1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = SFTConfig(
        output_dir=str(work / "out"), max_steps=30, per_device_train_batch_size=4,
        learning_rate=1e-3, logging_steps=5, save_strategy="no", report_to=[],
        max_length=128, packing=False, dataset_text_field="text", seed=42, use_cpu=True,
    )
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                         train_dataset=load_dataset("json", data_files=str(data), split="train"),
                         processing_class=tokenizer)
    attach(trainer, Curriculum.model_validate(CURRICULUM))
    trainer.train()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "trl-curriculum-demo").resolve())

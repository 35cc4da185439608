"""The experiment's data: real prose found offline, and the synthetic from-scratch rows.

- general text to pretrain the base model on: the prose paragraphs of the machine's man pages;
- the instruction set to fine-tune on: "what does <module>.<name> do?" answered by the Python
  standard library's own docstrings (real prose, long-tailed: median ~20 words, 1% over 250);
- the long-range task: "<name> holds <colour>." then a man-page filler of log-normal length, to
  be answered "<name> holds <colour>." (needs the whole context);
- the from-scratch setting: generated sentences and the same recall rows (the v0.1 experiment).
Everything is deterministic for a given machine; its hash keys the cached runs.
"""

from __future__ import annotations

import ast
import glob
import gzip
import hashlib
import json
import math
import random
import re
import sysconfig
from pathlib import Path

from axolotl_curriculum.testing import text

NAMES = "ada bo cy dee eli fay gus hal ivy jo kai lu mo nia oz pip".split()
VALUES = "red blue green gold grey pink black white brown amber".split()
RECALL_QUESTION = "Which colour does the name at the start hold?"
_ESCAPES = re.compile(r"\\f(?:\(..|\[[^]]*\]|.)|\\\*(?:\(..|\[[^]]*\]|.)|\\\(..|\\s[-+]?\d|\\.")
_MACRO = re.compile(r"\.(?:B|I|BI|BR|IR|RB|RI|IB|SM|SB)\s+(.*)")


def man_paragraphs(min_words: int = 8, max_files: int | None = None) -> list[str]:
    """The prose paragraphs of the man pages (troff markup stripped; gcloud's thousands of
    near-identical pages left out so one tool does not dominate)."""
    files = [f for f in sorted(glob.glob("/usr/share/man/man[1-8]/*.gz"))
             if not Path(f).name.startswith("gcloud")][:max_files]
    out: list[str] = []
    for path in files:
        try:
            raw = gzip.open(path, "rt", errors="replace").read()
        except (OSError, EOFError):
            continue
        lines: list[str] = []
        for line in raw.splitlines():
            if line.startswith(("'", '.\\"')):
                continue
            if line.startswith("."):
                m = _MACRO.match(line)
                if not m:
                    lines.append("\n")  # a paragraph or section macro ends the paragraph
                    continue
                line = m.group(1).replace('"', "")
            lines.append(_ESCAPES.sub("", line.replace("\\-", "-")))
        for para in " ".join(lines).split("\n"):
            para = re.sub(r"\s+", " ", para).strip()
            if len(para.split()) >= min_words:
                out.append(para)
    return out


def docstring_rows(min_words: int = 6) -> list[dict]:
    """Alpaca rows from the standard library's public functions and classes."""
    lib = sysconfig.get_paths()["stdlib"]
    rows = []
    for path in sorted(glob.glob(f"{lib}/**/*.py", recursive=True)):
        if any(part in path for part in ("/test", "site-packages", "idlelib", "lib2to3")):
            continue
        try:
            tree = ast.parse(Path(path).read_text(errors="replace"))
        except (SyntaxError, ValueError):
            continue
        module = path[len(lib) + 1:-3].replace("/", ".")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= min_words and not node.name.startswith("_"):
                    rows.append({"instruction": f"What does {node.name} in the Python module "
                                                f"{module} do?", "input": "", "output": doc,
                                 "kind": "doc"})
    return rows


def recall_row(rng: random.Random, filler: str) -> dict:
    key, value = rng.choice(NAMES), rng.choice(VALUES)
    return {"instruction": RECALL_QUESTION, "input": f"{key} holds {value}. {filler}",
            "output": f"{key} holds {value}.", "kind": "recall"}


def fillers(rng: random.Random, paragraphs: list[str], mean_words: float):
    """Man-page text of log-normal length: the distance the recall task must bridge."""
    while True:
        words = max(5, int(rng.lognormvariate(math.log(mean_words), 0.9)))
        start = rng.randrange(len(paragraphs))
        taken: list[str] = []
        for para in paragraphs[start:] + paragraphs[:start]:
            taken += para.split()
            if len(taken) >= words:
                break
        yield " ".join(taken[:words])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_texts(path: Path, limit: int | None = None) -> list[str]:
    """Each row's text: a completion row's `text`, an alpaca row's fields joined."""
    rows = [json.loads(line) for line in path.read_text().splitlines()[:limit]]
    return [r.get("text") or " ".join(str(r.get(k, "")) for k in ("instruction", "input", "output"))
            for r in rows]


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def finetune_data(work: Path, *, seq: int, train_rows: int, test_rows: int,
                  recall_share: float = 0.25, pretrain_words: int = 1_500_000) -> dict:
    """Pretraining text, instruction train/test sets (docstrings + recall), split by row."""
    work.mkdir(parents=True, exist_ok=True)
    paras = man_paragraphs()
    if len(paras) < 1000:
        raise SystemExit("experiment: this machine has too few man pages for the fine-tuning "
                         "setting (/usr/share/man); pass --train/--test with your own data")
    rng = random.Random(1234)
    rng.shuffle(paras)
    held = paras[: len(paras) // 10]  # fillers for the recall rows: never seen in pretraining
    pretrain, words = [], 0
    for para in paras[len(held):]:
        pretrain.append({"text": para})
        words += len(para.split())
        if words >= pretrain_words:
            break
    docs = docstring_rows()
    rng.shuffle(docs)
    n_test_docs = int(test_rows * (1 - recall_share))
    fill = fillers(rng, held, mean_words=seq / 4)
    n_recall = int(train_rows * recall_share)
    train = docs[n_test_docs:n_test_docs + train_rows - n_recall] + [
        recall_row(rng, next(fill)) for _ in range(n_recall)]
    test = docs[:n_test_docs] + [recall_row(rng, next(fill)) for _ in range(test_rows - n_test_docs)]
    rng.shuffle(train)
    paths = {"pretrain": write_jsonl(work / "pretrain.jsonl", pretrain),
             "train": write_jsonl(work / "train.jsonl", train),
             "test": write_jsonl(work / "test.jsonl", test)}
    return {**paths, "hash": digest(*paths.values()), "format": "alpaca",
            "describe": f"{len(pretrain)} man-page paragraphs ({words} words) to pretrain; "
                        f"{len(train)} instruction rows to fine-tune ({len(train) - n_recall} "
                        f"standard-library docstrings, {n_recall} long-range recall rows with "
                        f"man-page fillers); {len(test)} held-out rows of both kinds"}


def thinned(data: dict, rows: int) -> dict:
    """`data` evaluated on `rows` of its held-out rows, evenly spaced (so each kind keeps its
    share: the test file holds one kind, then the other): a sweep's evals at a third of the
    cost. The pretraining text and training rows stay, so the base model does too."""
    lines = Path(data["test"]).read_text().splitlines()
    picked = [lines[i * len(lines) // rows] for i in range(min(rows, len(lines)))]
    test = Path(data["test"]).with_name(f"test-{len(picked)}.jsonl")
    test.write_text("".join(line + "\n" for line in picked))
    return {**data, "test": test, "hash": digest(data["pretrain"], data["train"], test),
            "describe": data["describe"] + f" ({len(picked)} of them, evenly spaced, evaluated)"}


def scratch_data(work: Path, *, seq: int, train_rows: int, test_rows: int) -> dict:
    """The from-scratch setting: generated sentences, half of them recall rows (completion)."""
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1234)
    mean = seq / 5

    def row() -> dict:
        filler = text(rng, max(1, int(rng.lognormvariate(math.log(mean), 0.9))))
        if rng.random() < 0.5:
            key, value = rng.choice(NAMES), rng.choice(VALUES)
            return {"text": f"{key} holds {value}. {filler} so {key} holds {value}.",
                    "kind": "recall"}
        return {"text": filler, "kind": "prose"}

    train = [row() for _ in range(train_rows)]
    test = [row() for _ in range(test_rows)]
    paths = {"train": write_jsonl(work / "train.jsonl", train),
             "test": write_jsonl(work / "test.jsonl", test)}
    return {**paths, "hash": digest(*paths.values()), "format": "completion",
            "describe": f"{train_rows} generated rows (half long-range recall, half prose, "
                        f"log-normal lengths); {test_rows} held-out rows"}


def user_data(train: Path | None, test: Path | None, fmt: str, datasets: Path | None = None) -> dict:
    """--train (jsonl in `fmt`) or --datasets (a YAML file with an Axolotl `datasets:` list)."""
    import yaml

    paths = {**({"train": train.resolve()} if train else {}),
             **({"test": test.resolve()} if test else {})}
    listed = yaml.safe_load(datasets.read_text())["datasets"] if datasets else None
    return {**paths, "datasets": listed, "hash": digest(*paths.values(), *([datasets] if datasets else [])),
            "format": fmt, "describe": f"the user's data: {datasets or train}"
            + (f", held out: {test}" if test else ", 5% held out")}


def long_documents(min_chars: int) -> list[str]:
    """The standard library's source files as long documents (code and its docstrings: what
    context extension is trained on, with long-range references), files shorter than
    `min_chars` concatenated in path order until they reach it."""
    lib = sysconfig.get_paths()["stdlib"]
    docs, group = [], ""
    for path in sorted(glob.glob(f"{lib}/**/*.py", recursive=True)):
        if any(part in path for part in ("/test", "site-packages", "idlelib", "lib2to3")):
            continue
        group = (group + "\n\n" if group else "") + Path(path).read_text(errors="replace")
        if len(group) >= min_chars:
            docs.append(group)
            group = ""
    return docs


def extend_corpus(work: Path, *, min_chars: int, test_docs: int,
                  pretrain_share: float = 0.5) -> dict:
    """Long documents in three disjoint parts: to pretrain the base model on (cut to its short
    context later, once its tokenizer exists), to extend it on, and held out."""
    work.mkdir(parents=True, exist_ok=True)
    docs = long_documents(min_chars)
    random.Random(1234).shuffle(docs)
    test, rest = docs[:test_docs], docs[test_docs:]
    cut = int(len(rest) * pretrain_share)
    paths = {"pretrain_docs": write_jsonl(work / "pretrain_docs.jsonl",
                                          [{"text": d} for d in rest[:cut]]),
             "train_docs": write_jsonl(work / "train_docs.jsonl",
                                       [{"text": d} for d in rest[cut:]]),
             "test_docs": write_jsonl(work / "test_docs.jsonl", [{"text": d} for d in test])}
    return {**paths, "hash": digest(*paths.values())}


def passkey_rows(tok, rng: random.Random, n: int, lengths: tuple[int, int], digits: int) -> list[dict]:
    """`n` passkey prompts with their answers (core/passkey.py's template, the probe's), of
    log-uniform token lengths in `lengths` and uniform depths, as completion text: trained,
    the model learns the retrieval the passkey probe measures (on keys of its own seed)."""
    import numpy as np

    from axolotl_curriculum.core import passkey

    def encode(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    keys = np.random.default_rng(rng.randrange(2 ** 32))
    low = max(lengths[0], passkey.shortest(encode, digits) + 4)
    if low > lengths[1]:
        raise SystemExit(f"experiment: a passkey row takes {low} tokens of this tokenizer, more "
                         f"than {lengths[1]}: raise the setting's base length")
    rows = []
    for _ in range(n):
        length = int(math.exp(rng.uniform(math.log(low), math.log(lengths[1]))))
        p = passkey.prompt(encode, length, rng.random(), passkey.random_key(keys, digits))
        rows.append({"text": tok.decode(p.ids), "kind": "passkey"})
    return rows


def extend_data(work: Path, corpus: dict, tok, *, short: int, seq: int, passkey_share: float,
                pretrain_passkey_share: float, digits: int) -> dict:
    """The rows of the extension setting, in the base model's tokens: pretraining pieces of
    `short` tokens (documents cut in order, and passkey rows up to `short`), extension rows of
    `seq` tokens (a document's first `seq`, and passkey rows from `short` to `seq`), held-out
    documents' first `seq` tokens. Pieces are decoded to text; Axolotl truncates the few a
    token longer after re-encoding (excess_length_strategy: truncate)."""
    rng = random.Random(1234)
    texts = read_texts

    def pieces(doc, size):
        ids = tok(doc, add_special_tokens=False)["input_ids"]
        return [tok.decode(ids[i:i + size]) for i in range(0, len(ids) - size // 2, size)]

    pretrain = [{"text": p, "kind": "doc"} for d in texts(corpus["pretrain_docs"])
                for p in pieces(d, short - 8)]
    n_keys = int(len(pretrain) * pretrain_passkey_share / (1 - pretrain_passkey_share))
    pretrain += passkey_rows(tok, rng, n_keys, (short // 4, short - 8), digits)
    rng.shuffle(pretrain)
    # a document's first `seq` tokens (one shorter than half of that has no piece: left out)
    train = [{"text": p, "kind": "doc"} for d in texts(corpus["train_docs"])
             for p in pieces(d, seq - 8)[:1]]
    n_keys = int(len(train) * passkey_share / (1 - passkey_share))
    train += passkey_rows(tok, rng, n_keys, (short, seq - 8), digits)
    rng.shuffle(train)
    test = [{"text": p, "kind": "doc"} for d in texts(corpus["test_docs"])
            for p in pieces(d, seq - 8)[:1]]
    paths = {"pretrain": write_jsonl(work / "pretrain.jsonl", pretrain),
             "train": write_jsonl(work / "train.jsonl", train),
             "test": write_jsonl(work / "test.jsonl", test)}
    n_doc = sum(r["kind"] == "doc" for r in train)
    return {**paths, "hash": digest(*paths.values()), "format": "completion", "base": short,
            "digits": digits,
            "describe": f"standard-library source files as long documents: {len(pretrain)} "
                        f"pretraining rows of <= {short} tokens ({pretrain_passkey_share:.0%} of them "
                        f"passkey rows); {len(train)} extension rows ({n_doc} documents' "
                        f"first {seq} tokens, {len(train) - n_doc} passkey rows of {short}-{seq} "
                        f"tokens, {passkey_share:.0%}); {len(test)} held-out documents"}

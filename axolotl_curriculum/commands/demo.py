"""A self-contained demo: a tiny llama, a tokenizer and a corpus built offline, trained by Axolotl.

`python -m axolotl_curriculum.demo [workdir]` writes everything under workdir, runs
`axolotl train` with a three-level curriculum, prints what each level fed the model and runs
`report` on the run (workdir/out/report.md and its figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..testing import axolotl_env, base_config, build_tiny_model, write_corpus


def main(argv: list[str] | None = None) -> int:
    import yaml

    argv = sys.argv[1:] if argv is None else argv
    work = Path(argv[0] if argv else "curriculum-demo").resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(work / "model")
    data = write_corpus(work / "corpus.jsonl", model, n=600, min_tokens=40, max_tokens=128)
    cfg = base_config(model, data, work / "out")
    (work / "config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"demo: training a tiny llama with {work / 'config.yml'}", flush=True)
    rc = subprocess.call(["axolotl", "train", str(work / "config.yml")], env=axolotl_env())
    if rc:
        return rc
    print("\nstep  level  input_len  max_example_len  tokens   (measured from the batches fed)")
    for line in (work / "out" / "curriculum_log.jsonl").read_text().splitlines():
        r = json.loads(line)
        print(f"{r['step']:>4}  {r['level']:>5}  {r['input_len']:>9}  {r['max_example_len']:>15}  {r['tokens']:>6}")
    from .report import run as report

    print()
    rc = report(work / "out")
    if rc:
        return rc
    print(f"\ndemo: the picture: {work / 'out' / 'report_loss.png'} (loss and gradient norm "
          f"against tokens, levels shaded); every figure and table: {work / 'out' / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

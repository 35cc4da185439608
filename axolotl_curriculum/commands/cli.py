"""`axolotl-curriculum`: `plan CONFIG.yml` before training, `report OUTPUT_DIR` after it.

Each subcommand is imported only when asked for (plan needs Axolotl, report does not). Input
the user must fix (a `CurriculumError`, a missing file) is one line on stderr,
`axolotl-curriculum COMMAND: error: ...`, and exit status 2 (`status.exit_status`).
"""

from __future__ import annotations

import argparse
import sys

from .status import exit_status


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="axolotl-curriculum",
                                 description="Plan a curriculum before training; report on a run after it.")
    from .. import __version__

    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="what each level will feed and cost, before training")
    plan.add_argument("config", help="the Axolotl config (YAML) you train with")
    plan.add_argument("--out", help="also write plan.json and plan.png into this folder")
    plan.add_argument("--world-size", type=int, default=None,
                      help="ranks the run will use (default: WORLD_SIZE, else 1)")
    report = sub.add_parser("report", help="figures and tables of a finished (or killed) run")
    report.add_argument("output_dir", help="the run's output_dir (holds curriculum_log.jsonl)")
    report.add_argument("--out", help="write report.md and the figures here (default: output_dir)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "plan":
        from .plan import run

        return exit_status(args.command, run, args.config, args.out, args.world_size)
    from .report import run

    return exit_status(args.command, run, args.output_dir, args.out)


if __name__ == "__main__":
    sys.exit(main())

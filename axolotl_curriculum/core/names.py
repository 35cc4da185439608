"""Names given once: the files a run writes, the counts it keeps per step, the keys of its
probes and the prefix of its trainer metrics.

Every module that writes or reads one of these files, sums one of these counts or reads one of
these keys imports the name from here, so nothing is spelled two ways.
"""

import json
from pathlib import Path

LOG_FILE = "curriculum_log.jsonl"          # a line per optimizer step and rank (run/runlog.py)
EVAL_FILE = "curriculum_evals.jsonl"       # a line per evaluation: the trainer's eval metrics
SUMMARY_FILE = "curriculum_summary.json"   # per level, what the run fed (written at the end)
PLAN_FILE = "curriculum_plan.json"         # the run's own projection, for `report` (rank 0)
STATE_FILE = "curriculum_state.json"       # in each checkpoint folder: what a resume needs
SCORE_FOLDER = "curriculum_scores"         # cached difficulty scores, next to the prepared data

# What the plan counts per optimizer step, for all ranks together (a log line's `global_<key>`
# fields, the summary's and the projection's per-level sums). tokens: fed, padding excluded;
# positions: what the model runs on, padding included. short_*: of those, the first level's
# examples a later level keeps (`short_share`).
STEP_COUNTS = ("examples", "tokens", "positions", "tokens_cut", "cut", "prompt_cut", "chunks",
               "skipped_no_label", "skipped_too_long", "deferred", "short_examples",
               "short_tokens")
# A gauge beside the counts: rows waiting for a longer level, at the step's end (not summed).
WAITING = "waiting"

# The probes' keys in a log line (run/probes.py): probe/short, probe/passkey@2048,
# probe/passkey@2048/depth0.5, probe/passkey_chat@2048, probe/position_loss@256-512.
PROBE = "probe/"
SHORT = PROBE + "short"
# The prefix of the metrics the trainer logs (its console line, W&B, TensorBoard):
# curriculum/level, curriculum/input_len, curriculum/probe/short, ...
METRIC = "curriculum/"


def passkey_key(length: int, chat: bool = False) -> str:
    """`probe/passkey@2048`; asked as a chat turn, `probe/passkey_chat@2048` (the gate reads the
    plain one)."""
    return f"{PROBE}passkey{'_chat' if chat else ''}@{length}"


def position_key(low: int, high: int) -> str:
    """The held-out loss at positions [low, high): `probe/position_loss@256-512`."""
    return f"{PROBE}position_loss@{low}-{high}"


def read_jsonl(path: Path) -> list[dict]:
    """The records of one of these JSONL files, in order: none if it is missing; a line that
    does not parse (the last one, cut short by a killed run) is left out, so a reader of a
    crashed run's files never fails on them."""
    if not path.exists():
        return []
    records = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records

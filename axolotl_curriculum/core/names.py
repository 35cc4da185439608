"""Names given once: the files a run writes and the counts it keeps per step.

Every module that writes or reads one of these files, or sums one of these counts, imports the
name from here, so a file is never spelled two ways.
"""

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

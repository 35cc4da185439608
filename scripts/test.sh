#!/usr/bin/env bash
# Run the tests: everything on axolotl 0.19 (.venv), then on axolotl 0.21 the e2e tests that go
# through Axolotl's version-specific paths (config loading and validation, the plugin hooks,
# the multipack sampler and collators, prompt formats, QLoRA, several ranks, resume, plan).
set -euo pipefail
cd "$(dirname "$0")/.."
for env in .venv .venv-axolotl-0.21; do
    [ -x "$env/bin/python" ] || { echo "test: no $env: run 'bash scripts/setup.sh --tests' first" >&2
                                  exit 2; }
done
.venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=15 "$@"
.venv-axolotl-0.21/bin/python -m pytest -q -n 2 --dist loadfile -m axolotl_api --durations=10 "$@"

#!/usr/bin/env bash
# Run the tests: everything on axolotl 0.19 (.venv), then the e2e tests on axolotl 0.21.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
.venv-axolotl-0.21/bin/python -m pytest -q -n 2 --dist loadfile -m e2e "$@"

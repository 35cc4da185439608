#!/usr/bin/env bash
# GPU smoke run, a few minutes on one NVIDIA GPU: QLoRA + curriculum, DeepSpeed ZeRO-2 +
# curriculum, and a bf16 timing of the plugin against no plugin (scripts/gpu_smoke.py).
#   bash scripts/gpu-smoke.sh OUT            where axolotl is installed (bash scripts/setup.sh)
#   bash scripts/gpu-smoke.sh OUT --cpu      the same checks rehearsed without a GPU
# On a machine whose python has torch but not axolotl and no network (the lent GPU machine),
# carry the wheels that scripts/device-wheels.sh puts in .whl/; they are installed to /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu-smoke.sh OUT [--cpu]}; shift
mkdir -p "$out"
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if ! "$py" -c "import axolotl" 2>/dev/null; then
    [ -d .whl ] || { echo "gpu-smoke: no axolotl for $py and no .whl/ (scripts/device-wheels.sh)"; exit 2; }
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
fi
if [ "${1:-}" != "--cpu" ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
fi
"$py" -c "import torch, transformers, axolotl; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'axolotl', axolotl.__version__)" | tee "$out/versions.txt"
PYTHONUNBUFFERED=1 "$py" scripts/gpu_smoke.py "$out" "$@"

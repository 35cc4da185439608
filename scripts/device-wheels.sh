#!/usr/bin/env bash
# Fill .whl/ (in the current directory, a repo root) with exactly the wheels that the nvidia-h200
# device machine lacks for `axolotl train` with this plugin: QLoRA 4-bit (bitsandbytes) and
# DeepSpeed ZeRO-2. Idempotent: wheels already there are kept, anything else in .whl/ is removed.
# Prints the list and the total size. Needs PyPI (pip) here; nothing is installed here.
#
#   bash scripts/device-wheels.sh            # axolotl 0.19.0 set (default), ~14 MiB
#   AXOLOTL=0.21.0 bash scripts/device-wheels.sh
# .whl/ is git-ignored, so the device tool's `carry` can take it; scripts/gpu-smoke.sh installs it.
#
# On the device (python3 = /opt/torch/.venv/bin/python3: torch 2.11 cu130, transformers 5.17,
# accelerate 1.15, ...), with .whl named in `carry`:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
#
# Two wheels are slimmed here (same name and version, RECORD rewritten):
#   bitsandbytes 0.50.2: only libbitsandbytes_cpu.so and libbitsandbytes_cuda130.so kept (the
#     device's torch is cu130; the full wheel is 41 MiB, this one ~3.4 MiB);
#   wandb 0.31.0: wandb/bin/* dropped (wandb-core, symon, parquet ffi: only wandb.init() needs
#     them; Axolotl imports wandb unconditionally but never starts it with WANDB_MODE=disabled).
# Three are built here from sdists (PyPI has no wheel): axolotl-contribs-lgpl, axolotl-contribs-mit,
# deepspeed (DS_BUILD_OPS=0, DS_ACCELERATOR=cuda: pure Python, ops JIT-built if ever needed).
set -euo pipefail

AXOLOTL=${AXOLOTL:-0.19.0}
PY=${PY:-python3}
dest=.whl
mkdir -p "$dest"

common=(
  fire==0.7.1 termcolor==3.3.0 addict==2.4.0 python-dotenv==1.0.1
  posthog==6.7.11 backoff==2.2.1 distro==1.9.0
  fastcore==2.2.41 evaluate==0.4.1
  dill==0.4.1 multiprocess==0.70.19 fsspec==2026.2.0
  annotated-types==0.7.0
  peft==0.21.2
  hjson==3.1.0
  platformdirs==4.14.8
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2
)
case "$AXOLOTL" in
  0.19.0) pinned=(axolotl==0.19.0 pydantic==2.12.5 pydantic-core==2.41.5 typing-inspection==0.4.2
                  datasets==4.8.4 trl==1.9.0) ;;
  0.21.0) pinned=(axolotl==0.21.0 pydantic==2.13.5 pydantic-core==2.46.5 typing-inspection==0.4.2
                  datasets==5.0.1 trl==1.14.1) ;;
  *) echo "AXOLOTL must be 0.19.0 or 0.21.0" >&2; exit 2 ;;
esac
slim=(bitsandbytes==0.50.2 wandb==0.31.0)
sdists=(axolotl-contribs-lgpl==0.0.7 axolotl-contribs-mit==0.0.6 deepspeed==0.18.9)

plat=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
      --platform any)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# the file name pip would save for NAME==VERSION, if .whl/ already holds it
have() {  # have SPEC -> prints path or nothing
  local name=${1%%==*} ver=${1##*==}
  local norm
  norm=$(echo "$name" | tr '[:upper:]' '[:lower:]' | tr -- '-.' '__')
  ls "$dest"/ 2>/dev/null | while read -r f; do
    local fn
    fn=$(echo "${f%%-[0-9]*}" | tr '[:upper:]' '[:lower:]' | tr -- '-.' '__')
    local rest=${f#*-}
    if [[ "$fn" == "$norm" && "${rest%%-*}" == "$ver" ]]; then echo "$dest/$f"; fi
  done | head -1
}

keep=()
fetch() {  # fetch SPEC: pip download into .whl/
  local p
  p=$(have "$1")
  if [[ -z "$p" ]]; then
    "$PY" -m pip download -q --no-deps "${plat[@]}" -d "$work/dl" "$1" 2>&1 | grep -v "Location 'file" || true
    p=$(ls -t "$work"/dl/*.whl | head -1)
    mv "$p" "$dest/"
    p="$dest/$(basename "$p")"
    rm -rf "$work/dl"
  fi
  keep+=("$(basename "$p")")
}

for s in "${common[@]}" "${pinned[@]}"; do fetch "$s"; done

for s in "${sdists[@]}"; do
  p=$(have "$s")
  if [[ -z "$p" ]]; then
    DS_BUILD_OPS=0 DS_ACCELERATOR=cuda "$PY" -m pip wheel -q --no-deps --no-cache-dir \
      -w "$work/bw" "$s" 2>&1 | grep -v "Location 'file" || true
    p=$(ls -t "$work"/bw/*.whl | head -1)
    mv "$p" "$dest/"
    p="$dest/$(basename "$p")"
  fi
  keep+=("$(basename "$p")")
done

for s in "${slim[@]}"; do
  fetch "$s"
  f="$dest/${keep[-1]}"
  "$PY" - "$f" <<'PY'
import re, sys, zipfile, os
path = sys.argv[1]
drop = re.compile(r"^bitsandbytes/libbitsandbytes_(?!cpu\.so$|cuda130\.so$).*\.so$|^wandb/bin/.+")
with zipfile.ZipFile(path) as z:
    names = z.namelist()
    gone = [n for n in names if drop.match(n)]
    if not gone:
        sys.exit(0)  # already slim
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            if info.filename in gone:
                continue
            data = z.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(l for l in lines if l.split(",", 1)[0] not in gone).encode()
            out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
os.replace(tmp, path)
print(f"slimmed {os.path.basename(path)}: dropped {len(gone)} files")
PY
done

# exactly this set: drop anything else
for f in "$dest"/*; do
  b=$(basename "$f")
  if [[ ! " ${keep[*]} " == *" $b "* ]]; then echo "removing $b"; rm -rf "$f"; fi
done

ls -l "$dest" | awk 'NR>1 {printf "%10d  %s\n", $5, $9}'
du -cb "$dest"/*.whl | tail -1 | awk '{printf "total: %d bytes = %.2f MiB in %d wheels (axolotl '"$AXOLOTL"')\n", $1, $1/1048576, '"${#keep[@]}"'}'

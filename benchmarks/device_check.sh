#!/usr/bin/env bash
# GPU check at ViT-B/32 size (benchmarks/device_check.py: DisTaC in bf16 with one process and under
# `accelerate launch` over every GPU, evaluation, merge and run on 1 and on every GPU (same results?), TSV-M on the
# GPU; images/s, MFU, peak GPU memory).
#
# Made for a GPU machine that has torch, transformers, accelerate, huggingface_hub and safetensors but no
# `datasets` and no network. Beforehand, on a machine with network, fill the ignored folder .whl/ (it travels
# with the tree; about 1.5 MB besides datasets' own wheels):
#   bash benchmarks/device_check.sh --download
# Then on the GPU machine, from the repository root (arguments after the first go to device_check.py):
#   bash benchmarks/device_check.sh
#   bash benchmarks/device_check.sh --device cpu --quick      # the same steps, tiny, on a CPU (smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
if [ "${1:-}" = "--download" ]; then
  mkdir -p "$WHEELS"
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
  # Pure-Python wheels (py3-none-any, and multiprocess's per-version ones): datasets and the two packages it
  # needs that the GPU image lacks (its pyarrow, pandas, xxhash, fsspec and aiohttp are used), and the
  # open-clip-torch wheel for the real CLIP BPE vocabulary (nothing of it is installed).
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
    -d "$WHEELS" datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 open-clip-torch==3.3.0
  ls -la "$WHEELS"
  exit 0
fi
if ! python3 -c "import datasets" 2>/dev/null; then
  site=${SITE:-/tmp/hfdistac-site}
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    $(ls "$WHEELS"/*.whl | grep -v open_clip)
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
# hfdistac itself from this tree without installing it (pure Python; pip's --no-deps install would need a build
# backend): the child processes (`python -m hfdistac.cli`, `accelerate launch -m`) inherit the path.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import hfdistac, datasets, accelerate, transformers, torch; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__)"
wheel=$(ls "$WHEELS"/open_clip_torch-*.whl 2>/dev/null | head -n 1 || true)
exec python3 benchmarks/device_check.py --workdir "${WORKDIR:-/tmp/hfdistac-device-check}" \
  ${wheel:+--bpe-wheel "$wheel"} "$@"

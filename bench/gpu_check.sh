#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) in ONE call of at most ~9 minutes on a bare GPU machine, or on the CPU here.
#
#   bench/gpu_check.sh [auto|gpu|cpu] [gpu_check.py options...]      results: $OUT/gpu_check.json
#
# gpu: needs build/gpu_carry/ from bench/gpu_check_prepare.sh (carried: it is git-ignored). It unpacks the trimmed
#   llama.cpp to /tmp, builds `llama llama-bench llama-fit-params` with CUDA for sm_90 into build/bin (~280 s on
#   16 cores; skipped when build/bin already has them, as on a machine still warm from the last call), installs
#   the carried wheels with --no-index into /tmp/site and llama-cpp-python's pure-Python package beside them,
#   and points it at build/bin (LLAMA_CPP_LIB_PATH). The GGUFs are written while llama.cpp compiles.
# cpu: the same check on the CPU backend of the installed llama-cpp-python (.venv), small shapes; llama-bench
#   and llama-fit-params from build/bin or PATH when there, else their rows say "not available".
# auto (default): gpu when nvidia-smi sees a GPU and nvcc is there, else cpu.
# GPU_CHECK_SECONDS (default 520) bounds the whole call; the results file is rewritten after every step.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
START=$(date +%s)
LIMIT=${GPU_CHECK_SECONDS:-520}
OUT=${OUT:-$ROOT/build/gpu_check_out}
mkdir -p "$OUT"
RESULTS=$OUT/gpu_check.json
MODE=${1:-auto}
[ $# -gt 0 ] && shift
if [ "$MODE" = auto ]; then
    if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1 && command -v nvcc > /dev/null; then
        MODE=gpu
    else
        MODE=cpu
    fi
fi
left() { echo $((LIMIT - ($(date +%s) - START))); }

if [ "$MODE" = cpu ]; then
    PY=$ROOT/.venv/bin/python
    [ -x "$PY" ] || PY=python3
    exec "$PY" bench/gpu_check.py --mode cpu --out "$RESULTS" --deadline "$(left)" "$@"
fi

CARRY=$ROOT/build/gpu_carry
SRC=/tmp/gpu_check/llama.cpp
SITE=/tmp/site
[ -f "$CARRY/llama.cpp.tar.gz" ] || { echo "no $CARRY: run bench/gpu_check_prepare.sh and carry build/gpu_carry"; exit 2; }
mkdir -p /tmp/gpu_check
[ -d "$SRC" ] || tar xzf "$CARRY/llama.cpp.tar.gz" -C /tmp/gpu_check

build() {
    if [ -f build/bin/libllama.so ] && [ -x build/bin/llama-bench ] && [ -x build/bin/llama-fit-params ]; then
        echo "reused build/bin"
        return 0
    fi
    cmake -S "$SRC" -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
        -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        && cmake --build build -j"$(nproc)" --target llama llama-bench llama-fit-params
}
BUILD_START=$(date +%s)
build > /tmp/gpu_check/build.log 2>&1 &
BUILD_PID=$!
# while it compiles: the Python side
python3 -m pip install -q --no-index --no-deps --target "$SITE" "$CARRY"/wheels/*.whl > /tmp/gpu_check/pip.log 2>&1 \
    || tail -5 /tmp/gpu_check/pip.log
rm -rf "$SITE/llama_cpp" && cp -r "$CARRY/py/llama_cpp" "$SITE/"
ln -sfn "$ROOT/build/bin" "$SITE/llama_cpp/lib"  # its _ggml module looks there; llama_cpp.py reads the variable
export PYTHONPATH=$ROOT/app:$SITE LLAMA_CPP_LIB_PATH=$ROOT/build/bin
python3 bench/gpu_check.py --phase prepare --mode gpu --out "$RESULTS" --workdir /tmp/gpu_check/models "$@"
wait $BUILD_PID
BUILD_RC=$?
BUILD_NOTE="exit $BUILD_RC after $(($(date +%s) - BUILD_START)) s: $(tail -1 /tmp/gpu_check/build.log)"
echo "llama.cpp build: $BUILD_NOTE"
if [ $BUILD_RC -ne 0 ]; then
    tail -40 /tmp/gpu_check/build.log
    python3 bench/gpu_check.py --phase note --out "$RESULTS" \
        --build "$BUILD_NOTE; $(tail -25 /tmp/gpu_check/build.log | tr '\n' ' ' | cut -c1-4000)"
    exit 1
fi
timeout --kill-after=10 "$(left)" python3 bench/gpu_check.py --phase measure --mode gpu --out "$RESULTS" \
    --workdir /tmp/gpu_check/models --deadline "$(($(left) - 15))" --build "$BUILD_NOTE" "$@"

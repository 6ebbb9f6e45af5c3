#!/usr/bin/env bash
# Packs what bench/gpu_check.sh needs on a bare GPU machine into build/gpu_carry/ (build/ is git-ignored, so the
# folder travels only when the device call names it in `carry`):
#   llama.cpp.tar.gz  the llama.cpp that llama-cpp-python 0.3.36 vendors, trimmed to what a CUDA build of
#                     `llama llama-bench llama-fit-params` reads (the whole sdist is ~77 MB, over the 64 MiB a call
#                     carries); tools/ holds only llama-bench and fit-params, ggml/src only the CPU and CUDA backends
#   py/llama_cpp/     llama-cpp-python's pure-Python package from the same sdist (it loads the CUDA-built libraries
#                     from LLAMA_CPP_LIB_PATH)
#   wheels/           the project's pure-Python dependencies for Python 3.12, less what the GPU image already has
# Then it configures the trimmed tree here (CPU, a few seconds), so a missing folder fails now rather than after a
# GPU machine has started.
#
# Usage: bench/gpu_check_prepare.sh [llama_cpp_python-0.3.36.tar.gz]
#   Without a path the sdist comes through pip (its cache when it holds it):
#   pip download --no-binary :all: --no-deps llama-cpp-python==0.3.36
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=$ROOT/build/gpu_carry
PY=${PYTHON:-$ROOT/.venv/bin/python}
PIN=0.3.36
WORK=$(mktemp -d /tmp/gpu-carry.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

SDIST=${1:-}
if [ -z "$SDIST" ]; then
    "$PY" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$PIN" -d "$WORK/sdist"
    SDIST=$(ls "$WORK"/sdist/llama_cpp_python-$PIN.tar.gz)
fi
echo "sdist: $SDIST"
tar xzf "$SDIST" -C "$WORK" "llama_cpp_python-$PIN/vendor/llama.cpp" "llama_cpp_python-$PIN/llama_cpp"
SRC=$WORK/llama_cpp_python-$PIN/vendor/llama.cpp
TRIM=$WORK/llama.cpp
mkdir -p "$TRIM/tools" "$TRIM/ggml/src"
for part in CMakeLists.txt LICENSE cmake include src common vendor app; do
    cp -r "$SRC/$part" "$TRIM/"
done
cp -r "$SRC/ggml/CMakeLists.txt" "$SRC/ggml/cmake" "$SRC/ggml/include" "$TRIM/ggml/"
# ggml/src: its own files plus the two backends built (the others are add_subdirectory'd only when enabled)
find "$SRC/ggml/src" -maxdepth 1 -type f -exec cp {} "$TRIM/ggml/src/" \;
cp -r "$SRC/ggml/src/ggml-cpu" "$SRC/ggml/src/ggml-cuda" "$TRIM/ggml/src/"
cp -r "$SRC/tools/llama-bench" "$SRC/tools/fit-params" "$TRIM/tools/"
cat > "$TRIM/tools/CMakeLists.txt" <<'EOF'
# trimmed by qwen-chat's bench/gpu_check_prepare.sh: only the two tools the GPU check runs
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
add_subdirectory(fit-params)
EOF

rm -rf "$DEST"
mkdir -p "$DEST/py" "$DEST/wheels"
tar czf "$DEST/llama.cpp.tar.gz" -C "$WORK" llama.cpp
cp -r "$WORK/llama_cpp_python-$PIN/llama_cpp" "$DEST/py/"

# what bench/gpu_check.py imports, resolved for CPython 3.12 on x86-64 Linux; numpy is on the image and the
# others pruned below are never imported by the check (keyring's crypto, the hub's xet transfer, pip itself)
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 \
    --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$DEST/wheels" "textual==8.2.8" "huggingface_hub>=1.0" "platformdirs>=4.2" "keyring>=25" \
    "sqlite-utils>=3.38" "psutil>=5.9" "nvidia-ml-py>=12" "jinja2>=3.1" "pyyaml>=6" "tomlkit>=0.13,<1" \
    "mcp>=2.3,<3" "jsonschema>=4.20" "gguf>=0.17" "diskcache>=5.6" "typing_extensions"
rm -f "$DEST"/wheels/numpy-* "$DEST"/wheels/cryptography-* "$DEST"/wheels/hf_xet-* "$DEST"/wheels/pip-*

# configure only (CPU): proves the trimmed tree has every folder CMake reads
cmake -S "$TRIM" -B "$WORK/configure" -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > "$WORK/configure.log" 2>&1 \
    || { tail -30 "$WORK/configure.log"; echo "the trimmed llama.cpp does not configure"; exit 1; }
echo "configured the trimmed llama.cpp (CPU) without errors"
du -sh "$DEST" "$DEST"/*
echo "carry: build/gpu_carry (the device command: bench/gpu_check.sh; see its header)"

#!/usr/bin/env sh
# Install qwen-chat with pipx, building llama-cpp-python for the GPU toolchain this machine has.
# Usage: packaging/install.sh [SOURCE]   (SOURCE: a checkout, a wheel or sdist, or "qwen-chat"; default: this checkout)
# Set QWEN_CHAT_BACKEND=cpu|cuda|rocm|metal|vulkan to choose instead of detecting.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
source=${1:-$here}
pin=0.3.36   # llama-cpp-python, as pinned in pyproject.toml

say() { printf 'qwen-chat install: %s\n' "$*" >&2; }

detect() {
  if [ "$(uname -s)" = Darwin ] && [ "$(uname -m)" = arm64 ]; then echo metal; return; fi
  if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then echo cuda; return; fi
  if command -v hipcc >/dev/null 2>&1 || [ -d /opt/rocm ]; then echo rocm; return; fi
  if command -v glslc >/dev/null 2>&1 && { command -v vulkaninfo >/dev/null 2>&1 || [ -e /usr/include/vulkan/vulkan.h ]; }; then
    echo vulkan; return
  fi
  echo cpu
}

backend=${QWEN_CHAT_BACKEND:-$(detect)}
case "$backend" in
  cuda)   args="-DGGML_CUDA=on"; [ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH" ;;
  rocm)   args="-DGGML_HIP=on" ;;
  metal)  args="-DGGML_METAL=on" ;;
  vulkan) args="-DGGML_VULKAN=on" ;;
  cpu)    args="" ;;
  *) say "unknown QWEN_CHAT_BACKEND=$backend (cpu, cuda, rocm, metal, vulkan)"; exit 2 ;;
esac

if ! command -v pipx >/dev/null 2>&1; then
  say "pipx is not installed: python3 -m pip install --user pipx && python3 -m pipx ensurepath"
  exit 1
fi
if ! command -v cmake >/dev/null 2>&1 && ! python3 -c 'import cmake' 2>/dev/null; then
  say "note: no cmake on PATH; pip will fetch one to build llama.cpp (needs CMake >= 3.21 and a C/C++ compiler)"
fi

say "backend: $backend${args:+ (CMAKE_ARGS=$args)}; building llama-cpp-python $pin takes several minutes"
# --no-cache-dir for the engine only: a cached CPU-only wheel must not be reused for a GPU build
if ! CMAKE_ARGS="$args" FORCE_CMAKE=1 PIP_NO_CACHE_DIR=$( [ -n "$args" ] && echo 1 || echo 0 ) \
     pipx install --force "$source"; then
  if [ -n "$args" ]; then
    say "the $backend build failed; installing the CPU build instead (slower). Fix the toolchain and run:"
    say "  CMAKE_ARGS=\"$args\" pipx runpip qwen-chat install --force-reinstall --no-cache-dir llama-cpp-python==$pin"
    pipx install --force "$source"
  else
    exit 1
  fi
fi
qwen-chat doctor || true
say "done: run qwen-chat"

#!/usr/bin/env bash
# Installs what is missing (Debian packages, the Python env with torch + transformers) and
# configures + builds esft into build/. Idempotent: a second run only rebuilds what changed.
#   ESFT_VENV   Python env with torch==2.11.0 and transformers==5.17.0 (default /opt/esft/venv)
#   CCACHE_DIR  compiler cache kept across clones (default /opt/esft/ccache)
#   ESFT_BUILD  build directory (default build)
set -euo pipefail
cd "$(dirname "$0")/.."

ESFT_VENV=${ESFT_VENV:-/opt/esft/venv}
export CCACHE_DIR=${CCACHE_DIR:-/opt/esft/ccache}
ESFT_BUILD=${ESFT_BUILD:-build}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

pkgs=(build-essential cmake ninja-build ccache pkg-config python3-venv
      libcxxopts-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libsentencepiece-dev libgtest-dev
      libgloo-dev    # headers for c10d's ProcessGroupGloo (the library itself is inside libtorch)
      sentencepiece   # spm_train, used by the SentencePiece tokenizer test
      clang libclang-rt-dev)  # scripts/sanitizers.sh: ASan/UBSan build and the libFuzzer harnesses
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# (Re)install when the env is missing or scripts/requirements.txt changed since it was filled.
req_hash=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ ! -x "$ESFT_VENV/bin/python" ] || [ "$(cat "$ESFT_VENV/.esft-requirements" 2>/dev/null)" != "$req_hash" ]; then
  echo "setup: filling the Python env at $ESFT_VENV from scripts/requirements.txt (torch 2.11.0, transformers 5.17.0, ...)"
  mkdir -p "$(dirname "$ESFT_VENV")"
  [ -x "$ESFT_VENV/bin/python" ] || python3 -m venv "$ESFT_VENV"
  "$ESFT_VENV/bin/pip" install -q --upgrade pip
  "$ESFT_VENV/bin/pip" install -q -r scripts/requirements.txt
  echo "$req_hash" > "$ESFT_VENV/.esft-requirements"
fi

TORCH_PREFIX=$("$ESFT_VENV/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
mkdir -p "$CCACHE_DIR"
ccache --max-size=5G >/dev/null 2>&1 || true

if [ ! -f "$ESFT_BUILD/build.ninja" ]; then
  cmake -S . -B "$ESFT_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DESFT_PYTHON="$ESFT_VENV/bin/python" >/dev/null
fi
cmake --build "$ESFT_BUILD" -j "$(nproc)"
echo "setup: built $ESFT_BUILD/esft"

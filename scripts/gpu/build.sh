# The one cmake invocation of the GPU scripts, sourced by them: builds esft and, unless
# -DESFT_BUILD_TESTS=OFF is among the flags, esft_torch_tests, against the system Python's torch.
#   build_esft DIR [cmake flags...]
# The output goes to $OUT/build.log; on failure its tail is shown and the function returns 1.
build_esft() {
  local dir=$1; shift
  local py=${PYTHON:-python3} log=${OUT:-/tmp}/build.log targets=(esft)
  [[ " $* " == *" -DESFT_BUILD_TESTS=OFF "* ]] || targets+=(esft_torch_tests)
  mkdir -p "$(dirname "$log")"
  { cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
      -DESFT_PYTHON="$(command -v "$py")" "$@" &&
    cmake --build "$dir" -j"$(nproc)" --target "${targets[@]}"; } > "$log" 2>&1 ||
    { tail -30 "$log"; echo "build failed (full log: $log)"; return 1; }
  tail -1 "$log"
}

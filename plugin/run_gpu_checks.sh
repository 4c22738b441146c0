#!/usr/bin/env bash
# One-shot GPU check of plugin/: build the kernels (nvcc, SM=90 by default), run the GPU tests, run the kernels
# under compute-sanitizer (memcheck + racecheck), run the benchmark; logs and JSON go to $OUT
# (default plugin/build/gpu-checks). A short summary is printed last.
#
#   plugin/run_gpu_checks.sh                      everything
#   BENCH_ARGS="--no-variants" plugin/run_gpu_checks.sh
#   STEPS="build test bench" plugin/run_gpu_checks.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-plugin/build/gpu-checks}"
SM="${SM:-90}"
STEPS="${STEPS:-build test sanitize bench}"
BUILD_DIR="${BUILD_DIR:-$PWD/plugin/build}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
export MVT_KERNELS_LIB="$BUILD_DIR/libmvt_kernels.so"
mkdir -p "$OUT"
declare -A RC
has() { [[ " $STEPS " == *" $1 "* ]]; }

{
    nvidia-smi --query-gpu=name,compute_cap,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
        --format=csv 2>&1
    nvcc --version 2>&1 | tail -n 2
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} > "$OUT/device.txt"

if has build; then
    t=$SECONDS
    make -C plugin kernels smoke SM="$SM" BUILD_DIR="$BUILD_DIR" NVCCFLAGS="-O3 -lineinfo -Xptxas -v" -j8 \
        > "$OUT/build.log" 2>&1
    RC[build]=$?
    echo "build: rc=${RC[build]} ($((SECONDS - t)) s)" | tee -a "$OUT/build.log"
    grep -E "spill|error" "$OUT/build.log" | grep -v " 0 bytes spill stores, 0 bytes spill loads" | head -n 20
    if command -v cuobjdump > /dev/null && [ -f "$BUILD_DIR/libmvt_kernels.so" ]; then
        # instruction mix of the library: tensor-core MMAs, ldmatrix, cp.async, 16-byte global loads, local memory
        cuobjdump -sass "$BUILD_DIR/libmvt_kernels.so" > "$OUT/sass.txt" 2>&1
        for ins in HMMA LDSM LDGSTS "LDG.E.128" "LDG.E.ENL2.128" "LDL" "STL"; do
            printf "%s=%s " "$ins" "$(grep -c -F "$ins" "$OUT/sass.txt")"
        done | tee -a "$OUT/build.log"
        echo | tee -a "$OUT/build.log"
        rm -f "$OUT/sass.txt"
    fi
fi

if has test; then
    t=$SECONDS
    timeout "${TEST_TIMEOUT:-300}" "$PY" -m pytest tests/gpu/test_plugin_kernels.py -q -rs -p no:cacheprovider --confcutdir=tests/gpu > "$OUT/pytest.log" 2>&1
    RC[test]=$?
    echo "pytest: rc=${RC[test]} ($((SECONDS - t)) s)" | tee -a "$OUT/pytest.log"
fi

if has sanitize; then
    t=$SECONDS
    : > "$OUT/sanitizer.log"
    RC[sanitize]=0
    for tool in memcheck racecheck; do
        if command -v compute-sanitizer > /dev/null; then
            timeout "${SANITIZE_TIMEOUT:-150}" compute-sanitizer --tool "$tool" --error-exitcode 3 "$BUILD_DIR/kernel_smoke" >> "$OUT/sanitizer.log" 2>&1
            r=$?
        else
            echo "compute-sanitizer not found" >> "$OUT/sanitizer.log"
            r=127
        fi
        echo "sanitizer $tool: rc=$r" >> "$OUT/sanitizer.log"
        [ $r -eq 0 ] || RC[sanitize]=$r
    done
    echo "sanitizer: rc=${RC[sanitize]} ($((SECONDS - t)) s)" | tee -a "$OUT/sanitizer.log"
fi

if has bench; then
    t=$SECONDS
    # SM clock / utilisation / power every 100 ms while the benchmark runs (read only; no settings are changed)
    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw,temperature.gpu \
        --format=csv -lms 100 > "$OUT/clocks.csv" 2>&1 &
    sampler=$!
    # shellcheck disable=SC2086
    timeout "${BENCH_TIMEOUT:-420}" "$PY" -m benchmark.bench_plugins --out "$OUT/bench.json" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
    RC[bench]=$?
    kill "$sampler" 2> /dev/null
    wait "$sampler" 2> /dev/null
    echo "bench: rc=${RC[bench]} ($((SECONDS - t)) s)" | tee -a "$OUT/bench.log"
    awk -F', ' 'NR > 1 && $2 ~ /MHz/ {split($2, a, " "); n++; s += a[1]; if (min == "" || a[1] < min) min = a[1];
        if (a[1] > max) max = a[1]} END {if (n) printf "SM clock during bench: min %d, mean %.0f, max %d MHz (%d samples)\n",
        min, s / n, max, n}' "$OUT/clocks.csv" | tee -a "$OUT/bench.log"
fi

echo
echo "==================== summary ===================="
cat "$OUT/device.txt"
[ -f "$OUT/pytest.log" ] && { grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -n 15; tail -n 3 "$OUT/pytest.log"; }
[ -f "$OUT/sanitizer.log" ] && grep -E "ERROR SUMMARY|RACECHECK SUMMARY|kernel_smoke|rc=" "$OUT/sanitizer.log"
[ -f "$OUT/bench.log" ] && sed -n '/^Device:/,$p' "$OUT/bench.log"
status=0
for k in "${!RC[@]}"; do
    echo "step $k: rc=${RC[$k]}"
    [ "${RC[$k]}" -eq 0 ] || status=1
done
exit $status

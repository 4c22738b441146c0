#!/usr/bin/env bash
# Compile-check the TensorRT glue (plugin/trt/*.cpp) against TensorRT headers of several releases, without
# TensorRT libraries: `make trt-check` (g++ -c, -Wall -Wextra -Werror) per header set. No linking.
#
#   plugin/check_trt_headers.sh --git-dir <bare clone of NVIDIA/TensorRT> TAG...   headers from `git archive`
#   plugin/check_trt_headers.sh DIR...                                              DIR/include/NvInfer.h
#
# Header copies go to ${TRT_HEADERS_ROOT:-/tmp}/trt-<tag>, outside this repository (never commit them).
set -u -o pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="${TRT_HEADERS_ROOT:-/tmp}"
gitdir=""
if [ "${1:-}" = "--git-dir" ]; then
    gitdir="$2"
    shift 2
fi
[ $# -gt 0 ] || { echo "usage: $0 [--git-dir DIR] TAG_OR_DIR..." >&2; exit 2; }

version_of() { # NvInferVersion.h -> "8.6.1" (TensorRT 10.x+ spells it through TRT_*_ENTERPRISE)
    local h="$1/include/NvInferVersion.h" v=""
    for part in MAJOR MINOR PATCH; do
        local n
        n=$(sed -n "s/^#define TRT_${part}_ENTERPRISE \([0-9][0-9]*\).*/\1/p" "$h" | head -n 1)
        [ -n "$n" ] || n=$(sed -n "s/^#define NV_TENSORRT_${part} \([0-9][0-9]*\).*/\1/p" "$h" | head -n 1)
        v="$v${v:+.}${n:-?}"
    done
    echo "$v"
}

status=0
for item in "$@"; do
    if [ -n "$gitdir" ]; then
        dir="$root/trt-$item"
        rm -rf "$dir" && mkdir -p "$dir"
        if ! git --git-dir="$gitdir" archive "$item" include | tar x -C "$dir"; then
            echo "FAIL $item: could not extract include/ from $gitdir"
            status=1
            continue
        fi
        commit=$(git --git-dir="$gitdir" rev-parse --short "$item^{commit}")
        label="tag $item ($commit)"
    else
        dir="$item"
        label="$dir"
    fi
    build="$(mktemp -d "${TMPDIR:-/tmp}/mvt-trt-check.XXXXXX")"
    if log=$(make -s -C "$here" trt-check TRT_INC="$dir/include" BUILD_DIR="$build" WERROR=1 2>&1); then
        echo "PASS TensorRT $(version_of "$dir") headers, $label: $(ls "$build"/trt/*.o | wc -l) objects, no warnings"
    else
        echo "FAIL TensorRT $(version_of "$dir") headers, $label:"
        echo "$log" | sed 's/^/    /'
        status=1
    fi
    rm -rf "$build"
done
exit $status

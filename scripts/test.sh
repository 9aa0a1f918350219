#!/bin/bash
# Every test of kemu, with its own set-up: packages, builds, guest assets, then
#   1. the format check and unit tests (plain build),
#   2. unit tests under ASan+UBSan,
#   3. each libFuzzer harness for a short run (FUZZ_SECONDS, default 20),
#   4. system tests booting real Debian kernels (directly, or inside the test host).
# SKIP_SYSTEM=1 or SKIP_FUZZ=1 leave a stage out (printed, never silent).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

echo "== /dev/kvm: $(sh scripts/kvm-kind.sh)"
bash scripts/deps.sh

echo "== build"
sh scripts/build.sh >/dev/null
echo "== format: the C sources as .clang-format says"
find src tests -name '*.[ch]' -print0 | xargs -0 clang-format --dry-run --Werror
echo "== unit tests"
meson test -C build --suite unit --print-errorlogs

echo "== unit tests under ASan+UBSan"
[ -f build-san/build.ninja ] ||
    meson setup build-san -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
ninja -C build-san >/dev/null
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 meson test -C build-san --suite unit --print-errorlogs

if [ "${SKIP_FUZZ:-0}" = 1 ]; then
    echo "== fuzzing: skipped (SKIP_FUZZ=1)"
else
    echo "== fuzz harnesses (${FUZZ_SECONDS:-20} s each)"
    [ -f build-fuzz/build.ninja ] ||
        CC=clang meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined \
            -Db_lundef=false -Dtests=disabled >/dev/null
    # Quiet when it builds; a compiler error is shown (ninja prints it on stdout).
    ninja -C build-fuzz >build-fuzz/ninja.log || { cat build-fuzz/ninja.log; exit 1; }
    for f in build-fuzz/tests/fuzz/fuzz_*; do
        [ -f "$f" ] && [ -x "$f" ] || continue
        name=$(basename "$f" | sed 's/^fuzz_//')
        corpus="$ROOT/tests/fuzz/corpus/$name"
        work=$(mktemp -d)
        [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
        echo "-- $name"
        "$f" -max_total_time="${FUZZ_SECONDS:-20}" -print_final_stats=0 "$work" 2>&1 | tail -n 2
        rm -rf "$work"
    done
fi

echo "== guest assets"
bash scripts/guest-assets.sh

if [ "${SKIP_SYSTEM:-0}" = 1 ]; then
    echo "== system tests: skipped (SKIP_SYSTEM=1)"
    exit 0
fi
echo "== system tests"
/usr/bin/python3 -m pytest -rs -v tests/system tests/testhost "$@"

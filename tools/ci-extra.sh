#!/bin/sh
# The slower tiers of ./test.sh: sanitizers and fuzzing.
#  1. ASan+UBSan: the unit tests and the mount tests against the instrumented program.
#  2. TSan: the core's concurrency tests, repeated.
#  3. libFuzzer: each target for a bounded time.
# Environment: IRSAFS_FUZZ_SECONDS (default 20 per target), IRSAFS_TSAN_REPEAT (default 20).
set -eu
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== ASan + UBSan"
cmake --preset asan >/dev/null
cmake --build --preset asan -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
./build-asan/tests/unit_tests --gtest_brief=1
for t in tests/integration/test_mount*.py tests/integration/test_crash.py; do
  [ -e "$t" ] || continue
  (cd tests/integration && IRSAFS_BIN="$PWD/../../build-asan/irsafs" /usr/bin/python3 -m pytest -q -p no:cacheprovider "$(basename "$t")")
done

echo "== TSan"
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j"$jobs" --target unit_tests
TSAN_OPTIONS=halt_on_error=1 ./build-tsan/tests/unit_tests --gtest_brief=1 \
  --gtest_filter='Concurrency*:ServiceTest*:HttpServer*:AuthenticatorTest*:PeerEndpointTest*:PeerSourceTest*:VerifyTest*:-HttpServerTest.AThousandConcurrentRefreshesAreAllAnswered:AuthenticatorTest.HowManyMayWaitForTheKeysIsBounded' --gtest_repeat="${IRSAFS_TSAN_REPEAT:-20}"

echo "== libFuzzer"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j"$jobs" --target validator_fuzz podinfo_fuzz response_fuzz listen_fuzz sts_fuzz jwt_fuzz peer_fuzz
for f in build-fuzz/fuzz/*_fuzz; do
  name=$(basename "$f")
  corpus=$(mktemp -d)
  dict=""
  [ -f "fuzz/${name%_fuzz}.dict" ] && dict="-dict=fuzz/${name%_fuzz}.dict"
  echo "-- $name for ${IRSAFS_FUZZ_SECONDS:-20} s"
  # shellcheck disable=SC2086 # $dict is empty or one argument
  if ! "$f" $dict -max_total_time="${IRSAFS_FUZZ_SECONDS:-20}" -print_final_stats=1 "$corpus" >"$corpus.log" 2>&1; then
    tail -n 60 "$corpus.log"
    echo "$name found a failure (above)"
    exit 1
  fi
  tail -n 3 "$corpus.log"
  rm -rf "$corpus" "$corpus.log"
done
echo "== extra tiers passed"

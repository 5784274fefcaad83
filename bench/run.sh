#!/bin/sh
# Builds irsafs and the benchmark programs (Release, in their own build directory), starts the
# stand-in irsa-svc, runs every benchmark and prints one markdown table, also written to
# bench/results.md (bench/results-quick.md with --quick, so a CI run never overwrites the
# numbers of a full run).
#
#   bench/run.sh            full run (about 25 minutes on 2 cores)
#   bench/run.sh --quick    each benchmark once at a tiny size (CI: under 2 minutes)
#   bench/run.sh --only warm,cold      (any other option goes to bench/bench.py; see --help)
#
# Environment: IRSAFS_BENCH_BUILD_DIR (default: build-bench/ in the repository, git-ignored).
# Needs /dev/fuse and fusermount3; exits 77 (skipped) without /dev/fuse.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${IRSAFS_BENCH_BUILD_DIR:-$repo/build-bench}
python=/usr/bin/python3

start=$(date +%s)
if [ "${IRSAFS_BENCH_NO_BUILD:-}" = 1 ]; then
  # CTest's smoke run: the programs were built by the test build itself.
  echo "bench/run.sh: using the programs already built in $build" >&2
else
  cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DIRSAFS_BUILD_TESTS=OFF -DIRSAFS_BUILD_BENCH=ON \
    >"$build.configure.log" 2>&1 || { cat "$build.configure.log" >&2; exit 1; }
  cmake --build "$build" -j2 --target irsafs bench_warm_read bench_cold_readers bench_spawn_fleet \
    bench_fleet_client bench_http_load >"$build.build.log" 2>&1 || { tail -50 "$build.build.log" >&2; exit 1; }
fi
built=$(date +%s)
echo "bench/run.sh: built $build in $((built - start)) s" >&2

status=0
"$python" "$repo/bench/bench.py" --build-dir "$build" --command "bench/run.sh $*" "$@" || status=$?
echo "bench/run.sh: benchmarks took $(($(date +%s) - built)) s (total $(($(date +%s) - start)) s)" >&2
exit $status

#!/bin/sh
# Before/after: the same benchmarks on `irsafs` built at REV and on the working tree, in one run,
# interleaved (before, after, before, after, ...), then a table of medians and after/before ratios.
#
#   bench/compare.sh REV                     warm, cold, coalesce, footprint; 2 runs of each
#   bench/compare.sh REV --quick             tiny sizes, to check that it works
#   bench/compare.sh REV --runs 3 --only warm,cold
#
# Only `irsafs` differs between the two: both runs use the bench programs and bench.py of the
# working tree (bench.py --irsafs). REV is built (Release, target irsafs only) from
# `git archive REV` in $IRSAFS_COMPARE_DIR (default /tmp/irsafs-compare-REV), kept for the next
# run; the working tree in $IRSAFS_BENCH_BUILD_DIR (default build-bench/), as bench/run.sh does.
# Results: bench/compare-REV.md (+ the runs' .md/.json beside it, in $IRSAFS_COMPARE_DIR/runs).
set -eu

[ $# -ge 1 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
rev=$1
shift
runs=2
only=warm,cold,coalesce,footprint
quick=
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --quick) quick=--quick; shift ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
python=/usr/bin/python3
sha=$(git -C "$repo" rev-parse --short "$rev")
build=${IRSAFS_BENCH_BUILD_DIR:-$repo/build-bench}
base=${IRSAFS_COMPARE_DIR:-/tmp/irsafs-compare-$sha}
jobs=${IRSAFS_BUILD_JOBS:-1}
flags="-DCMAKE_BUILD_TYPE=Release -DIRSAFS_BUILD_TESTS=OFF -DIRSAFS_BUILD_BENCH=ON"

start=$(date +%s)
if [ ! -d "$base/src" ]; then
  mkdir -p "$base/src"
  git -C "$repo" archive "$sha" | tar -x -C "$base/src"
fi
# shellcheck disable=SC2086
cmake -S "$base/src" -B "$base/build" $flags >"$base/configure.log" 2>&1 || { cat "$base/configure.log" >&2; exit 1; }
cmake --build "$base/build" -j"$jobs" --target irsafs >"$base/build.log" 2>&1 || { tail -50 "$base/build.log" >&2; exit 1; }
# shellcheck disable=SC2086
cmake -S "$repo" -B "$build" $flags >"$build.configure.log" 2>&1 || { cat "$build.configure.log" >&2; exit 1; }
cmake --build "$build" -j"$jobs" --target irsafs bench_warm_read bench_cold_readers bench_spawn_fleet \
  bench_fleet_client >"$build.build.log" 2>&1 || { tail -50 "$build.build.log" >&2; exit 1; }
echo "compare.sh: built $sha and the working tree in $(($(date +%s) - start)) s" >&2

out=$base/runs
rm -rf "$out"
mkdir -p "$out"
i=1
while [ "$i" -le "$runs" ]; do
  # Alternate which goes first: before, after / after, before / ...
  if [ $((i % 2)) -eq 1 ]; then order="before after"; else order="after before"; fi
  for which in $order; do
    if [ "$which" = before ]; then bin=$base/build/irsafs; else bin=$build/irsafs; fi
    echo "compare.sh: run $i, $which ($bin)" >&2
    "$python" "$repo/bench/bench.py" --build-dir "$build" --irsafs "$bin" --only "$only" $quick \
      --output "$out/$which-$i.md" --command "bench/compare.sh $rev (run $i, $which)" >/dev/null
  done
  i=$((i + 1))
done

result=$repo/bench/compare-$sha${quick:+-quick}.md
"$python" - "$out" "$sha" "$runs" "bench/compare.sh $rev${quick:+ --quick} --runs $runs --only $only" \
  "$(($(date +%s) - start))" >"$result" <<'EOF'
import glob, json, os, statistics, sys
out, sha, runs, command, seconds = sys.argv[1:]
res = {w: [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{w}-*.json"))] for w in ("before", "after")}

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def pooled(w, f):
    """The median over every sample of every run (f returns a list per run), or of one value per run."""
    vals = []
    for r in res[w]:
        try:
            v = f(r)
        except (KeyError, TypeError):
            continue
        vals += v if isinstance(v, list) else [v]
    return med(vals)

def warm(section, ratio=False):
    """Per-round ops/s of the mounted file (or its ratio to tmpfs in the same round)."""
    return lambda r: [x["irsafs"]["ops_per_s"] / (x["tmpfs"]["ops_per_s"] if ratio else 1)
                      for x in r["warm"][section]["raw"]["rounds"]]

metrics = [
    ("warm C, 1 thread (ops/s)", warm("c1")),
    ("… its ratio to tmpfs in the same rounds", warm("c1", True)),
    ("warm C, 2 threads (ops/s)", warm("c2")),
    ("… its ratio to tmpfs in the same rounds", warm("c2", True)),
    ("warm Python open().read() (ops/s)", warm("py")),
    ("daemon CPU during the C loops (s)", lambda r: r["warm"]["c_daemon_cpu_s"]),
    ("cold first read, fresh mount, open → last byte (ms)", lambda r: r["cold"]["samples_ms"]["irsafs"]),
    ("… the curl reference in the same runs (ms)", lambda r: r["cold"]["samples_ms"]["curl"]),
    ("`irsafs fetch` process, exec → exit (ms)", lambda r: r["cold"]["samples_ms"]["fetch"]),
    ("coalescing R=1000: reader latency max (ms)", lambda r: r["coalesce"]["1000"]["max_ms"]),
    ("daemon RSS idle after mount (MiB)", lambda r: r["footprint"]["idle_empty"]["rss_kib"] / 1024),
    ("daemon Pss idle after mount (MiB)", lambda r: r["footprint"]["idle_empty"]["pss_kib"] / 1024),
    ("daemon RSS after the first fetch (MiB)", lambda r: r["footprint"]["idle_ready"]["rss_kib"] / 1024),
    ("daemon RSS after 1M warm reads (MiB)", lambda r: r["footprint"]["after_reads"]["rss_kib"] / 1024),
    ("daemon RSS with 1000 waiting readers, max (MiB)", lambda r: r["coalesce"]["1000"]["rss_kib_max"] / 1024),
    ("daemon threads idle after mount", lambda r: r["footprint"]["idle_empty"]["threads"]),
    ("daemon threads with 1000 waiting readers, max", lambda r: r["coalesce"]["1000"]["threads_max"]),
    ("exec → mount ready, `irsafs mount` returns (ms)", lambda r: r["footprint"]["mount_ready_samples_ms"]),
    ("binary size, stripped (KiB)", lambda r: r["footprint"]["binary_stripped_bytes"] / 1024),
]
print(f"<!-- written by bench/compare.sh; {runs} runs of each, interleaved; took {seconds} s -->")
print(f"<!-- command: {command} -->\n")
print(f"| metric | before ({sha}) | after (working tree) | after/before |")
print("|---|---|---|---|")
for name, f in metrics:
    b, a = pooled("before", f), pooled("after", f)
    if b is None and a is None:
        continue
    fmt = lambda x: "n/a" if x is None else (f"{x:,.0f}" if abs(x) >= 1000 or float(x).is_integer() else f"{x:.2f}")
    ratio = f"{a / b:.2f}x" if a is not None and b else "–"
    print(f"| {name} | {fmt(b)} | {fmt(a)} | {ratio} |")
note = "higher is better for ops/s and ratios to tmpfs; lower for the rest. Medians over every sample of every run"
print(f"\n{note} (warm: rounds; cold: samples; the rest: one value per run).")
EOF
cat "$result"
echo "compare.sh: wrote $result ($(($(date +%s) - start)) s)" >&2

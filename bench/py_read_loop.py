#!/usr/bin/python3
"""Python open().read() loop over several files with the same bytes, in interleaved rounds.

    py_read_loop.py --target irsafs=/mnt/config --target tmpfs=/dev/shm/config \
                    [--rounds 10] [--round-ms 500]

Prints one JSON object in the format of bench_warm_read. Every read must return the whole file.
"""
import argparse
import json
import sys
import time


def run(path: str, expected: str, seconds: float) -> dict:
    ops = bad = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(64):
            with open(path) as f:
                if f.read() != expected:
                    bad += 1
        ops += 64
        if time.perf_counter() >= end:
            break
    elapsed = time.perf_counter() - start
    return {"ops": ops, "seconds": elapsed, "ops_per_s": ops / elapsed, "bad": bad}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--target", action="append", required=True, help="NAME=PATH")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--round-ms", type=int, default=500)
    a = p.parse_args()
    targets = [t.split("=", 1) for t in a.target]
    with open(targets[0][1]) as f:
        expected = f.read()
    for _, path in targets:
        with open(path) as f:
            if f.read() != expected:
                print(f"py_read_loop: {path} differs from {targets[0][1]}", file=sys.stderr)
                return 2
    rounds, bad = [], 0
    for r in range(a.rounds):
        order = targets if r % 2 == 0 else list(reversed(targets))
        row = {}
        for name, path in order:
            row[name] = run(path, expected, a.round_ms / 1000)
            bad += row[name].pop("bad")
        rounds.append(row)
    json.dump({"threads": 1, "round_ms": a.round_ms, "rounds": rounds, "bad_reads": bad}, sys.stdout)
    print()
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

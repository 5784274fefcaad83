#!/usr/bin/python3
"""A discrete-event model of the fleet benchmark, without processes, TLS or a busy machine.

N clients start at the same instant (or spread over --spread seconds); the server serves K at a
time (S seconds each) and sheds the rest at once with 503, with or without a fixed Retry-After.
Prints requests per client and makespan / ideal (N*S/K), medians over seeds, for the retry
schedules of bench_fleet_client. It isolates what the schedule alone does when the server, not
the machine, is the bottleneck: the real runs on 2 shared cores are bounded by starting N
processes from N = 300 on (see the "floor" of the fleet rows).

The "irsafs" schedule models fetcher/retry.h (RetryPolicy): its numbers (base, growth, cap,
retry_after_cap) are read from that file, so the model cannot drift from irsafs.

    /usr/bin/python3 bench/fleet_sim.py [--n 100,300,1000] [--k 8] [--s 0.1] [--seeds 15]
"""
import argparse
import heapq
import math
import os
import random
import re
import statistics

RETRY_H = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fetcher", "retry.h")


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"milliseconds": 1e-3, "seconds": 1.0}[unit]


def retry_policy(path: str = RETRY_H) -> dict:
    """RetryPolicy's defaults from fetcher/retry.h: base, growth, cap and retry_after_cap."""
    with open(path) as f:
        text = f.read()
    out = {}
    for name in ("base", "cap", "retry_after_cap"):
        m = re.search(rf"Duration {name} = std::chrono::(milliseconds|seconds)\((\d+)\);", text)
        if not m:
            raise SystemExit(f"fleet_sim: cannot find RetryPolicy::{name} in {path}")
        out[name] = _seconds(m.group(2), m.group(1))
    m = re.search(r"double growth = ([0-9.]+);", text)
    if not m:
        raise SystemExit(f"fleet_sim: cannot find RetryPolicy::growth in {path}")
    out["growth"] = float(m.group(1))
    return out


def backoff(base, growth, cap, retry_after_cap):
    """RetryPolicy::backoff, full jitter U(0, min(cap, base*growth^(n-1))); a Retry-After R
    paces instead (RetryPolicy::paced): R + U(0, R), at most retry_after_cap."""
    def delay(n, ra, rng):
        if ra is not None:
            ra = min(ra, retry_after_cap)
            return min(retry_after_cap, ra * (1 + rng.random()))
        return rng.random() * min(cap, base * growth ** (n - 1))
    return delay


IRSAFS = retry_policy()
POLICIES = {
    "irsafs": (backoff(**IRSAFS), None),
    # The schedule irsafs had before the fleet benchmark (bench.py's "old-0.5x2").
    "old-0.5x2": (backoff(0.5, 2, 20, IRSAFS["retry_after_cap"]), None),
    "naive-1s": (lambda n, ra, rng: 1.0, None),
    # botocore standard mode: 3 attempts, U(0, 1) * min(2^(n-1), 20) s, Retry-After ignored.
    "botocore": (lambda n, ra, rng: rng.random() * min(2 ** (n - 1), 20), 3),
}


def simulate(n, k, s, ra, policy, max_attempts, seed, spread=0.0, server_ra=None):
    rng = random.Random(seed)
    events = [(rng.uniform(0, spread), i, i) for i in range(n)]
    heapq.heapify(events)
    seq = n
    busy = []
    requests, failures, done = [0] * n, [0] * n, [None] * n
    gave_up = 0
    waiting = n
    while events:
        t, _, c = heapq.heappop(events)
        while busy and busy[0] <= t:
            heapq.heappop(busy)
        requests[c] += 1
        if len(busy) < k:
            heapq.heappush(busy, t + s)
            done[c] = t + s
            waiting -= 1
            continue
        failures[c] += 1
        if max_attempts and failures[c] >= max_attempts:
            gave_up += 1
            continue
        this_ra = server_ra(waiting, k, s, rng) if server_ra else ra
        heapq.heappush(events, (t + policy(failures[c], this_ra, rng), seq, c))
        seq += 1
    finished = [d for d in done if d is not None]
    return statistics.mean(requests), max(finished) / (n * s / k), gave_up / n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="100,300,1000")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--s", type=float, default=0.1)
    p.add_argument("--spread", type=float, default=0.0, help="start-up spread of the clients (s)")
    p.add_argument("--seeds", type=int, default=15)
    a = p.parse_args()
    ns = [int(x) for x in a.n.split(",")]
    print(f"K={a.k} S={a.s}s spread={a.spread}s; cells: requests per client / makespan over ideal"
          " (gave up)\n")
    print("| policy | Retry-After | " + " | ".join(f"N={n}" for n in ns) + " |")
    print("|---|---|" + "---|" * len(ns))
    cases = [(name, ra, pol, ma, None) for ra in (1.0, None) for name, (pol, ma) in POLICIES.items()]
    # What a server could do: a Retry-After that spreads the shed clients over its backlog.
    cases.append(("irsafs", "U(0,1)·backlog (server)", POLICIES["irsafs"][0], None,
                  lambda w, k, s, rng: max(1, math.ceil(rng.random() * w * s / k))))
    for name, ra, pol, ma, server_ra in cases:
        cells = []
        for n in ns:
            res = [simulate(n, a.k, a.s, ra if not server_ra else None, pol, ma, seed, a.spread, server_ra)
                   for seed in range(a.seeds)]
            req, mk, fail = (statistics.median(x[i] for x in res) for i in range(3))
            cells.append(f"{req:.2f} / {mk:.2f}x" + (f" ({fail:.0%})" if fail else ""))
        label = ra if isinstance(ra, str) else ("1 s" if ra else "none")
        print(f"| {name} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Forwarding overhead of cluster mode: the same small embeddings request sent alternately to
xinference-local (model in-process) and to xinference-supervisor (model on a worker, one HTTP
hop away), each over its own keep-alive connection, so both see the same machine noise.

    python3 bench/cluster_overhead.py LOCAL_URL CLUSTER_URL [N]
"""
import http.client
import json
import statistics
import sys
import time
from urllib.parse import urlparse


def connect(url):
    u = urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def call(conn, body):
    start = time.perf_counter()
    conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
    res = conn.getresponse()
    data = res.read()
    elapsed = time.perf_counter() - start
    if res.status != 200:
        raise SystemExit(f"HTTP {res.status}: {data[:200]!r}")
    return elapsed


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def main():
    local_url, cluster_url = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    body = json.dumps({"model": "mini", "input": "hello world"})
    conns = {"local": connect(local_url), "cluster": connect(cluster_url)}
    for _ in range(200):  # warm-up: connections, caches, allocators
        for conn in conns.values():
            call(conn, body)
    times = {"local": [], "cluster": []}
    for _ in range(n):
        for name, conn in conns.items():
            times[name].append(call(conn, body))
    rows = []
    for name in ("local", "cluster"):
        t = [x * 1000 for x in times[name]]
        rows.append((name, pct(t, 50), pct(t, 90), pct(t, 99), statistics.mean(t)))
    print(f"{n} requests each, alternating; milliseconds")
    print("| mode | p50 | p90 | p99 | mean |")
    print("|---|---|---|---|---|")
    for name, p50, p90, p99, mean in rows:
        print(f"| {name} | {p50:.3f} | {p90:.3f} | {p99:.3f} | {mean:.3f} |")
    added = rows[1][1] - rows[0][1]
    # Paired differences: each cluster request minus the local one sent just before it.
    paired = sorted((c - l) * 1000 for l, c in zip(times["local"], times["cluster"]))
    print(f"\nadded p50 latency (cluster p50 - local p50): {added:.3f} ms")
    print(f"median of paired differences: {statistics.median(paired):.3f} ms")


if __name__ == "__main__":
    main()

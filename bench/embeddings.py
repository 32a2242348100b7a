#!/usr/bin/env python3
"""Embeddings benchmark driver (run by bench/embeddings.sh, which starts the server).

    embeddings.py BASE_URL MODEL_DIR SERVER_PID

(a) 64 sentences in one request: xinference-rs over HTTP vs sentence-transformers in-process,
    interleaved rounds, medians (goal: ours <= 1.0x PyTorch's time);
and the server's resident memory. Part (b), batching on vs off, is driven by wrk from
embeddings.sh (a Python client cannot send fast enough on a small machine).
"""
import json
import statistics
import sys
import time
import urllib.request

import torch
from sentence_transformers import SentenceTransformer

BASE, MODEL_DIR, PID = sys.argv[1], sys.argv[2], sys.argv[3]
ROUNDS = 7

TOPICS = ["the weather", "a new database engine", "tokenizers", "mountain hiking", "GPU memory",
          "the history of Rome", "espresso", "sparse attention"]
SENTENCES = [
    f"Sentence {i} talks about {TOPICS[i % len(TOPICS)]}" + ", with more detail" * (i % 7) + "."
    for i in range(64)
]


def post(path, body):
    req = urllib.request.Request(BASE + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as res:
        return json.loads(res.read())


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    torch.set_num_threads(2)
    st = SentenceTransformer(MODEL_DIR, device="cpu")
    st.encode(SENTENCES, batch_size=64)
    post("/v1/embeddings", {"model": "mini", "input": SENTENCES})
    ours, theirs = [], []
    for _ in range(ROUNDS):
        theirs.append(timed(lambda: st.encode(SENTENCES, batch_size=64)))
        ours.append(timed(lambda: post("/v1/embeddings", {"model": "mini", "input": SENTENCES})))
    a_ours, a_theirs = statistics.median(ours), statistics.median(theirs)

    rss = rss_mib(PID)

    print(f"| (a) 64 sentences, one request (median of {ROUNDS}) | {a_ours*1000:.1f} ms (HTTP) | "
          f"{a_theirs*1000:.1f} ms (sentence-transformers, in-process) | {a_ours/a_theirs:.2f}x the time | <= 1.0x |")
    print(f"| server RSS, two all-MiniLM-L6-v2 models loaded | {rss:.0f} MiB | | | |")


if __name__ == "__main__":
    main()

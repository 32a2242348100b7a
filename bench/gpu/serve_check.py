"""The server part of bench/gpu/run.sh: xinference-local (CUDA build) on 127.0.0.1, a free port.

    python3 serve_check.py XINFERENCE_LOCAL MODEL_DIR OUT_DIR

Launches MODEL_DIR (an embedding model) with n_gpu=1 and with n_gpu=null, embeds one sentence on
each and compares them, checks that n_gpu=2 is refused with the GPUs named, and prints one JSON
line. The server's log (it names the device each replica loaded on) goes to OUT_DIR.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def call(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def main():
    binary, model, out = sys.argv[1:4]
    home = tempfile.mkdtemp(prefix="xi-gpu-home-")
    log = open(os.path.join(out, "xinference-local.log"), "w")
    server = subprocess.Popen([binary, "-p", "0", "--home", home], stdout=subprocess.PIPE,
                              stderr=log, text=True)
    result = {"check": "serve"}
    try:
        line = server.stdout.readline().strip()
        base = line.removeprefix("xinference-local listening on ")
        launch = {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_path": model}
        started = time.time()
        result["launch_n_gpu_1"] = call(base + "/v1/models", dict(launch, model_uid="gpu", n_gpu=1))
        result["launch_secs"] = round(time.time() - started, 2)
        result["launch_cpu"] = call(base + "/v1/models", dict(launch, model_uid="cpu", n_gpu=None))
        result["launch_n_gpu_2"] = call(base + "/v1/models", dict(launch, model_uid="two", n_gpu=2))
        text = "The GPU path serves embeddings."
        vectors = {}
        for uid in ("gpu", "cpu"):
            status, body = call(base + "/v1/embeddings", {"model": uid, "input": text})
            vectors[uid] = body["data"][0]["embedding"] if status == 200 else None
            result[f"embed_{uid}_status"] = status
        if all(vectors.values()):
            result["max_abs_diff_gpu_vs_cpu"] = max(abs(a - b) for a, b in zip(vectors["gpu"], vectors["cpu"]))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    with open(os.path.join(out, "xinference-local.log")) as f:
        result["loaded_on"] = [l.split("on=", 1)[1].strip() for l in f if "on=" in l and "loading" in l]
    print(json.dumps(result))


if __name__ == "__main__":
    main()

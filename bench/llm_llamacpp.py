#!/usr/bin/env python3
"""llama.cpp side of the LLM side-by-side benchmark (via llama-cpp-python).

Usage:
    python bench/llm_llamacpp.py --model FILE.gguf --threads N \
        --prompt-tokens P --gen-tokens G [--repeat R]

Loads the GGUF with llama_cpp.Llama (n_ctx 2048, n_batch 512, n_threads N,
verbose False) and measures, for a prompt of exactly P tokens:

  * prefill tok/s : P / time of llm.eval(prompt) right after llm.reset()
  * decode tok/s  : G / time of the greedy loop (argmax of the last logits,
                    then llm.eval([tok])), exactly G tokens, EOS ignored
  * ttft_ms       : prefill time + first token's sampling and eval

One warm-up run, then R timed runs; the best of each metric is reported
(max tok/s, min ttft). Exactly one JSON object goes to stdout; everything
else (including anything llama.cpp itself prints) goes to stderr.
"""

import argparse
import ctypes
import glob
import json
import os
import sys
import time

# A repeated English paragraph; tokenized and truncated to P tokens.
PARAGRAPH = (
    "The history of the lighthouse is a story of people who watched the sea "
    "so that others could cross it safely. Long before electric lamps, keepers "
    "climbed narrow stairs every evening to trim wicks, polish brass and wind "
    "the clockwork that turned the great lens. In storms they stayed awake "
    "through the night, listening to the wind and counting the seconds between "
    "flashes, because a single dark minute could send a ship onto the rocks. "
    "Today most lights are automatic, but the towers still stand along the "
    "coast, reminding travellers that careful, patient work often goes unseen. "
)

N_CTX = 2048
N_BATCH = 512


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="path to a .gguf file")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--prompt-tokens", type=int, required=True)
    p.add_argument("--gen-tokens", type=int, required=True)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    if a.threads < 1 or a.prompt_tokens < 1 or a.gen_tokens < 1 or a.repeat < 1:
        p.error("--threads, --prompt-tokens, --gen-tokens and --repeat must be >= 1")
    if a.prompt_tokens + a.gen_tokens > N_CTX:
        p.error(f"prompt + gen tokens must fit in n_ctx={N_CTX}")
    return a


def engine_version(llama_cpp):
    """llama-cpp-python version plus what the bundled libraries report."""
    parts = [f"llama-cpp-python {llama_cpp.__version__}"]
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    libllama = sorted(glob.glob(os.path.join(libdir, "libllama.so.*.*")))
    if libllama:
        parts.append("libllama " + os.path.basename(libllama[-1])[len("libllama.so."):])
    try:
        base = sorted(glob.glob(os.path.join(libdir, "libggml-base.so*")))[0]
        lib = ctypes.CDLL(base)
        lib.ggml_version.restype = ctypes.c_char_p
        lib.ggml_commit.restype = ctypes.c_char_p
        parts.append(
            f"ggml {lib.ggml_version().decode()} ({lib.ggml_commit().decode()})"
        )
    except Exception:  # older builds lack ggml_version/ggml_commit
        pass
    return "; ".join(parts)


def build_prompt(llm, n):
    text = PARAGRAPH
    toks = llm.tokenize(text.encode("utf-8"), add_bos=True)
    while len(toks) < n:
        text += PARAGRAPH
        toks = llm.tokenize(text.encode("utf-8"), add_bos=True)
    return toks[:n]


def run_once(llm, llama_cpp, np, prompt, gen_tokens, n_vocab):
    def argmax_last():
        # logits_all=False: only the last evaluated position has logits.
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)
        )
        return int(logits.argmax())

    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    prefill_s = t1 - t0

    # Greedy decode: exactly gen_tokens tokens, EOS is not a stop condition.
    first_tok_s = None
    out = []
    t2 = time.perf_counter()
    for i in range(gen_tokens):
        tok = argmax_last()
        llm.eval([tok])
        out.append(tok)
        if i == 0:
            first_tok_s = time.perf_counter() - t2
    t3 = time.perf_counter()
    decode_s = t3 - t2

    return {
        "prefill_tok_s": len(prompt) / prefill_s,
        "decode_tok_s": gen_tokens / decode_s,
        "ttft_ms": (prefill_s + first_tok_s) * 1000.0,
        "tokens": out,
    }


def main():
    args = parse_args()

    # Keep stdout for the JSON only: point fd 1 at stderr while llama.cpp runs.
    sys.stdout.flush()
    json_fd = os.dup(1)
    os.dup2(2, 1)

    import numpy as np
    import llama_cpp

    version = engine_version(llama_cpp)
    log(f"[llamacpp-bench] {version}")
    log(f"[llamacpp-bench] system: {llama_cpp.llama_print_system_info().decode().strip()}")

    t = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=N_CTX,
        n_batch=N_BATCH,
        n_threads=args.threads,
        # Prefill runs on the batch thread pool; without this llama-cpp-python
        # uses cpu_count() there, which would not honour --threads.
        n_threads_batch=args.threads,
        verbose=False,
    )
    log(f"[llamacpp-bench] loaded {args.model} in {time.perf_counter() - t:.2f}s")
    n_vocab = llm.n_vocab()

    prompt = build_prompt(llm, args.prompt_tokens)
    assert len(prompt) == args.prompt_tokens

    warm = run_once(llm, llama_cpp, np, prompt, args.gen_tokens, n_vocab)
    log(
        "[llamacpp-bench] warm-up: prefill {:.1f} tok/s, decode {:.1f} tok/s, "
        "ttft {:.1f} ms".format(warm["prefill_tok_s"], warm["decode_tok_s"], warm["ttft_ms"])
    )
    sample = llm.detokenize(warm["tokens"][:32]).decode("utf-8", "replace")
    log(f"[llamacpp-bench] greedy sample: {sample!r}")

    runs = []
    for r in range(args.repeat):
        res = run_once(llm, llama_cpp, np, prompt, args.gen_tokens, n_vocab)
        if res["tokens"] != warm["tokens"]:
            log(f"[llamacpp-bench] warning: run {r + 1} greedy output differs from warm-up")
        log(
            "[llamacpp-bench] run {}/{}: prefill {:.1f} tok/s, decode {:.1f} tok/s, "
            "ttft {:.1f} ms".format(
                r + 1, args.repeat, res["prefill_tok_s"], res["decode_tok_s"], res["ttft_ms"]
            )
        )
        runs.append(res)

    # Cross-check against llama.cpp's own counters (all runs incl. warm-up):
    # shows how much of the measured time is Python/binding overhead.
    try:
        perf = llama_cpp.llama_perf_context(llm.ctx)
        if perf.n_p_eval and perf.n_eval:
            log(
                "[llamacpp-bench] llama.cpp internal: prefill {:.1f} tok/s ({} tok), "
                "decode {:.1f} tok/s ({} tok)".format(
                    perf.n_p_eval / perf.t_p_eval_ms * 1000.0, perf.n_p_eval,
                    perf.n_eval / perf.t_eval_ms * 1000.0, perf.n_eval,
                )
            )
    except Exception as e:  # informational only
        log(f"[llamacpp-bench] perf counters unavailable: {e}")

    result = {
        "engine": "llama.cpp",
        "version": version,
        "model": os.path.basename(args.model),
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "prefill_tok_s": round(max(r["prefill_tok_s"] for r in runs), 2),
        "decode_tok_s": round(max(r["decode_tok_s"] for r in runs), 2),
        "ttft_ms": round(min(r["ttft_ms"] for r in runs), 3),
    }
    with os.fdopen(json_fd, "w") as out:
        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

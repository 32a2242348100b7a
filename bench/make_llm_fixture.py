#!/usr/bin/env python3
"""Reference greedy tokens for the LLM engine's correctness test, made with PyTorch transformers.

    pip install transformers gguf accelerate torch
    python3 bench/make_llm_fixture.py "$(scripts/fetch-test-models.sh)"

transformers dequantizes SmolLM2-135M-Instruct's Q4_1 GGUF to f32 and generates greedily; the
test runs our engine on the same file re-quantized to f32 and must produce the same token ids.
Writes crates/engine/tests/fixtures/smollm2_greedy.json.
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "engine", "tests", "fixtures", "smollm2_greedy.json")
PROMPTS = [
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "Explain what a compiler does, in detail."}],
]


def main():
    models = sys.argv[1]
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(models, gguf_file=FILE)
    model = AutoModelForCausalLM.from_pretrained(models, gguf_file=FILE, dtype=torch.float32)
    cases = []
    for messages in PROMPTS:
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=40, do_sample=False)
        cases.append({"messages": messages, "prompt_ids": ids, "greedy_ids": out[0][len(ids):].tolist()})
    with open(OUT, "w") as f:
        json.dump({"model": FILE, "cases": cases}, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()

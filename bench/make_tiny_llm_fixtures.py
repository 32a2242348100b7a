#!/usr/bin/env python3
"""Tiny random-weight Llama / Qwen2 / Qwen3 checkpoints plus PyTorch transformers reference outputs.

    pip install torch transformers tokenizers safetensors
    python3 bench/make_tiny_llm_fixtures.py

For each of `llama`, `qwen2`, `qwen3` this writes crates/engine/tests/fixtures/tiny_llm/<name>/ with
  config.json, model.safetensors  (float32, save_pretrained(safe_serialization=True))
  tokenizer.json                  (WordLevel over "t0".."t255" = ids 0..255; only for decoding)
  expected.json                   {"cases": [{"prompt_ids", "greedy_ids", "last_logits"}], ...}
No generation_config.json is written and bos/eos/pad token ids are null, so nothing stops early.

Every parameter is re-initialised from a fixed seed with normal(0, 0.3) (norm weights 1 + normal(0, 0.1),
biases included) so the logits are far from flat and the greedy tokens vary. `greedy_ids` come from a
manual loop (full forward each step, argmax of the last position's logits), not model.generate, so no
eos/pad logic interferes. `last_logits` are the 256 logits of the last prompt position, rounded to 6
decimals. The run is deterministic: running it again rewrites byte-identical files.
"""
import json
import os
import random
import shutil

import torch
import transformers
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "engine", "tests", "fixtures",
                   "tiny_llm")
VOCAB = 256
NEW_TOKENS = 24
SEED = 1234
NO_SPECIAL = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, **NO_SPECIAL)

MODELS = {
    "llama": (LlamaConfig, LlamaForCausalLM, dict(
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64})),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True)),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(
        head_dim=32, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False)),
}


def prompts():
    rng = random.Random(SEED)
    return [[1, 5, 9, 200, 17, 33, 4], [rng.randrange(VOCAB) for _ in range(40)]]


def reinit(model, seed):
    """normal(0, 0.3) for every parameter, 1 + normal(0, 0.1) for RMSNorm weights, in name order."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):  # input/post_attention_layernorm, model.norm, q_norm, k_norm
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float32))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float32))


def tokenizer():
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = Whitespace()
    return tok


@torch.no_grad()
def reference(model, prompt):
    ids = list(prompt)
    last_logits = None
    greedy = []
    for step in range(NEW_TOKENS):
        logits = model(torch.tensor([ids], dtype=torch.long)).logits[0, -1]
        if step == 0:
            last_logits = [round(float(x), 6) for x in logits]
        nxt = int(torch.argmax(logits))
        greedy.append(nxt)
        ids.append(nxt)
    return {"prompt_ids": list(prompt), "greedy_ids": greedy, "last_logits": last_logits}


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # same reduction order on every run
    torch.use_deterministic_algorithms(True)
    print("transformers", transformers.__version__, "torch", torch.__version__)
    for index, (name, (config_cls, model_cls, extra)) in enumerate(MODELS.items()):
        config = config_cls(**COMMON, **extra)
        config._attn_implementation = "eager"
        model = model_cls(config).to(torch.float32)
        reinit(model, SEED + index)
        model.eval()
        # Null out special tokens on both configs so neither the file nor generation stops early.
        for key in NO_SPECIAL:
            setattr(model.config, key, None)
            if model.generation_config is not None:
                setattr(model.generation_config, key, None)

        out = os.path.join(OUT, name)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        model.save_pretrained(out, safe_serialization=True)
        gen_config = os.path.join(out, "generation_config.json")
        if os.path.exists(gen_config):
            os.remove(gen_config)
        tokenizer().save(os.path.join(out, "tokenizer.json"))

        cases = [reference(model, p) for p in prompts()]
        expected = {"model": name, "cases": cases, "transformers_version": transformers.__version__,
                    "torch_version": torch.__version__.split("+")[0]}
        with open(os.path.join(out, "expected.json"), "w") as f:
            json.dump(expected, f, indent=1)
            f.write("\n")
        for entry in sorted(os.listdir(out)):
            print(f"  {name}/{entry}: {os.path.getsize(os.path.join(out, entry))} bytes")
        print(f"  {name} case 0 greedy_ids: {cases[0]['greedy_ids']}")


if __name__ == "__main__":
    main()

"""Random-weight models in real shapes for bench/gpu/run.sh, written where it runs (the GPU host
has torch and safetensors; nothing this big can be carried there).

    python3 make_models.py OUT_DIR [qwen2.5-0.5b] [llama-3.2-1b] [bge-base]

Each model is a Hugging Face folder: config.json, model.safetensors (normal(0, 0.02) matrices,
unit norms, zero biases) and a word-level tokenizer.json over the whole vocabulary (the bench
feeds token ids; the tokenizer only has to load). LLMs are bf16, as they ship; the encoder f32.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

LLMS = {
    # Qwen/Qwen2.5-0.5B-Instruct: q/k/v biases, tied embeddings, 14 heads over 2 KV heads.
    "qwen2.5-0.5b": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=151936,
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6,
        rope_theta=1000000.0, max_position_embeddings=32768, tie_word_embeddings=True,
        bias=True,
    ),
    # meta-llama/Llama-3.2-1B-Instruct: llama3 RoPE scaling, tied embeddings, GQA 32/8.
    "llama-3.2-1b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256,
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
        rope_theta=500000.0, max_position_embeddings=131072, tie_word_embeddings=True,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=8192),
        bias=False,
    ),
}

# BAAI/bge-base-en-v1.5: BERT base, CLS pooling, normalised.
BGE = dict(
    architectures=["BertModel"], model_type="bert", vocab_size=30522, hidden_size=768,
    num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
    position_embedding_type="absolute", pad_token_id=0,
)

device = "cuda" if torch.cuda.is_available() else "cpu"
gen = torch.Generator(device=device).manual_seed(0)


def normal(*shape, dtype):
    return (torch.randn(*shape, generator=gen, device=device, dtype=torch.float32) * 0.02).to(dtype).cpu()


def tokenizer(path, vocab):
    words = {"<unk>": 0}
    words.update({f"t{i}": i for i in range(1, vocab)})
    spec = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "<unk>"},
    }
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        json.dump(spec, f)


def llm(out, name):
    spec = dict(LLMS[name])
    bias = spec.pop("bias")
    path = os.path.join(out, name + "-random")
    os.makedirs(path, exist_ok=True)
    h, inter = spec["hidden_size"], spec["intermediate_size"]
    heads, kv, d = spec["num_attention_heads"], spec["num_key_value_heads"], spec["head_dim"]
    bf = torch.bfloat16
    t = {"model.embed_tokens.weight": normal(spec["vocab_size"], h, dtype=bf),
         "model.norm.weight": torch.ones(h, dtype=bf)}
    for i in range(spec["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = torch.ones(h, dtype=bf)
        t[p + "post_attention_layernorm.weight"] = torch.ones(h, dtype=bf)
        for proj, rows in (("q", heads * d), ("k", kv * d), ("v", kv * d)):
            t[p + f"self_attn.{proj}_proj.weight"] = normal(rows, h, dtype=bf)
            if bias:
                t[p + f"self_attn.{proj}_proj.bias"] = torch.zeros(rows, dtype=bf)
        t[p + "self_attn.o_proj.weight"] = normal(h, heads * d, dtype=bf)
        t[p + "mlp.gate_proj.weight"] = normal(inter, h, dtype=bf)
        t[p + "mlp.up_proj.weight"] = normal(inter, h, dtype=bf)
        t[p + "mlp.down_proj.weight"] = normal(h, inter, dtype=bf)
    save_file(t, os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(dict(spec, torch_dtype="bfloat16", hidden_act="silu"), f)
    tokenizer(path, spec["vocab_size"])
    print(path)


def bge(out):
    path = os.path.join(out, "bge-base-random")
    os.makedirs(os.path.join(path, "1_Pooling"), exist_ok=True)
    h, inter, f32 = BGE["hidden_size"], BGE["intermediate_size"], torch.float32
    t = {
        "embeddings.word_embeddings.weight": normal(BGE["vocab_size"], h, dtype=f32),
        "embeddings.position_embeddings.weight": normal(BGE["max_position_embeddings"], h, dtype=f32),
        "embeddings.token_type_embeddings.weight": normal(2, h, dtype=f32),
        "embeddings.LayerNorm.weight": torch.ones(h), "embeddings.LayerNorm.bias": torch.zeros(h),
    }
    for i in range(BGE["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name, (rows, cols) in {
            "attention.self.query": (h, h), "attention.self.key": (h, h),
            "attention.self.value": (h, h), "attention.output.dense": (h, h),
            "intermediate.dense": (inter, h), "output.dense": (h, inter),
        }.items():
            t[p + name + ".weight"] = normal(rows, cols, dtype=f32)
            t[p + name + ".bias"] = torch.zeros(rows)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + norm + ".weight"] = torch.ones(h)
            t[p + norm + ".bias"] = torch.zeros(h)
    save_file(t, os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(BGE, f)
    with open(os.path.join(path, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": h, "pooling_mode_cls_token": True}, f)
    with open(os.path.join(path, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}], f)
    tokenizer(path, BGE["vocab_size"])
    print(path)


if __name__ == "__main__":
    out, names = sys.argv[1], sys.argv[2:] or ["qwen2.5-0.5b", "bge-base"]
    for name in names:
        bge(out) if name == "bge-base" else llm(out, name)

#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/ (committed; run again
after changing a target's input format). Standard library only. Seeds that already live in
the test fixtures (tokenizer.json, config.json, chat templates) are read from there."""

import json
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
FIXTURES = ROOT / "crates/engine/tests/fixtures"
SEEDS = FUZZ / "seeds"


def put(target: str, name: str, data: bytes) -> None:
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


# --- GGUF: a tiny Llama (1 layer, hidden 8) with a byte-level tokenizer and a template ---

def gguf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(v) -> tuple[int, bytes]:
    if isinstance(v, bool):
        return 7, struct.pack("<?", v)
    if isinstance(v, int):
        return 4, struct.pack("<I", v)
    if isinstance(v, float):
        return 6, struct.pack("<f", v)
    if isinstance(v, str):
        return 8, gguf_string(v)
    if isinstance(v, list):
        kinds = {gguf_value(x)[0] for x in v}
        kind = kinds.pop() if kinds else 4
        body = b"".join(gguf_value(x)[1] for x in v)
        return 9, struct.pack("<IQ", kind, len(v)) + body
    raise TypeError(v)


def tiny_gguf() -> bytes:
    hidden, heads, kv_heads, head_dim, ffn = 8, 2, 1, 4, 16
    tokens = ["a", "b", "ab", "\u0120", "<|im_end|>"] + [chr(c) for c in range(ord("c"), ord("z") + 1)]
    types = [1] * len(tokens)
    types[4] = 3
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    meta = [
        ("general.architecture", "llama"),
        ("general.alignment", 32),
        ("llama.embedding_length", hidden),
        ("llama.feed_forward_length", ffn),
        ("llama.block_count", 1),
        ("llama.attention.head_count", heads),
        ("llama.attention.head_count_kv", kv_heads),
        ("llama.context_length", 64),
        ("llama.attention.layer_norm_rms_epsilon", 1e-5),
        ("llama.rope.freq_base", 10000.0),
        ("tokenizer.ggml.model", "gpt2"),
        ("tokenizer.ggml.pre", "default"),
        ("tokenizer.ggml.tokens", tokens),
        ("tokenizer.ggml.merges", ["a b"]),
        ("tokenizer.ggml.token_type", types),
        ("tokenizer.ggml.eos_token_id", 4),
        ("tokenizer.chat_template", template),
    ]
    q, kv = heads * head_dim, kv_heads * head_dim
    # GGUF dims are columns first (the input size, then the output size).
    tensors = [("token_embd.weight", [hidden, len(tokens)]), ("output_norm.weight", [hidden]),
               ("blk.0.attn_norm.weight", [hidden]), ("blk.0.ffn_norm.weight", [hidden]),
               ("blk.0.attn_q.weight", [hidden, q]), ("blk.0.attn_k.weight", [hidden, kv]),
               ("blk.0.attn_v.weight", [hidden, kv]), ("blk.0.attn_output.weight", [q, hidden]),
               ("blk.0.ffn_gate.weight", [hidden, ffn]), ("blk.0.ffn_up.weight", [hidden, ffn]),
               ("blk.0.ffn_down.weight", [ffn, hidden])]
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for key, value in meta:
        kind, body = gguf_value(value)
        out += gguf_string(key) + struct.pack("<I", kind) + body
    data = b""
    for name, dims in tensors:
        count = 1
        for d in dims:
            count *= d
        out += gguf_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", 0, len(data))  # F32, offset
        data += struct.pack(f"<{count}f", *[((i * 7919) % 97 - 48) / 960 for i in range(count)])
        data += b"\0" * (-len(data) % 32)
    out += b"\0" * (-len(out) % 32)
    return out + data


# --- safetensors: a file matching xi_engine::fuzzing::tiny_llama_config -------------------

def tiny_safetensors() -> bytes:
    hidden, ffn, vocab, q, kv = 8, 16, 32, 8, 4
    shapes = {
        "model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden],
        "model.layers.0.input_layernorm.weight": [hidden],
        "model.layers.0.post_attention_layernorm.weight": [hidden],
        "model.layers.0.self_attn.q_proj.weight": [q, hidden],
        "model.layers.0.self_attn.k_proj.weight": [kv, hidden],
        "model.layers.0.self_attn.v_proj.weight": [kv, hidden],
        "model.layers.0.self_attn.o_proj.weight": [hidden, q],
        "model.layers.0.mlp.gate_proj.weight": [ffn, hidden],
        "model.layers.0.mlp.up_proj.weight": [ffn, hidden],
        "model.layers.0.mlp.down_proj.weight": [hidden, ffn],
    }
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"\0" * offset


def main() -> None:
    put("gguf", "tiny.gguf", tiny_gguf())
    put("safetensors", "tiny.safetensors", tiny_safetensors())
    put("safetensors", "empty-header.safetensors", struct.pack("<Q", 2) + b"{}")

    users = [
        {"username": "alice", "password": "alice-Pw-ZQ81", "permissions": ["admin"]},
        {"username": "bob", "password": "$2b$12$KIXQe1Jb6mKz5bq3Jm2dUuJ6mZr1Wq9rVQmP2i0b1d3a5c7e9g1i2",
         "permissions": ["models:list", "models:read"], "api_keys": ["sk-AbCdEf1234567"]},
    ]
    auth = {"algorithm": "HS256", "secret_key": "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
            "token_expire_in_minutes": 30}
    put("auth_config", "example.json", json.dumps({"auth_config": auth, "user_config": users}).encode())
    put("auth_config", "minimal.json", json.dumps({"auth_config": auth, "user_config": []}).encode())

    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    claims = json.dumps({"sub": "bob", "scopes": ["models:list"], "iat": 1699990000,
                         "exp": 1700003600, "nbf": 1699990000, "sid": "s1"}).encode()
    put("jwt", "signed", b"\x01" + header + b"\0" + claims)
    put("jwt", "raw", b"\x00eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJleHAiOjF9.c2ln")

    put("authenticate", "key", b"Bearer sk-AbCdEf1234567")
    put("authenticate", "jwt", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJleHAiOjF9.c2ln")
    put("authenticate", "basic", b"Basic Ym9iOmJvYg==")

    chat = {"model": "m", "stream": True, "max_tokens": 16, "temperature": 0.7, "top_p": 0.9,
            "stop": ["\n"], "n": 2, "logprobs": True, "top_logprobs": 2, "seed": 1,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "c1", "type": "function",
                              "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "2"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"x": {"type": "integer"}}}}}],
            "tool_choice": "auto", "chat_template_kwargs": {"enable_thinking": False}}
    guided = {"model": "m", "messages": [{"role": "user", "content": "json"}],
              "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {
                  "type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}}}}}
    bodies = [
        (0, chat), (0, guided),
        (1, {"model": "m", "prompt": "Once", "max_tokens": 8, "logprobs": 2, "guided_regex": "[a-z]+"}),
        (2, {"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 384}),
        (2, {"model": "m", "input": [[1, 2, 3], [4]]}),
        (3, {"model": "m", "query": "q", "documents": ["a", "b"], "top_n": 1, "return_documents": True}),
        (4, {"model_name": "qwen2.5-instruct", "model_type": "LLM", "model_engine": "llama.cpp",
             "model_format": "ggufv2", "model_size_in_billions": "0_5", "quantization": "q4_k_m",
             "replica": 1, "n_gpu": "auto", "model_uid": "my-model"}),
        (5, {"version": 2, "model_name": "my-llm", "model_lang": ["en"], "model_ability": ["chat"],
             "model_family": "qwen2.5-instruct", "context_length": 2048, "model_specs": [
                 {"model_format": "ggufv2", "model_size_in_billions": 1, "quantizations": ["q4_0"],
                  "model_uri": "/nonexistent/model.gguf"}]}),
        (6, {"model_name": "my-embed", "dimensions": 384, "max_tokens": 512, "language": ["en"],
             "model_uri": "/nonexistent/minilm"}),
        (9, {"username": "carol", "password": "carol-Pw-MN55", "permissions": ["models:list"]}),
        (13, {"name": "ci", "permissions": ["models:read"], "expires_in_days": 30,
              "limits": {"requests_per_minute": 60}}),
        (15, {"models": [{"model_uid": "m", "model_type": "LLM"}]}),
        (17, {"code": "abc"}),
    ]
    for i, (route, body) in enumerate(bodies):
        put("request_body", f"{route:02}-{i}", bytes([route]) + json.dumps(body).encode())
    put("request_body", "07-login", b"\x07" + json.dumps({"username": "bob", "password": "x"}).encode())
    put("request_body", "08-form", b"\x08grant_type=password&username=bob&password=x%20y")

    for arch in ("llama", "qwen2", "qwen3"):
        put("llm_config", f"{arch}.json", (FIXTURES / "tiny_llm" / arch / "config.json").read_bytes())
        put("tokenizer", arch, (FIXTURES / "tiny_llm" / arch / "tokenizer.json").read_bytes()
            + b"\0Hello, world! \xc3\xa9t\xc3\xa9")

    chats = json.loads((FIXTURES / "templates" / "chats.json").read_text())
    for path in sorted((FIXTURES / "templates").glob("*.txt")):
        chat = json.dumps(chats[path.stem]).encode()
        put("chat_template", path.stem, path.read_bytes() + b"\0" + chat)
    put("chat_template", "loops", b"{% for i in range(10) %}{% for j in range(10) %}{{ i * j }}"
        b"{% endfor %}{% endfor %}{% set s = 'ab' %}{{ s ~ s }}{{ messages | tojson }}")

    put("stream_framing", "sse", b"\x03data: {\"choices\": []}\n\n: ping\r\n\r\nevent: x\r\ndata: a\r\ndata: b\r\r"
        b"data: [DONE]\n\n")
    put("stream_framing", "ndjson", b"\x09{\"Token\": {\"text\": \"h\xc3\xa9\"}}\n{\"Done\": {}}\n{\"cut")


if __name__ == "__main__":
    main()

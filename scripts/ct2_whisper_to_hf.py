#!/usr/bin/env python3
"""Converts a CTranslate2 Whisper model (faster-whisper's folder) into a Hugging Face whisper folder.

    python3 scripts/ct2_whisper_to_hf.py SRC_FOLDER DST_FOLDER

SRC_FOLDER holds `model.bin` (CTranslate2's binary format, spec `WhisperSpec`), `config.json`
(alignment heads, suppressed tokens) and `tokenizer.json`. DST_FOLDER gets what the hub ships
for a whisper model: `config.json` (`"model_type": "whisper"`), `generation_config.json`,
`preprocessor_config.json`, `tokenizer.json` and `model.safetensors`.

Standard library only (the test-model fetch runs it with the system python3; no numpy, no
torch). The weights keep their stored dtype (float16 or float32): the bytes are copied, never
re-rounded, so the folder computes what faster-whisper computes at that precision. Quantized
(int8/int16) models are refused: their scales would have to be applied, which is another
precision than the original. CTranslate2 fuses the query/key/value projections; the key
projection of a whisper attention has no bias, so its share of the fused bias must be zero
(checked, never dropped silently).

The binary format (CTranslate2's `python/ctranslate2/specs/model_spec.py`, `_serialize`), all
little-endian: u32 version (6), string spec name, u32 spec revision, u32 variable count, then
per variable: string name, u8 rank, u32 dims..., u8 dtype id (float32, int8, int16, int32,
float16, bfloat16), u32 byte count, the bytes; then u32 alias count and pairs of strings
(alias, target). A string is u16 length (with its NUL), the UTF-8 bytes and a NUL.

The output is written to DST_FOLDER.partial and renamed into place, so a failed run leaves no
half folder.
"""
import json
import os
import shutil
import struct
import sys

DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
SAFETENSORS_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
ITEM_SIZE = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2}
# No real whisper model has more (large-v3: about 1,300 variables).
MAX_VARIABLES = 10_000


class Ct2Error(Exception):
    pass


class Reader:
    def __init__(self, data):
        self.data = data
        self.at = 0

    def take(self, n):
        if n < 0 or self.at + n > len(self.data):
            raise Ct2Error("model.bin is truncated at byte %d" % self.at)
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def unpack(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self):
        n = self.unpack("H")
        raw = self.take(n)
        if n == 0 or raw[-1] != 0:
            raise Ct2Error("model.bin has a string without its terminator at byte %d" % self.at)
        return raw[:-1].decode("utf-8")


def read_ct2(path):
    """Variables (name -> (dtype, shape, bytes)) and aliases (name -> target) of a model.bin."""
    with open(path, "rb") as f:
        r = Reader(f.read())
    version = r.unpack("I")
    if version < 5 or version > 6:
        raise Ct2Error("model.bin has binary version %d (this converter reads 5 and 6)" % version)
    spec = r.string()
    if spec != "WhisperSpec":
        raise Ct2Error("model.bin holds a %s, not a WhisperSpec" % spec)
    r.unpack("I")  # spec revision
    count = r.unpack("I")
    if count > MAX_VARIABLES:
        raise Ct2Error("model.bin claims %d variables" % count)
    variables = {}
    for _ in range(count):
        name = r.string()
        rank = r.unpack("B")
        shape = [r.unpack("I") for _ in range(rank)]
        dtype_id = r.unpack("B")
        if dtype_id >= len(DTYPES):
            raise Ct2Error("%s has unknown dtype id %d" % (name, dtype_id))
        dtype = DTYPES[dtype_id]
        nbytes = r.unpack("I")
        elements = 1
        for d in shape:
            elements *= d
        if nbytes != elements * ITEM_SIZE[dtype]:
            raise Ct2Error("%s: %d bytes for shape %s of %s" % (name, nbytes, shape, dtype))
        variables[name] = (dtype, shape, r.take(nbytes))
    aliases = {}
    for _ in range(r.unpack("I")):
        alias = r.string()
        aliases[alias] = r.string()
    return variables, aliases


def scalar(variables, name):
    if name not in variables:
        raise Ct2Error("model.bin has no %s" % name)
    dtype, shape, raw = variables[name]
    fmt = {"int8": "b", "int16": "h", "int32": "i"}.get(dtype)
    if shape or fmt is None:
        raise Ct2Error("%s is not an integer scalar" % name)
    return struct.unpack("<" + fmt, raw)[0]


def convert(src, dst):
    variables, aliases = read_ct2(os.path.join(src, "model.bin"))
    with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
        ct2_config = json.load(f)

    tensors = {}  # HF name -> (dtype, shape, bytes)

    def get(name):
        if name not in variables:
            raise Ct2Error("model.bin has no %s" % name)
        dtype, shape, raw = variables[name]
        if dtype not in SAFETENSORS_DTYPE:
            raise Ct2Error("%s is %s: quantized models are not converted (convert the "
                           "original model with float16 or float32)" % (name, dtype))
        return dtype, shape, raw

    def put(hf, ct2):
        tensors[hf] = get(ct2)

    def split_rows(ct2, parts):
        """Splits a fused [n*d, ...] weight or [n*d] bias into `parts` equal row blocks."""
        dtype, shape, raw = get(ct2)
        if shape[0] % parts:
            raise Ct2Error("%s has %d rows, not a multiple of %d" % (ct2, shape[0], parts))
        rows = shape[0] // parts
        row_bytes = len(raw) // shape[0]
        return [(dtype, [rows] + shape[1:], raw[i * rows * row_bytes:(i + 1) * rows * row_bytes])
                for i in range(parts)]

    def no_bias(ct2, block):
        raw = block[2]
        if any(raw):
            raise Ct2Error("%s: the key projection has a non-zero bias, which a whisper "
                           "attention does not have" % ct2)

    def layer_norm(hf, ct2):
        put(hf + ".weight", ct2 + "/gamma")
        put(hf + ".bias", ct2 + "/beta")

    def linear(hf, ct2):
        put(hf + ".weight", ct2 + "/weight")
        put(hf + ".bias", ct2 + "/bias")

    def fused_qkv(hf, ct2):
        q, k, v = split_rows(ct2 + "/weight", 3)
        qb, kb, vb = split_rows(ct2 + "/bias", 3)
        no_bias(ct2 + "/bias", kb)
        tensors.update({hf + ".q_proj.weight": q, hf + ".k_proj.weight": k, hf + ".v_proj.weight": v,
                        hf + ".q_proj.bias": qb, hf + ".v_proj.bias": vb})

    def fused_kv(hf, ct2):
        k, v = split_rows(ct2 + "/weight", 2)
        kb, vb = split_rows(ct2 + "/bias", 2)
        no_bias(ct2 + "/bias", kb)
        tensors.update({hf + ".k_proj.weight": k, hf + ".v_proj.weight": v, hf + ".v_proj.bias": vb})

    def self_attention_and_ffn(hf, ct2):
        """What encoder and decoder layers share: self-attention and the feed-forward block."""
        layer_norm(hf + ".self_attn_layer_norm", ct2 + "/self_attention/layer_norm")
        fused_qkv(hf + ".self_attn", ct2 + "/self_attention/linear_0")
        linear(hf + ".self_attn.out_proj", ct2 + "/self_attention/linear_1")
        layer_norm(hf + ".final_layer_norm", ct2 + "/ffn/layer_norm")
        linear(hf + ".fc1", ct2 + "/ffn/linear_0")
        linear(hf + ".fc2", ct2 + "/ffn/linear_1")

    def layers(side):
        n = 0
        while "%s/layer_%d/ffn/linear_0/weight" % (side, n) in variables:
            n += 1
        if n == 0:
            raise Ct2Error("model.bin has no %s layers" % side)
        return n

    for flag, want in (("decoder/pre_norm", 1), ("decoder/scale_embeddings", 0), ("decoder/alibi", 0)):
        value = scalar(variables, flag) if flag in variables else want
        if value != want:
            raise Ct2Error("%s is %d: not a whisper decoder" % (flag, value))

    enc_layers, dec_layers = layers("encoder"), layers("decoder")
    put("model.encoder.conv1.weight", "encoder/conv1/weight")
    put("model.encoder.conv1.bias", "encoder/conv1/bias")
    put("model.encoder.conv2.weight", "encoder/conv2/weight")
    put("model.encoder.conv2.bias", "encoder/conv2/bias")
    put("model.encoder.embed_positions.weight", "encoder/position_encodings/encodings")
    layer_norm("model.encoder.layer_norm", "encoder/layer_norm")
    for i in range(enc_layers):
        self_attention_and_ffn("model.encoder.layers.%d" % i, "encoder/layer_%d" % i)

    put("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    put("model.decoder.embed_positions.weight", "decoder/position_encodings/encodings")
    layer_norm("model.decoder.layer_norm", "decoder/layer_norm")
    for i in range(dec_layers):
        hf, ct2 = "model.decoder.layers.%d" % i, "decoder/layer_%d" % i
        self_attention_and_ffn(hf, ct2)
        layer_norm(hf + ".encoder_attn_layer_norm", ct2 + "/attention/layer_norm")
        linear(hf + ".encoder_attn.q_proj", ct2 + "/attention/linear_0")
        fused_kv(hf + ".encoder_attn", ct2 + "/attention/linear_1")
        linear(hf + ".encoder_attn.out_proj", ct2 + "/attention/linear_2")

    # The output projection: whisper ties it to the token embeddings. An untied model stores
    # its own, which HF names proj_out.
    projection = aliases.get("decoder/projection/weight")
    tied = projection == "decoder/embeddings/weight"
    if not tied:
        put("proj_out.weight", "decoder/projection/weight")

    vocab, d_model = tensors["model.decoder.embed_tokens.weight"][1]
    n_mels = tensors["model.encoder.conv1.weight"][1][1]
    ffn = tensors["model.encoder.layers.0.fc1.weight"][1][0]
    enc_heads = scalar(variables, "encoder/num_heads")
    dec_heads = scalar(variables, "decoder/num_heads")
    with open(os.path.join(src, "tokenizer.json"), encoding="utf-8") as f:
        added = {t["content"]: t["id"] for t in json.load(f).get("added_tokens", [])}

    def token(text):
        if text not in added:
            raise Ct2Error("tokenizer.json has no %s token" % text)
        return added[text]

    eos, sot = token("<|endoftext|>"), token("<|startoftranscript|>")
    multilingual = vocab >= 51865
    dtype = tensors["model.decoder.embed_tokens.weight"][0]
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": vocab,
        "num_mel_bins": n_mels,
        "d_model": d_model,
        "encoder_layers": enc_layers,
        "decoder_layers": dec_layers,
        "encoder_attention_heads": enc_heads,
        "decoder_attention_heads": dec_heads,
        "encoder_ffn_dim": ffn,
        "decoder_ffn_dim": tensors["model.decoder.layers.0.fc1.weight"][1][0],
        "max_source_positions": tensors["model.encoder.embed_positions.weight"][1][0],
        "max_target_positions": tensors["model.decoder.embed_positions.weight"][1][0],
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": tied,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "decoder_start_token_id": sot,
        "begin_suppress_tokens": ct2_config.get("suppress_ids_begin", [220, eos]),
        "suppress_tokens": ct2_config.get("suppress_ids", []),
        "torch_dtype": dtype,
        "use_cache": True,
    }
    generation = {
        "alignment_heads": ct2_config.get("alignment_heads", []),
        "begin_suppress_tokens": config["begin_suppress_tokens"],
        "suppress_tokens": config["suppress_tokens"],
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "decoder_start_token_id": sot,
        "no_timestamps_token_id": token("<|notimestamps|>"),
        "prev_sot_token_id": token("<|startofprev|>"),
        "max_length": config["max_target_positions"],
        "is_multilingual": multilingual,
    }
    if multilingual:
        languages = {t: i for t, i in added.items()
                     if i in set(ct2_config.get("lang_ids", [])) and t.startswith("<|")}
        generation["lang_to_id"] = dict(sorted(languages.items(), key=lambda kv: kv[1]))
        generation["task_to_id"] = {"transcribe": token("<|transcribe|>"), "translate": token("<|translate|>")}
    preprocessor = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "WhisperProcessor",
        "feature_size": n_mels,
        "sampling_rate": 16000,
        "hop_length": 160,
        "n_fft": 400,
        "chunk_length": 30,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }

    partial = dst.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        write_safetensors(os.path.join(partial, "model.safetensors"), tensors)
        for name, value in (("config.json", config), ("generation_config.json", generation),
                            ("preprocessor_config.json", preprocessor)):
            with open(os.path.join(partial, name), "w", encoding="utf-8") as f:
                json.dump(value, f, indent=2)
                f.write("\n")
        shutil.copy(os.path.join(src, "tokenizer.json"), os.path.join(partial, "tokenizer.json"))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.rename(partial, dst)
    return len(tensors)


def write_safetensors(path, tensors):
    """safetensors: u64 header length, the JSON header (padded to 8 bytes), the raw data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    names = sorted(tensors)
    for name in names:
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": SAFETENSORS_DTYPE[dtype], "shape": shape,
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name in names:
            f.write(tensors[name][2])


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        n = convert(sys.argv[1], sys.argv[2])
    except (Ct2Error, OSError, ValueError, KeyError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    print("wrote %s (%d tensors)" % (sys.argv[2], n), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

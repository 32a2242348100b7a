#!/usr/bin/env python3
"""Reference outputs for the engine's correctness tests, computed with PyTorch.

Run once (needs `pip install sentence-transformers`; see bench/README.md):

    python3 bench/make_fixtures.py "$(scripts/fetch-test-models.sh)/all-MiniLM-L6-v2"

Writes crates/engine/tests/fixtures/minilm_embeddings.json (sentence-transformers embeddings of
all-MiniLM-L6-v2) and crates/engine/tests/fixtures/minilm_cross_encoder.json: a cross-encoder made of
all-MiniLM-L6-v2's BERT body and pooler plus a classifier head drawn from a seeded generator (no
real cross-encoder ships in a package registry), with the head's weights and the scores
sentence-transformers' CrossEncoder gives for a set of (query, document) pairs.
"""
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import CrossEncoder, SentenceTransformer

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "engine", "tests", "fixtures")

SENTENCES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Xinference serves embedding models behind an OpenAI-compatible API.",
    "Ünïcödé, emoji 🚀 and CJK 日本語のテキスト are tokenized too.",
    "a",
    "",
    # Longer than the model's 256-token limit: sentence-transformers truncates it.
    " ".join(["tokenization"] * 150 + ["of", "a", "very", "long", "document"] * 30),
    "Embeddings are compared with a maximum absolute difference.",
]

QUERY_PAIRS = [
    ("What is the capital of France?", "Paris is the capital and largest city of France."),
    ("What is the capital of France?", "The Eiffel Tower was built in 1889."),
    ("What is the capital of France?", "Bananas are rich in potassium."),
    ("how do I bake bread", "Mix flour, water, salt and yeast, let it rise, then bake at 230 C."),
    ("how do I bake bread", " ".join(["dough"] * 700)),
    ("", "An empty query still gets a score."),
]


def embeddings(model_dir):
    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(SENTENCES, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
    return {
        "model": "all-MiniLM-L6-v2",
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "embeddings": [[float(x) for x in v] for v in vectors],
    }


def cross_encoder(model_dir):
    generator = torch.Generator().manual_seed(20261130)
    hidden = 384
    weight = (torch.randn(1, hidden, generator=generator) * 0.2).float()
    bias = (torch.randn(1, generator=generator) * 0.1).float()
    with tempfile.TemporaryDirectory() as tmp:
        tensors = {f"bert.{k}": v for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()}
        tensors["classifier.weight"] = weight
        tensors["classifier.bias"] = bias
        save_file(tensors, os.path.join(tmp, "model.safetensors"))
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
        config["architectures"] = ["BertForSequenceClassification"]
        config["num_labels"] = 1
        config["id2label"] = {"0": "LABEL_0"}
        config["label2id"] = {"LABEL_0": 0}
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f)
        for name in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
            shutil.copy(os.path.join(model_dir, name), tmp)
        # No max_length: like real cross-encoders, the tokenizer's model_max_length (512) applies.
        model = CrossEncoder(tmp, device="cpu")
        scores = model.predict(QUERY_PAIRS, batch_size=3, convert_to_numpy=True)
    return {
        "base_model": "all-MiniLM-L6-v2",
        "max_length": 512,
        "seed": 20261130,
        "classifier_weight": [float(x) for x in weight[0]],
        "classifier_bias": float(bias[0]),
        "pairs": [list(p) for p in QUERY_PAIRS],
        "scores": [float(s) for s in scores],
    }


def main():
    model_dir = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    for name, data in [("minilm_embeddings.json", embeddings(model_dir)), ("minilm_cross_encoder.json", cross_encoder(model_dir))]:
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(data, f, indent=1)
        print("wrote", name)


if __name__ == "__main__":
    main()

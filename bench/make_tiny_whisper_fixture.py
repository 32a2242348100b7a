#!/usr/bin/env python3
"""A tiny random-weight Whisper saved by transformers, with PyTorch's encoder outputs and decoder
logits: the reference our Whisper engine must match to 1e-4 (issue 19).

    pip install torch transformers safetensors numpy
    python3 bench/make_tiny_whisper_fixture.py

Writes crates/engine/tests/fixtures/tiny_whisper/ with
  config.json, model.safetensors   (float32, save_pretrained(safe_serialization=True))
  expected.json                    {"input_features": [n_mels][frames], "encoder_output": [positions][d_model],
                                    "prompt_ids": [...], "logits": [prompt position][vocab],
                                    "greedy_ids": [...]}
The model has 8 mel bins, 2 encoder and 2 decoder layers, d_model 16, 4 heads, 64 tokens of
vocabulary, 16 encoder positions (32 input frames) and 24 decoder positions; no tokenizer (the
engine test feeds ids). Every parameter is re-initialised from a fixed seed with normal(0, 0.3)
(layer-norm weights 1 + normal(0, 0.1)) so nothing is flat; the input features are normal(0, 1)
from the same seed. `greedy_ids` come from a manual loop (full decoder pass each step, argmax
of the last position), 12 new tokens after `prompt_ids`, no suppression and no end token, so
no generation logic interferes. Deterministic: a rerun writes byte-identical files.
"""
import json
import os
import shutil

import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "engine", "tests", "fixtures",
                   "tiny_whisper")
SEED = 4321
NEW_TOKENS = 12
PROMPT = [60, 3, 17, 42]


def main():
    torch.manual_seed(SEED)
    config = WhisperConfig(vocab_size=64, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=16, max_target_positions=24,
                           decoder_start_token_id=60, bos_token_id=None, eos_token_id=None, pad_token_id=63,
                           begin_suppress_tokens=None, suppress_tokens=None, tie_word_embeddings=True)
    model = WhisperForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
        features = torch.randn((1, 8, 32), generator=generator)
        encoder = model.model.encoder(features).last_hidden_state
        ids = list(PROMPT)
        logits = model(encoder_outputs=(encoder,), decoder_input_ids=torch.tensor([ids])).logits[0]
        for _ in range(NEW_TOKENS):
            step = model(encoder_outputs=(encoder,), decoder_input_ids=torch.tensor([ids])).logits[0, -1]
            ids.append(int(step.argmax()))

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    model.save_pretrained(OUT, safe_serialization=True)
    generation = os.path.join(OUT, "generation_config.json")
    if os.path.exists(generation):
        os.remove(generation)

    def rounded(t):
        return [[round(float(x), 6) for x in row] for row in t]

    expected = {
        "input_features": rounded(features[0]),
        "encoder_output": rounded(encoder[0]),
        "prompt_ids": PROMPT,
        "logits": rounded(logits),
        "greedy_ids": ids[len(PROMPT):],
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()

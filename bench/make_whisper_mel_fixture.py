#!/usr/bin/env python3
"""transformers' Whisper log-mel features for a few deterministic signals: the reference our
front end (crates/engine/src/whisper/mel.rs) must match to 1e-4 (issue 19).

    pip install transformers numpy
    python3 bench/make_whisper_mel_fixture.py

Writes crates/engine/tests/fixtures/whisper_mel.json:
  {"cases": [{"name", "n_mels", "samples": [...], "frames", "mel": [n_mels][frames]}]}
Signals (16 kHz): a chirp with noise (1.05 s), a 440 Hz tone after silence (0.4 s, odd length),
and a very short burst (300 samples, shorter than one FFT, so the reflect padding wraps).
`mel` is WhisperFeatureExtractor(feature_size=n_mels)'s `_np_extract_fbank_features` on the raw
signal: no padding to 30 s, so the frame count is len // 160. Deterministic.
"""
import json
import os

import numpy as np
from transformers import WhisperFeatureExtractor

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "engine", "tests", "fixtures",
                   "whisper_mel.json")


def signals():
    rng = np.random.default_rng(7)
    t = np.arange(16800) / 16000
    chirp = 0.4 * np.sin(2 * np.pi * (200 + 1800 * t) * t) + 0.05 * rng.standard_normal(t.size)
    tone = np.concatenate([np.zeros(2000), 0.3 * np.sin(2 * np.pi * 440 * np.arange(4417) / 16000)])
    burst = 0.5 * rng.standard_normal(300)
    return [("chirp", 80, chirp), ("tone", 128, tone), ("burst", 80, burst)]


def main():
    cases = []
    for name, n_mels, x in signals():
        x = x.astype(np.float32)
        fe = WhisperFeatureExtractor(feature_size=n_mels)
        mel = fe._np_extract_fbank_features(x[None, :], "cpu")[0]
        assert mel.shape == (n_mels, x.size // 160), mel.shape
        cases.append({"name": name, "n_mels": n_mels, "samples": [round(float(v), 8) for v in x],
                      "frames": int(mel.shape[1]),
                      "mel": [[round(float(v), 6) for v in row] for row in mel]})
    with open(OUT, "w") as f:
        json.dump({"cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

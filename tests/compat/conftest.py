"""Fixtures: the real xinference-local binary with examples/auth.json, and the test models."""
import json
import os
import subprocess
import tempfile

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="session")
def models():
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch-test-models.sh")],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="session")
def server():
    binary = os.environ["XINFERENCE_LOCAL"]
    home = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [binary, "-p", "0", "--home", home, "--auth-config", os.path.join(ROOT, "examples", "auth.json")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("xinference-local listening on "), line
    yield line.split(" on ", 1)[1]
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def cross_encoder(models, tmp_path_factory):
    """all-MiniLM-L6-v2's BERT body plus the seeded classifier head of the engine's rerank
    fixture (no real cross-encoder ships in a package registry)."""
    minilm = os.path.join(models, "all-MiniLM-L6-v2")
    with open(os.path.join(ROOT, "crates", "engine", "tests", "fixtures", "minilm_cross_encoder.json")) as f:
        fixture = json.load(f)
    out = tmp_path_factory.mktemp("cross-encoder")
    tensors = {f"bert.{k}": v for k, v in load_file(os.path.join(minilm, "model.safetensors")).items()}
    tensors["classifier.weight"] = np.array([fixture["classifier_weight"]], dtype=np.float32)
    tensors["classifier.bias"] = np.array([fixture["classifier_bias"]], dtype=np.float32)
    save_file(tensors, str(out / "model.safetensors"))
    with open(os.path.join(minilm, "config.json")) as f:
        config = json.load(f)
    config.update({"architectures": ["BertForSequenceClassification"], "num_labels": 1})
    (out / "config.json").write_text(json.dumps(config))
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        (out / name).write_bytes(open(os.path.join(minilm, name), "rb").read())
    return str(out), fixture

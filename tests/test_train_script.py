"""The toy-model training script runs end to end on a tiny configuration and writes every file."""

import json
import subprocess
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_train_script_tiny(tmp_path):
    out = tmp_path / "toy"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "train_toy_model.py"),
            "--out",
            str(out),
            "--tiny",
            "--max-steps",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("world.json", "counterfact.json", "corpus.txt", "model/model.safetensors", "model/tokenizer.json"):
        assert (out / name).exists(), name
    rec = json.loads((out / "model" / "recall.json").read_text())
    assert rec["steps"] == 3 and 0.0 <= rec["train_recall"] <= 1.0
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.n_layer == 2 and len(tok) == model.config.vocab_size

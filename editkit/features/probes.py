"""Linear probes (Alain & Bengio 2016; Belinkov 2022): is a label linearly decodable from a layer's hidden
state? Per layer, a standardised logistic regression scored by stratified k-fold cross-validation, next
to the majority-class baseline and a control task with shuffled labels (Hewitt & Liang 2019): a probe
that is no better than its control measures the probe's capacity, not the model's knowledge."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.io import atomic_directory
from editkit.requests import fill_prompt
from editkit.tokens import batch_encode, subject_span
from editkit.toy import is_toy

POSITIONS = ("last_subject", "last")
RESULTS, COEFS, PLOT = "probe.json", "probes.safetensors", "accuracy.png"


@dataclass
class ProbeResult:
    """Cross-validated accuracy per layer (mean and std over folds), its control, and the baseline."""

    label: str
    position: str
    layers: list[int]
    accuracy: list[float]
    accuracy_std: list[float]
    control: list[float]
    control_std: list[float]
    majority: float
    n: int
    classes: list[str]
    coef: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    intercept: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("coef", "intercept")}

    def best_layer(self) -> int:
        return self.layers[int(np.argmax(self.accuracy))]

    def save(self, path: str | Path) -> Path:
        """probe.json, probes.safetensors (coefficients in the standardised space, per layer), accuracy.png."""
        from safetensors.numpy import save_file

        tensors = {f"layer.{layer}.coef": self.coef[layer].astype(np.float32) for layer in self.coef}
        tensors.update({f"layer.{layer}.intercept": self.intercept[layer].astype(np.float32) for layer in self.coef})
        with atomic_directory(path, replace_if=RESULTS) as tmp:
            (tmp / RESULTS).write_text(json.dumps(self.to_json(), indent=2) + "\n")
            save_file(tensors, str(tmp / COEFS))
            self.plot(tmp / PLOT)
        return Path(path)

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.errorbar(self.layers, self.accuracy, yerr=self.accuracy_std, marker="o", label="probe")
        ax.errorbar(self.layers, self.control, yerr=self.control_std, marker="s", label="shuffled-label control")
        ax.axhline(self.majority, color="grey", ls="--", label="majority class")
        ax.set(xlabel="layer", ylabel="accuracy", title=f"probe for {self.label!r} at {self.position}", ylim=(0, 1.02))
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def load_probe_records(spec: str, label: str, relation: str | None = None) -> list[dict]:
    """Labelled prompts: `toy` (one record per fact of the toy world: prompt, subject, object, relation_id;
    `relation` picks one relation) or a JSON / JSONL file of records with `prompt` and the `label` field."""
    if is_toy(spec):
        from editkit.toy.sources import probe_records

        records = probe_records(relation)
    else:
        from editkit.requests import load_records

        records = load_records(spec)
    missing = [i for i, r in enumerate(records) if label not in r or "prompt" not in r]
    if missing:
        raise EditkitError(f"record {missing[0]} of {spec} has no 'prompt' or no label field {label!r}; pass --label")
    return records


def _text(record: dict) -> str:
    p = record["prompt"]
    return fill_prompt(p, record["subject"]) if "{}" in p else p


@torch.no_grad()
def hidden_states(model, tokenizer, adapter, records: list[dict], position: str, layers: list[int], batch_size=64):
    """Block outputs `[len(layers), n, hidden]` at each record's last subject token or last token."""
    if position not in POSITIONS:
        raise EditkitError(f"unknown position {position!r}; use one of {', '.join(POSITIONS)}")
    device = next(model.parameters()).device
    names = adapter.names("block", layers)
    out = []
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        texts = [_text(r) for r in chunk]
        enc = batch_encode(tokenizer, texts)
        if position == "last":
            idx = enc["lengths"] - 1
        else:
            if any("subject" not in r for r in chunk):
                raise EditkitError("--position last_subject needs a 'subject' field in every record")
            idx = torch.tensor(
                [subject_span(tokenizer, t, r["subject"])[1] - 1 for t, r in zip(texts, chunk, strict=True)]
            )
        with Trace(model, names, stop=True) as tr:
            model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device))
        at = torch.arange(len(chunk))
        out.append(torch.stack([tr[n].output[at, idx.to(device)].float().cpu() for n in names]))
    return torch.cat(out, dim=1)


def _cv(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_score(_pipeline(seed), x, y, cv=cv)


def _pipeline(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


def fit_probes(
    states: torch.Tensor, labels: list, layers: list[int], label: str, position: str, folds: int = 5, seed: int = 0
) -> ProbeResult:
    """Cross-validate a probe per layer on `states [layers, n, d]`, with its shuffled-label control."""
    y = np.asarray([str(v) for v in labels])
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise EditkitError(f"label {label!r} has a single value {classes[0]!r}; a probe needs at least two classes")
    if counts.min() < folds:
        rare = classes[counts.argmin()]
        raise EditkitError(f"class {rare!r} has {counts.min()} examples, fewer than --folds {folds}; lower --folds")
    control = np.random.default_rng(seed).permutation(y)
    result = ProbeResult(
        label, position, layers, [], [], [], [], float(counts.max() / len(y)), len(y), classes.tolist()
    )
    for layer, x in zip(layers, states.numpy(), strict=True):
        acc, ctl = _cv(x, y, folds, seed), _cv(x, control, folds, seed)
        result.accuracy.append(float(acc.mean()))
        result.accuracy_std.append(float(acc.std()))
        result.control.append(float(ctl.mean()))
        result.control_std.append(float(ctl.std()))
        clf = _pipeline(seed).fit(x, y)[-1]
        result.coef[layer], result.intercept[layer] = clf.coef_, clf.intercept_
    return result


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """`all` or comma-separated layer indices."""
    if spec == "all":
        return list(range(n_layers))
    try:
        layers = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise EditkitError(f"--layers {spec!r} is not 'all' or a comma-separated list of integers") from None
    bad = [la for la in layers if not 0 <= la < n_layers]
    if bad or not layers:
        raise EditkitError(f"--layers {spec!r}: layers must be in 0..{n_layers - 1}")
    return layers


def run_probe(
    model,
    tokenizer,
    adapter,
    dataset: str,
    label: str,
    position="last_subject",
    layers="all",
    relation=None,
    folds=5,
    seed=0,
) -> ProbeResult:
    """Collect hidden states for the labelled prompts of `dataset` and probe every requested layer."""
    records = load_probe_records(dataset, label, relation)
    layer_ids = parse_layers(layers, adapter.n_layers)
    states = hidden_states(model, tokenizer, adapter, records, position, layer_ids)
    return fit_probes(states, [r[label] for r in records], layer_ids, label, position, folds, seed)

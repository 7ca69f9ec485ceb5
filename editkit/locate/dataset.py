"""Average indirect effect over a dataset (ROME Figure 2): trace every fact the model gets right, store
the per-case arrays in one HDF5 file written case by case (an interrupted run resumes where it stopped),
then average the indirect effect per token bucket and layer with 95% confidence intervals."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from editkit.errors import EditkitError
from editkit.evaluate.datasets import KnownRecord, parse_record
from editkit.io import read_json
from editkit.locate.tracing import KINDS, default_window, trace
from editkit.toy import is_toy

BUCKETS = (
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)


@dataclass(frozen=True)
class TraceCase:
    """One fact to trace: the prompt (ends right before the answer), its subject and the true answer."""

    case_id: str
    prompt: str
    subject: str
    answer: str


def trace_cases(records: Iterable[dict], source: str = "records") -> list[TraceCase]:
    """Cases from known_1000 records (their filled-in `prompt` and `attribute`) or CounterFact records (the
    rewrite prompt with its subject, `target_true`), each read by `evaluate.datasets.parse_records`."""
    cases = []
    for i, raw in enumerate(records):
        kind = "counterfact" if isinstance(raw, dict) and "requested_rewrite" in raw else "known_1000"
        try:
            record = parse_record(raw, kind, i, source)
        except EditkitError as e:
            why = str(e).removeprefix(f"{source}: record {i}: ").removesuffix("; fix the record or drop it")
            raise EditkitError(
                f"{source}: record {i} is not a known_1000 or CounterFact record ({why}); known_1000 needs "
                "known_id, prompt, template, subject, attribute; CounterFact needs requested_rewrite"
            ) from None
        if isinstance(record, KnownRecord):
            cases.append(TraceCase(str(record.case_id), record.prompt, record.subject, record.attribute))
        else:
            request = record.request()
            cases.append(TraceCase(str(record.case_id), request.text, request.subject, record.target_true))
    return cases


def load_trace_cases(dataset: str, limit: int | None = None) -> list[TraceCase]:
    """`toy` (one training-template prompt per toy fact), or a known_1000 / CounterFact JSON file."""
    if is_toy(dataset):
        from editkit.toy.sources import trace_cases as toy_cases

        cases = toy_cases()
    else:
        path = Path(dataset)
        if not path.is_file():
            raise EditkitError(f"dataset {dataset} not found; pass 'toy' or a known_1000 / CounterFact JSON file")
        records = read_json(path, "dataset", "pass a JSON list of records")
        cases = trace_cases(records, source=dataset)
    return cases[:limit] if limit else cases


def _settings(**kw) -> str:
    return json.dumps(kw, sort_keys=True)


def trace_dataset(
    model,
    tokenizer,
    adapter,
    cases: Sequence[TraceCase],
    path: str | Path,
    kinds: Sequence[str] = KINDS,
    window: int | None = None,
    noise: str | float = "s3",
    samples: int = 10,
    seed: int = 1,
    noise_subjects: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    shard: str = "0/1",
) -> dict[str, int]:
    """Trace `cases` into the HDF5 file `path`, one group per case, resuming a previous run of the same
    settings. Facts the model gets wrong (top-1 is not the answer's first token) are recorded and skipped,
    as in the paper. The `s3` noise scale is measured on `noise_subjects` (default: the subjects of all
    `cases`, as ROME measures it on its known facts). Shard i/n traces every n-th case from the i-th; a
    case's group is named by its index among all `cases`, so shards merge (`average_indirect_effect`).
    Returns counts: {"traced", "skipped_wrong", "resumed"}."""
    import h5py

    from editkit.evaluate.runner import parse_shard
    from editkit.tokens import target_ids

    mine, every = parse_shard(shard)
    window = default_window(adapter.n_layers) if window is None else window
    settings = _settings(kinds=list(kinds), window=window, noise=str(noise), samples=samples, seed=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"traced": 0, "skipped_wrong": 0, "resumed": 0}
    try:
        f = h5py.File(path, "a")
    except OSError as e:
        raise EditkitError(f"{path} is not a readable HDF5 file ({e}); delete it or pass another --out") from None
    with f:
        if f.attrs.get("settings", settings) != settings:
            raise EditkitError(f"{path} holds a run with other settings ({f.attrs['settings']}); pass another --out")
        f.attrs["settings"] = settings
        cases_group = f.require_group("cases")
        for name in [n for n, g in cases_group.items() if not g.attrs.get("done", False)]:
            del cases_group[name]  # torn by an interruption: redo
        for i, case in enumerate(cases):
            key = f"{i:06d}"
            if i % every != mine:
                continue
            if key in cases_group:
                counts["resumed"] += 1
            else:
                _trace_one(
                    model,
                    tokenizer,
                    adapter,
                    case,
                    cases_group.create_group(key),
                    target_ids,
                    counts,
                    dict(
                        kinds=kinds,
                        window=window,
                        noise=noise,
                        samples=samples,
                        seed=seed,
                        noise_subjects=noise_subjects or [c.subject for c in cases],
                    ),
                )
                f.flush()
            if progress:
                progress(i + 1, len(cases))
    return counts


def _trace_one(model, tokenizer, adapter, case: TraceCase, g, target_ids, counts: dict, kw: dict) -> None:
    from editkit.models import next_token_probs

    top1 = int(next_token_probs(model, tokenizer, [case.prompt])[0].argmax())
    correct = top1 == target_ids(tokenizer, case.prompt, case.answer)[0]
    g.attrs.update(case_id=case.case_id, prompt=case.prompt, subject=case.subject, answer=case.answer, correct=correct)
    if correct:
        r = trace(model, tokenizer, adapter, case.prompt, case.subject, **kw)
        g.attrs.update(
            subject_range=list(r.subject_range),
            tokens=json.dumps(r.tokens),
            clean_score=r.clean_score,
            corrupted_score=r.corrupted_score,
            noise=r.noise,
        )
        for kind, scores in r.scores.items():
            g.create_dataset(kind, data=scores)
    counts["traced" if correct else "skipped_wrong"] += 1
    g.attrs["done"] = True


def bucket_rows(scores: np.ndarray, subject_range: Sequence[int]) -> np.ndarray:
    """`[6, layers]`: the scores averaged over each token bucket (NaN where a bucket is empty)."""
    b, e = subject_range
    T = scores.shape[0]
    spans = [(b, b + 1), (b + 1, e - 1), (e - 1, e), (e, min(e + 1, T - 1)), (e + 1, T - 1), (T - 1, T)]
    out = np.full((len(spans), scores.shape[1]), np.nan)
    for i, (lo, hi) in enumerate(spans):
        if hi > lo:
            out[i] = scores[lo:hi].mean(0)
    return out


@dataclass
class AIE:
    """Average indirect effect per kind: `mean[kind]` and `ci95[kind]` are `[6 buckets, layers]`."""

    n: int
    kinds: list[str]
    mean: dict[str, np.ndarray]
    ci95: dict[str, np.ndarray]
    clean: float
    corrupted: float

    def peaks(self) -> dict[str, dict[str, int]]:
        """Peak layer of the indirect effect at the last subject token and at the last token, per kind."""
        return {
            k: {
                "last subject token": int(np.nanargmax(self.mean[k][2])),
                "last token": int(np.nanargmax(self.mean[k][5])),
            }
            for k in self.kinds
        }

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "buckets": list(BUCKETS),
            "clean_score": self.clean,
            "corrupted_score": self.corrupted,
            "peaks": self.peaks(),
            "aie": {k: self.mean[k].tolist() for k in self.kinds},
            "ci95": {k: self.ci95[k].tolist() for k in self.kinds},
        }


def _ci95(x: np.ndarray) -> np.ndarray:
    """Half-width of the normal 95% interval of the mean over axis 0, ignoring NaNs (NaN below 2 values)."""
    n = np.sum(~np.isnan(x), axis=0)
    dev = np.where(np.isnan(x), 0.0, x - np.nanmean(x, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 1, 1.96 * np.sqrt((dev**2).sum(0) / (n - 1)) / np.sqrt(n), np.nan)


def average_indirect_effect(paths: str | Path | Sequence[str | Path]) -> AIE:
    """Indirect effect (restored − corrupted probability) averaged over the traced cases, per bucket and layer.
    Several files (shards of one run: same settings) merge; a case traced in two of them counts once."""
    import h5py

    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    cases, settings = {}, {}
    for path in paths:
        with h5py.File(path, "r") as f:
            settings[str(path)] = f.attrs.get("settings")
            for key, g in f["cases"].items():
                if g.attrs.get("done", False) and g.attrs.get("correct", False) and key not in cases:
                    cases[key] = (
                        {k: g[k][()] for k in KINDS if k in g},
                        {a: g.attrs[a] for a in ("subject_range", "clean_score", "corrupted_score")},
                    )
    if len(set(settings.values())) > 1:
        raise EditkitError(f"the trace files hold runs with different settings ({settings}); average one run's shards")
    groups = [cases[k] for k in sorted(cases)]
    if not groups:
        raise EditkitError(f"{', '.join(map(str, paths))} hold no traced case the model gets right; trace more cases")
    kinds = [k for k in KINDS if k in groups[0][0]]
    per = {
        k: np.stack([bucket_rows(s[k] - a["corrupted_score"], a["subject_range"]) for s, a in groups]) for k in kinds
    }
    clean = float(np.mean([a["clean_score"] for _, a in groups]))
    corrupted = float(np.mean([a["corrupted_score"] for _, a in groups]))
    mean = {k: np.nanmean(v, axis=0) for k, v in per.items()}
    ci95 = {k: _ci95(v) for k, v in per.items()}
    return AIE(len(groups), kinds, mean, ci95, clean, corrupted)


def plot_aie(aie: AIE, path: str | Path) -> Path:
    """Line plots of the AIE over layers, one panel per kind and one line per token bucket, with 95% CIs."""
    from editkit.locate.plots import CMAPS, pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(aie.kinds), figsize=(4 * len(aie.kinds), 3), squeeze=False)
    for ax, kind in zip(axes[0], aie.kinds, strict=True):
        cmap = plt.get_cmap(CMAPS[kind])
        layers = np.arange(aie.mean[kind].shape[1])
        for i, bucket in enumerate(BUCKETS):
            m, c = aie.mean[kind][i], aie.ci95[kind][i]
            if np.all(np.isnan(m)):
                continue
            colour = cmap(0.35 + 0.65 * i / (len(BUCKETS) - 1))
            ax.plot(layers, m, label=bucket, color=colour, lw=1.5)
            ax.fill_between(layers, m - c, m + c, color=colour, alpha=0.2)
        ax.set_title(f"AIE of restoring {'hidden states' if kind == 'hidden' else kind} (n={aie.n})", fontsize=9)
        ax.set_xlabel("layer" if kind == "hidden" else "centre of restored window", fontsize=8)
        ax.set_ylabel("average indirect effect on p(answer)", fontsize=8)
        ax.legend(fontsize=6)
    return save_figure(fig, path)

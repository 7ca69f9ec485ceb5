"""Evaluation runs: edit (single, batch or sequential), score, append one JSON line per case, resume after a
kill, split into shards. A run directory holds config.json, cases.jsonl and summary.json."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from editkit.errors import EditkitError
from editkit.evaluate import suites
from editkit.evaluate.datasets import Record
from editkit.evaluate.metrics import summarize
from editkit.io import atomic_write_text
from editkit.requests import EditRequest

MODES = ("single", "batch", "sequential")


class Applied(Protocol):
    """An applied edit that can be undone exactly."""

    def revert(self, model) -> None: ...


# An editor applies the edits for a list of requests to the model in place and returns the undo handle.
Editor = Callable[[object, object, list[EditRequest]], Applied]


class NoEdit:
    """`--method none`: nothing applied, nothing to revert."""

    def revert(self, model) -> None:
        return None


def no_editor(model, tokenizer, requests: list[EditRequest]) -> NoEdit:
    return NoEdit()


@dataclass
class EvalConfig:
    """Everything that determines a run's numbers (written to config.json and checked on --resume)."""

    model: str
    dataset: str
    method: str = "none"
    data: str | None = None
    limit: int | None = None
    offset: int = 0
    sample: int | None = None
    seed: int = 0
    distinct_subjects: bool = False
    known_only: bool = False
    mode: str = "single"
    batch_size: int = 1
    hparams: dict = field(default_factory=dict)
    shard: str = "0/1"
    generation: bool = True
    gen_length: int = 100
    score_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EditkitError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.batch_size < 1:
            raise EditkitError(f"batch size must be >= 1, got {self.batch_size}")
        if self.mode == "single" and self.batch_size != 1:
            raise EditkitError("--batch-size needs --mode batch or sequential; single mode edits one record at a time")
        parse_shard(self.shard)

    @property
    def options(self) -> suites.ScoreOptions:
        return suites.ScoreOptions(self.score_batch_size, self.generation, self.gen_length, self.seed)


def parse_shard(spec: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise EditkitError(f"bad shard {spec!r}; write it as i/n with 0 <= i < n, e.g. --shard 0/4")
    return i, n


def shard_records(records: Sequence[Record], spec: str) -> list[Record]:
    """Shard i of n: every n-th record from the i-th (round robin over the loaded order)."""
    i, n = parse_shard(spec)
    return list(records[i::n])


def model_fingerprint(model) -> str:
    """sha256 over every parameter and buffer's name, dtype, shape and bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    for name, t in sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_config(config: EvalConfig, model, data_file: Path | None) -> dict:
    """config.json's content: the config plus editkit/library versions, the model and data fingerprints."""
    import transformers

    import editkit

    return {
        **asdict(config),
        "editkit_version": editkit.__version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "model_fingerprint": model_fingerprint(model),
        "data_sha256": file_sha256(data_file) if data_file else None,
    }


# --- the case log -------------------------------------------------------------------------------------


def read_cases(path: Path, repair: bool = False) -> list[dict]:
    """The complete lines of `cases.jsonl`. A torn last line (no newline: the writer was killed) is cut off
    when `repair`, else ignored; a damaged complete line is an error."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    cases = []
    for n, line in enumerate(data[:end].splitlines(), 1):
        try:
            cases.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise EditkitError(f"{path} line {n} is damaged ({e}); delete that line and rerun with --resume") from e
    return cases


def append_case(path: Path, case: dict) -> None:
    """Append one line, flushed and fsynced, so a kill loses at most the line being written."""
    with open(path, "ab") as f:
        f.write((json.dumps(case, ensure_ascii=False) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _prepare_dir(out: Path, config: dict, resume: bool) -> None:
    cfg_file = out / "config.json"
    if cfg_file.exists():
        if not resume:
            raise EditkitError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        old = json.loads(cfg_file.read_text())
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if diff:
            k = diff[0]
            raise EditkitError(
                f"cannot resume {out}: {k} was {old.get(k)!r}, now {config.get(k)!r}; rerun with the same "
                "settings or choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_file, json.dumps(config, indent=2) + "\n")


def _chunks(records: list[Record], config: EvalConfig) -> list[list[Record]]:
    k = 1 if config.mode == "single" else config.batch_size
    return [records[i : i + k] for i in range(0, len(records), k)]


def write_summary(out: Path, cases: list[dict], suite: str) -> dict:
    """summary.json from the case lines, in case_id order."""
    summary = summarize([c["metrics"] for c in sorted(cases, key=lambda c: c["case_id"])], suite)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def run_eval(
    model,
    tokenizer,
    records: Sequence[Record],
    config: EvalConfig,
    out: str | Path,
    editor: Editor = no_editor,
    resume: bool = False,
    refs=None,
    data_file: Path | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate `config.shard` of `records` into run directory `out`; returns the summary.

    single: edit each record alone, score, revert. batch: edit `batch_size` records at once, score each,
    revert. sequential: edits accumulate chunk by chunk; each chunk is scored right after it is applied,
    with every earlier edit still in place (on --resume, finished chunks are re-applied without scoring);
    there, "before the edit" (EasyEdit's locality) means before the chunk's own edit.
    """
    out = Path(out)
    suite = suites.suite_of(config.dataset)
    mine = shard_records(records, config.shard)
    _prepare_dir(out, run_config(config, model, data_file), resume)
    log = out / "cases.jsonl"
    cases = read_cases(log, repair=True)
    done = {c["case_id"] for c in cases}
    opts = config.options
    applied: list[Applied] = []
    with _Progress(len(mine), suites.HEADLINE[suite], enabled=progress) as bar:
        bar.add(cases)
        try:
            for chunk in _chunks(mine, config):
                todo = [r for r in chunk if r.case_id not in done]
                if not todo and config.mode != "sequential":
                    continue
                pres = [suites.pre_edit(model, tokenizer, r, opts) for r in chunk]
                applied.append(editor(model, tokenizer, [r.request() for r in chunk]))
                # The whole chunk is scored even when resuming part of it: the same batches, the same numbers.
                results = suites.evaluate_many(model, tokenizer, chunk, opts, pres, refs)
                for r, (metrics, preds) in zip(chunk, results, strict=True):
                    if r.case_id in done:
                        continue
                    case = {"case_id": r.case_id, "subject": r.subject, "metrics": metrics, "predictions": preds}
                    append_case(log, case)
                    cases.append(case)
                    bar.add([case])
                if config.mode != "sequential":
                    applied.pop().revert(model)
        finally:  # leave the model unedited, also when interrupted
            for edit in reversed(list({id(e): e for e in applied}.values())):  # an accumulated result once
                edit.revert(model)
    return write_summary(out, cases, suite)


class _Progress:
    """A rich progress bar whose description shows the running means of the headline metrics."""

    def __init__(self, total: int, headline: Sequence[str], enabled: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.headline, self.enabled = headline, enabled
        self.bar = Progress(
            TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.description}"), disable=not enabled,
        )  # fmt: skip
        self.task = self.bar.add_task("", total=total)
        self.sums: dict[str, float] = dict.fromkeys(headline, 0.0)
        self.n = 0

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def add(self, cases: list[dict]) -> None:
        """Count finished cases into the bar and the running means."""
        for c in cases:
            self.n += 1
            for k in self.sums:
                self.sums[k] += c["metrics"].get(k, 0.0)
        means = "  ".join(f"{k} {s / self.n:.1%}" for k, s in self.sums.items()) if self.n else ""
        self.bar.update(self.task, completed=self.n, description=means)


def make_editor(
    method: str, bundle, hparams_file: str | None, model_name: str, sequential: bool, overrides: Sequence[str] = ()
):
    """(editor, resolved hyper-parameters) for `method` on the loaded `bundle` (`overrides`: 'key=value'
    strings on top of the file); `none` edits nothing.

    In sequential mode each call builds on the previous call's EditResult (AlphaEdit protects the keys of
    earlier edits through it), so the run reverts that one accumulated result at the end."""
    if method == "none":
        if hparams_file is not None:
            raise EditkitError("--hparams needs an edit method; drop it or pass --method rome (or memit, ...)")
        return no_editor, {}
    from editkit.edit import METHODS, Stats, check_layers, load_hparams, needs_stats, restored_on_error
    from editkit.edit.common import check_requests
    from editkit.edit.hparams import to_dict

    if method not in METHODS:
        raise EditkitError(f"unknown method {method!r}; use none or one of {', '.join(METHODS)}")
    model, tok, adapter = bundle
    hp = load_hparams(method, model_name, hparams_file, overrides)
    check_layers(adapter, hp.layers)
    stats = Stats(model, tok, adapter, hp.mom2_corpus, hp.mom2_n_tokens) if needs_stats(method, hp) else None
    history = []

    def editor(model, tokenizer, requests: list[EditRequest]):
        check_requests(tokenizer, requests)
        with restored_on_error(model, adapter, hp.layers):
            result = METHODS[method](
                model, tokenizer, adapter, requests, hp, stats, history=history[-1] if history else None
            )
        if sequential:
            history.append(result)
        return result

    return editor, to_dict(hp)


def run_named(
    config: EvalConfig,
    out: str | Path,
    resume: bool = False,
    device: str = "cpu",
    hparams_file: str | None = None,
    snippets: str | None = None,
    tfidf: str | None = None,
    progress: bool = True,
) -> dict:
    """`editkit eval`: load the model, the dataset, the editor and the reference texts, then `run_eval`."""
    from editkit.evaluate.datasets import dataset_path, load_dataset
    from editkit.evaluate.known import prefers_true
    from editkit.models import load_model

    data_file = dataset_path(config.dataset, config.data)
    bundle = load_model(config.model, device=device)
    keep = functools.partial(prefers_true, bundle.model, bundle.tokenizer) if config.known_only else None
    records = load_dataset(
        config.dataset, data_file, config.limit, config.offset, config.sample, config.seed, config.distinct_subjects,
        keep,
    )  # fmt: skip
    editor, config.hparams = make_editor(config.method, bundle, hparams_file, config.model, config.mode == "sequential")
    model, tok, _ = bundle
    refs = _references(config, records, snippets, tfidf)
    return run_eval(model, tok, records, config, out, editor, resume, refs, data_file, progress)


def _references(config: EvalConfig, records, snippets: str | None, tfidf: str | None):
    """RS's reference texts: ROME's files when given, the toy corpus for the toy world, else none (no RS)."""
    from editkit.evaluate import references

    if (snippets is None) != (tfidf is None):
        raise EditkitError("--snippets and --tfidf go together (ROME's attribute_snippets.json and idf/vocab files)")
    if not config.generation:
        return None
    if snippets is not None:
        return references.rome_references(snippets, tfidf)
    return references.toy_references(records) if config.dataset == "toy" else None


def compare_methods(bundle, records, methods: Sequence[str], out_root: str | Path, model_name: str = "toy", **kw):
    """Run `methods` (single mode, shipped hyper-parameters) on `records` into `out_root/<method>`; returns the
    run directories, ready for `tables.merge_runs` (resumes runs already there)."""
    model, tok, _ = bundle
    dirs = []
    for method in methods:
        editor, hp = make_editor(method, bundle, None, model_name, sequential=False)
        config = EvalConfig(model=model_name, dataset="toy", method=method, hparams=hp, **kw)
        out = Path(out_root) / method
        run_eval(model, tok, records, config, out, editor, resume=(out / "config.json").exists(), progress=False)
        dirs.append(out)
    return dirs

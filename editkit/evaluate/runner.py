"""Evaluation runs: edit (single, batch or sequential), score under the teacher-forced and/or generation
protocol, measure what the edits cost elsewhere (capability), append one JSON line per case, resume after a
kill, split into shards. A run directory holds config.json, cases.jsonl, summary.json, the unedited model's
capability (baseline.json) and, for sequential runs with checkpoints, one capability point per edit step
(steps.jsonl)."""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Protocol

import torch

from editkit.errors import EditkitError
from editkit.evaluate import suites
from editkit.evaluate.capability import Probe, collapse
from editkit.evaluate.datasets import Record
from editkit.evaluate.generation import decoding
from editkit.evaluate.metrics import mean_ci, summarize
from editkit.io import atomic_write_text, file_sha256, json_safe, read_json
from editkit.progress import progress_bar
from editkit.requests import EditRequest
from editkit.tensors import fingerprint

MODES = ("single", "batch", "sequential")
PROTOCOLS = ("teacher-forced", "generation", "both")


class Applied(Protocol):
    """An applied edit that can be undone exactly; one with a `context` (in-context editing) has every
    prompt scored behind that text."""

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
    protocol: str = "both"
    max_new_tokens: int = 20
    checkpoints: list[int] | None = None
    capability: bool = True
    capability_corpus: str | None = None
    known_facts: str | None = None
    capability_texts: int = 200
    capability_facts: int = 200
    capability_every: int = 1  # sequential mode: measure capability every this many edits (and at checkpoints)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EditkitError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.protocol not in PROTOCOLS:
            raise EditkitError(f"unknown protocol {self.protocol!r}; use one of {', '.join(PROTOCOLS)}")
        if self.max_new_tokens < 1:
            raise EditkitError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.checkpoints is not None:
            _check_checkpoints(self.checkpoints, self.mode, self.batch_size)
        if self.batch_size < 1:
            raise EditkitError(f"batch size must be >= 1, got {self.batch_size}")
        if self.capability_every < 1:
            raise EditkitError(f"--capability-every must be >= 1, got {self.capability_every}")
        if self.mode == "single" and self.batch_size != 1:
            raise EditkitError("--batch-size needs --mode batch or sequential; single mode edits one record at a time")
        parse_shard(self.shard)

    @property
    def options(self) -> suites.ScoreOptions:
        return suites.ScoreOptions(
            self.score_batch_size, self.generation, self.gen_length, self.seed, self.protocol, self.max_new_tokens
        )


def parse_checkpoints(spec: str) -> list[int]:
    """'10,50,100' -> [10, 50, 100]."""
    try:
        return [int(x) for x in spec.split(",")]
    except ValueError:
        raise EditkitError(f"bad checkpoints {spec!r}; write edit counts separated by commas, e.g. 10,50,100") from None


def _check_checkpoints(points: list[int], mode: str, batch_size: int) -> None:
    if mode != "sequential":
        raise EditkitError("--checkpoints needs --mode sequential (edits that accumulate)")
    if not points or points != sorted(set(points)) or points[0] < 1:
        raise EditkitError(f"checkpoints {points} must be increasing edit counts >= 1, e.g. 10,50,100")
    bad = [c for c in points if c % batch_size]
    if bad:
        raise EditkitError(f"checkpoint {bad[0]} is not a multiple of --batch-size {batch_size}; edits come in batches")


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
    return fingerprint(sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items()))[:16]


def run_config(config: EvalConfig, model, data_file: Path | None, probe: Probe | None = None) -> dict:
    """config.json's content: the config plus the decoding rules, the capability probe, editkit/library
    versions, the model and data fingerprints."""
    import transformers

    import editkit

    return {
        **asdict(config),
        "decoding": decoding(config.max_new_tokens) if config.options.generate else None,
        "capability_probe": probe.describe() if probe else None,
        "editkit_version": editkit.__version__,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),  # metrics move by ~1e-7 with it; --resume refuses a change
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
        f.write((json.dumps(json_safe(case), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _prepare_dir(out: Path, config: dict, resume: bool) -> None:
    cfg_file = out / "config.json"
    if cfg_file.exists():
        if not resume:
            raise EditkitError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        old = read_json(cfg_file, "run config", f"delete {out} to start the run again, or choose another --out")
        if not isinstance(old, dict):
            raise EditkitError(f"run config {cfg_file} is not a JSON object; delete {out} or choose another --out")
        defaults = {f.name: f.default for f in fields(EvalConfig) if f.default is not MISSING}
        diff = sorted(k for k in set(old) | set(config) if old.get(k, defaults.get(k)) != config.get(k))
        if "torch_threads" in diff and "torch_threads" in old:
            raise EditkitError(
                f"cannot resume {out}: it ran with {old.get('torch_threads')} torch threads, now "
                f"{config['torch_threads']} (metrics differ in the 7th digit between thread counts); pass "
                f"--threads {old.get('torch_threads')} (or EDITKIT_THREADS) as it was, or choose another --out"
            )
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


def _rows_of(cases: list[dict], key: str) -> list[dict]:
    return [c[key] for c in cases if key in c]


def summarize_run(cases: list[dict], config: dict, base: dict | None, steps: list[dict] | None = None) -> dict:
    """summary.json from the case lines (in case_id order): `metrics` (teacher-forced), `generation_metrics`,
    `capability`; a sequential run with checkpoints adds one such summary per checkpoint, the capability
    after every edit step (`curve`) and where the model collapsed."""
    suite = suites.suite_of(config["dataset"])
    cases = sorted(cases, key=lambda c: c["case_id"])
    if not cases:
        raise EditkitError("no cases to summarize; run the evaluation first (editkit eval ...)")
    head = {"protocol": config.get("protocol", "teacher-forced"), "decoding": config.get("decoding")}
    if config.get("checkpoints"):
        groups = {}
        for c in cases:
            groups.setdefault(c["checkpoint"], []).append(c)
        points = [{"edits": k, **_summary(groups[k], suite, base)} for k in sorted(groups)]
        curve = steps or []
        found = collapse(curve, base["perplexity"]) if base else None
        return {**points[-1], **head, "checkpoints": points, "curve": curve, "collapse": found}
    return {**_summary(cases, suite, base), **head}


def _summary(cases: list[dict], suite: str, base: dict | None) -> dict:
    out = {"n": len(cases)}
    for key in ("metrics", "generation_metrics"):
        rows = _rows_of(cases, key)
        if rows:
            out[key] = summarize(rows, suite)["metrics"]
    caps = _rows_of(cases, "capability")
    if caps and base:
        kept = [c["retention"] for c in caps if c["retention"] is not None]
        out["capability"] = {
            "perplexity_before": base["perplexity"],
            "perplexity_after": mean_ci([c["perplexity"] for c in caps], (0.0, math.inf)),
            "retention": mean_ci(kept) if kept else None,
            "known_facts": sum(base["known"]),
        }
    return out


def write_summary(out: Path, cases: list[dict], config: dict, base: dict | None, steps=None) -> dict:
    """Write and return summary.json (see `summarize_run`)."""
    summary = summarize_run(cases, config, base, steps)
    atomic_write_text(out / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    return summary


def read_baseline(out: Path) -> dict | None:
    """The unedited model's capability as a run recorded it (None if it measured none)."""
    path = Path(out) / "baseline.json"
    return json.loads(path.read_text()) if path.exists() else None


def _baseline(out: Path, probe: Probe | None, model, tok) -> dict | None:
    if probe is None:
        return None
    base = read_baseline(out)
    if base is None:
        base = probe.baseline(model, tok)
        atomic_write_text(out / "baseline.json", json.dumps(base) + "\n")
    return base


def _score(model, tok, records: list[Record], opts: suites.ScoreOptions, pres: list, refs, edit) -> list[dict]:
    """Each record's case fields under the run's protocols, on the model as it is now (behind the
    `edit`'s context, if it has one)."""
    opts = replace(opts, context=getattr(edit, "reader", None))
    parts: list[dict] = [{} for _ in records]
    if opts.teacher_forced:
        for p, (m, preds) in zip(parts, suites.evaluate_many(model, tok, records, opts, pres, refs), strict=True):
            p["metrics"], p["predictions"] = m, preds
    if opts.generate:
        for p, (m, texts) in zip(parts, suites.generate_many(model, tok, records, opts, pres), strict=True):
            p["generation_metrics"], p["generated"] = m, texts
    return parts


def _measure(probe: Probe | None, model, tok, base: dict | None, edit) -> dict | None:
    """Capability now, behind `edit`'s context if it has one (an in-context edit costs the model there)."""
    return None if probe is None else probe.measure(model, tok, base, getattr(edit, "reader", None))


def _unchanged(base: dict | None) -> dict | None:
    """The capability of a model nothing edited: the baseline's (every known fact kept)."""
    return (
        None if base is None else {"perplexity": base["perplexity"], "retention": 1.0 if any(base["known"]) else None}
    )


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
    probe: Probe | None = None,
) -> dict:
    """Evaluate `config.shard` of `records` into run directory `out`; returns the summary.

    single: edit each record alone, score, revert. batch: edit `batch_size` records at once, score each,
    revert. sequential: edits accumulate chunk by chunk; each chunk is scored right after it is applied,
    with every earlier edit still in place (on --resume, finished chunks are re-applied without scoring);
    there, "before the edit" (EasyEdit's locality) means before the chunk's own edit. Sequential with
    `checkpoints`: after the first c edits, for each checkpoint c, all c records are scored with every
    edit in place (the edits are never redone from scratch; only on --resume they are re-applied).
    `probe`: the capability measured after every edit step (perplexity, retention of untouched facts).
    """
    out = Path(out)
    mine = shard_records(records, config.shard)
    if not mine:
        raise EditkitError(
            f"no records were selected ({len(records)} records, shard {config.shard}"
            f"{f', --offset {config.offset}' if config.offset else ''}); nothing was run or written: "
            "check --offset, --limit and --shard"
        )
    cfg = run_config(config, model, data_file, probe)
    _prepare_dir(out, cfg, resume)
    base = _baseline(out, probe, model, tokenizer)
    if config.checkpoints:
        return _run_checkpoints(model, tokenizer, mine, config, cfg, out, editor, base, refs, progress, probe)
    log = out / "cases.jsonl"
    cases = read_cases(log, repair=True)
    done = {c["case_id"] for c in cases}
    opts = config.options
    applied: list[Applied] = []
    with _Progress(len(mine), suites.HEADLINE[suites.suite_of(config.dataset)], enabled=progress) as bar:
        bar.add(cases)
        try:
            for chunk in _chunks(mine, config):
                todo = [r for r in chunk if r.case_id not in done]
                if not todo and config.mode != "sequential":
                    continue
                pres = [suites.pre_edit(model, tokenizer, r, opts) for r in chunk]
                applied.append(editor(model, tokenizer, [r.request() for r in chunk]))
                # The whole chunk is scored even when resuming part of it: the same batches, the same numbers.
                parts = _score(model, tokenizer, chunk, opts, pres, refs, applied[-1])
                cap = (
                    _measure(probe, model, tokenizer, base, applied[-1])
                    if todo and editor is not no_editor
                    else _unchanged(base)
                )
                for r, part in zip(chunk, parts, strict=True):
                    if r.case_id in done:
                        continue
                    case = {"case_id": r.case_id, "subject": r.subject, **part}
                    if cap is not None:
                        case["capability"] = cap
                    append_case(log, case)
                    cases.append(case)
                    bar.add([case])
                if config.mode != "sequential":
                    applied.pop().revert(model)
        finally:  # leave the model unedited, also when interrupted
            _revert_all(applied, model)
    return write_summary(out, cases, cfg, base)


def _revert_all(applied: list[Applied], model) -> None:
    for edit in reversed(list({id(e): e for e in applied}.values())):  # an accumulated result once
        edit.revert(model)


def _run_checkpoints(model, tok, mine, config: EvalConfig, cfg: dict, out: Path, editor, base, refs, progress, probe):
    """Sequential editing with evaluations along the way (see `run_eval`); resumable: finished
    checkpoints and steps are kept, the edits before the missing ones re-applied."""
    points = config.checkpoints
    if points[-1] > len(mine):
        raise EditkitError(f"checkpoint {points[-1]} needs {points[-1]} records, but {len(mine)} are selected")
    log, steps_log = out / "cases.jsonl", out / "steps.jsonl"
    cases, steps = read_cases(log, repair=True), read_cases(steps_log, repair=True)
    done = {(c["checkpoint"], c["case_id"]) for c in cases}
    stepped = {s["edits"] for s in steps}
    opts = config.options
    mine = list(mine[: points[-1]])

    def measured(e: int) -> bool:  # capability is measured after edit count e
        return probe is not None and (e % config.capability_every == 0 or e in points)

    def missing(k: int) -> bool:  # work left at edit count k or later
        late = [c for c in points if c >= k]
        return any((c, r.case_id) not in done for c in late for r in mine[:c]) or any(
            measured(e) and e not in stepped for e in range(k, points[-1] + 1, config.batch_size)
        )

    applied: list[Applied] = []
    pres: dict[int, dict | None] = {}
    saves = callable(getattr(editor, "resume", None))  # a method's editor: its accumulated edit can be saved
    start = _load_resume(out, model, editor, mine, pres) if saves else 0
    if start:
        applied.append(editor.history[-1])
    edits = 0
    with _Progress(sum(points), suites.HEADLINE[suites.suite_of(config.dataset)], enabled=progress) as bar:
        bar.add(cases)
        try:
            for chunk in _chunks(mine, config):
                if not missing(edits + len(chunk)):
                    break
                if edits + len(chunk) <= start:  # in the saved edit, with every result up to it
                    edits += len(chunk)
                    continue
                pres.update({r.case_id: suites.pre_edit(model, tok, r, opts) for r in chunk})
                applied.append(editor(model, tok, [r.request() for r in chunk]))
                edits += len(chunk)
                if measured(edits) and edits not in stepped:
                    step = {"edits": edits, **_measure(probe, model, tok, base, applied[-1])}
                    append_case(steps_log, step)
                    steps.append(step)
                if edits in points and not all((edits, r.case_id) in done for r in mine[:edits]):
                    scored = mine[:edits]
                    parts = _score(model, tok, scored, opts, [pres[r.case_id] for r in scored], refs, applied[-1])
                    at = next((s for s in steps if s["edits"] == edits), None)
                    cap = {k: v for k, v in at.items() if k != "edits"} if at is not None else None
                    for r, part in zip(scored, parts, strict=True):
                        if (edits, r.case_id) in done:
                            continue
                        case = {"checkpoint": edits, "case_id": r.case_id, "subject": r.subject, **part}
                        if cap is not None:
                            case["capability"] = cap
                        append_case(log, case)
                        cases.append(case)
                        bar.add([case])
                if saves and (measured(edits) or edits in points):  # everything up to here is written
                    _save_resume(out, applied[-1], edits, pres)
        finally:
            _revert_all(applied, model)
    return write_summary(out, cases, cfg, base, sorted(steps, key=lambda s: s["edits"]))


#: A sequential run's latest accumulated edit (`edit/`, an EditResult directory) and the pre-edit measurements
#: of its records (`state.json`): --resume continues from it instead of re-editing from the start.
RESUME = "resume"


def _save_resume(out: Path, result, edits: int, pres: dict) -> None:
    """Replace the run's resume point with the edit after `edits` edits (atomically)."""
    from editkit.io import atomic_directory

    with atomic_directory(out / RESUME, replace_if="state.json") as tmp:
        result.write_into(tmp / "edit")
        state = {"edits": edits, "pres": [[k, v] for k, v in pres.items()]}
        (tmp / "state.json").write_text(json.dumps(state) + "\n")


def _load_resume(out: Path, model, editor, mine: list[Record], pres: dict) -> int:
    """The edit count of the run's resume point, its edit written into `model` and handed to `editor`, its
    records' pre-edit measurements put in `pres`; 0 when there is none."""
    from editkit.edit import EditResult

    state_file = out / RESUME / "state.json"
    if not state_file.exists():
        return 0
    state = read_json(state_file, "resume point", f"delete {out / RESUME} to re-edit from the start")
    result = EditResult.load(out / RESUME / "edit")
    edits = state["edits"]
    if edits > len(mine) or result.requests != [r.request() for r in mine[:edits]]:
        raise EditkitError(
            f"{out / RESUME} holds an edit of other requests than this run's first {edits}; delete it to "
            "re-edit from the start"
        )
    editor.resume(model, result)
    pres.update({k: v for k, v in state["pres"]})
    return edits


class _Progress:
    """`progress_bar` of the cases, beside the running means of the headline metrics."""

    def __init__(self, total: int, headline: Sequence[str], enabled: bool):
        self.bar = progress_bar("eval", total, "cases", enabled)
        self.sums: dict[str, float] = dict.fromkeys(headline, 0.0)
        self.n = 0

    def __enter__(self):
        self.update = self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def add(self, cases: list[dict]) -> None:
        """Count finished cases into the bar and the running means."""
        for c in cases:
            self.n += 1
            for k in self.sums:
                v = (c.get("metrics") or c["generation_metrics"]).get(k)
                self.sums[k] += v if isinstance(v, int | float) and math.isfinite(v) else 0.0
        if cases:
            self.update(self.n, "  ".join(f"{k} {s / self.n:.1%}" for k, s in self.sums.items()))


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
    from editkit.edit import METHODS, Stats, check_layers, load_hparams
    from editkit.edit.hparams import to_dict

    if method not in METHODS:
        raise EditkitError(f"unknown method {method!r}; use none or one of {', '.join(METHODS)}")
    apply, (model, tok, adapter) = METHODS[method], bundle
    hp = load_hparams(method, model_name, hparams_file, overrides)
    check_layers(adapter, hp.layers)
    stats = Stats(model, tok, adapter, hp.mom2_corpus, hp.mom2_n_tokens) if apply.needs_stats(hp) else None
    return MethodEditor(apply, adapter, hp, stats, sequential), to_dict(hp)


@dataclass
class MethodEditor:
    """A registered method as an `Editor`; in sequential mode each call extends the previous call's result."""

    apply: Callable
    adapter: object
    hp: object
    stats: object
    sequential: bool
    history: list = field(default_factory=list)

    def __call__(self, model, tokenizer, requests: list[EditRequest]):
        from editkit.edit import restored_on_error
        from editkit.edit.common import check_requests

        check_requests(tokenizer, requests)
        with restored_on_error(model, self.adapter, self.hp.layers):
            previous = self.history[-1] if self.history else None
            result = self.apply(model, tokenizer, self.adapter, requests, self.hp, self.stats, history=previous)
        if self.sequential:
            self.history.append(result)
        return result

    def resume(self, model, result):
        """Continue a sequential run from its saved `result`: written into the unedited `model` (refused on any
        other) and extended by the next call."""
        result.apply(model)
        self.history.append(result)
        return result


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
    probe = capability_probe(config, data_file, model, tok)
    return run_eval(model, tok, records, config, out, editor, resume, refs, data_file, progress, probe)


def capability_probe(config: EvalConfig, data_file: Path | None, model=None, tokenizer=None) -> Probe | None:
    """The run's capability probe: the toy world's for toy records (unless a corpus is named), else the
    texts of `capability_corpus` with the `known_facts` file (default: the shipped known_1000), facts about
    any subject of the dataset file left out; None when off, or when a non-toy run names no corpus."""
    from editkit.evaluate import capability
    from editkit.evaluate.datasets import dataset_path, load_dataset
    from editkit.toy import is_toy, sources

    if not config.capability:
        return None
    n = {"n_texts": config.capability_texts, "n_facts": config.capability_facts, "batch_size": config.score_batch_size}
    if config.capability_corpus is None:
        if config.known_facts is not None:
            raise EditkitError("--known-facts needs --capability-corpus (the texts for perplexity)")
        return sources.capability_probe(**n) if is_toy(config.dataset) else None
    subjects = {r.request().subject for r in load_dataset(config.dataset, data_file)}
    facts = str(dataset_path("known_1000", config.known_facts))
    return capability.corpus_probe(config.capability_corpus, facts, subjects, model, tokenizer, **n)


def _references(config: EvalConfig, records, snippets: str | None, tfidf: str | None):
    """RS's reference texts: ROME's files when given, the toy corpus for the toy world, else none (no RS)."""
    from editkit.evaluate import references
    from editkit.toy import is_toy, sources

    if (snippets is None) != (tfidf is None):
        raise EditkitError("--snippets and --tfidf go together (ROME's attribute_snippets.json and idf/vocab files)")
    if not config.generation:
        return None
    if snippets is not None:
        return references.rome_references(snippets, tfidf)
    return sources.references(records) if is_toy(config.dataset) else None


def compare_methods(
    bundle,
    records,
    methods: Sequence[str],
    out_root: str | Path,
    model_name: str,
    dataset: str,
    batch: bool = False,
    **kw,
):
    """Run `methods` (shipped hyper-parameters for `model_name`) on `records` of `dataset` into
    `out_root/<method>`, each record edited alone or, with `batch`, all records in one batch; returns the run
    directories, ready for `tables.merge_runs` (resumes runs already there)."""
    model, tok, _ = bundle
    dirs = []
    for method in methods:
        editor, hp = make_editor(method, bundle, None, model_name, sequential=False)
        mode = {"mode": "batch", "batch_size": len(records)} if batch and method != "none" else {}
        config = EvalConfig(model=model_name, dataset=dataset, method=method, hparams=hp, **mode, **kw)
        out = Path(out_root) / method
        probe = capability_probe(config, None, model, tok)
        resume = (out / "config.json").exists()
        run_eval(model, tok, records, config, out, editor, resume, progress=False, probe=probe)
        dirs.append(out)
    return dirs

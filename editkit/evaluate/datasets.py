"""Benchmark datasets as typed records: CounterFact, MultiCounterFact, zsRE (MEND format), known_1000,
EasyEdit-format JSON and the toy world. Each record can produce the `EditRequest` it asks for. CounterFact in
EasyEdit's layout reads either way: as `easyedit` (EasyEdit's metrics) or as `counterfact` (ROME's ES/PS/NS)."""

from __future__ import annotations

import random
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from editkit.errors import EditkitError
from editkit.io import cache_root, data_dir, read_json
from editkit.requests import EditRequest
from editkit.toy import NAME, toy_path

ROME_DATA_URL = "https://rome.baulab.info/data/dsets/"
REMOTE_FILES = {
    "counterfact": "counterfact.json",
    "multi_counterfact": "multi_counterfact.json",
    "zsre": "zsre_mend_eval.json",
    "known_1000": "known_1000.json",
}
KINDS = ("counterfact", "multi_counterfact", "zsre", "known_1000", "easyedit", NAME)


@dataclass(frozen=True)
class CounterFactRecord:
    """One CounterFact case (ROME's layout): a rewrite and the prompts that test it."""

    case_id: int
    subject: str
    prompt: str
    target_new: str
    target_true: str
    relation_id: str
    target_new_id: str
    paraphrase_prompts: tuple[str, ...]
    neighborhood_prompts: tuple[str, ...]
    attribute_prompts: tuple[str, ...]
    generation_prompts: tuple[str, ...]

    def request(self) -> EditRequest:
        return EditRequest(self.prompt, self.subject, self.target_new, self.target_true)


@dataclass(frozen=True)
class ZsreRecord:
    """One zsRE question in the MEND evaluation layout; `loc`/`loc_answer` is the unrelated NQ question."""

    case_id: int
    subject: str
    prompt: str
    target_new: str
    paraphrase_prompts: tuple[str, ...]
    loc: str
    loc_answer: str

    def request(self) -> EditRequest:
        return EditRequest(self.prompt, self.subject, self.target_new)


@dataclass(frozen=True)
class KnownRecord:
    """One fact of ROME's known_1000 set (for causal tracing): `prompt` is expected to yield `attribute`."""

    case_id: int
    subject: str
    template: str
    prompt: str
    attribute: str
    prediction: str
    relation_id: str

    def request(self) -> EditRequest:
        return EditRequest(self.template, self.subject, self.attribute)


@dataclass(frozen=True)
class EasyEditRecord:
    """One EasyEdit/KnowEdit case; locality and portability are (prompt, answer) pairs."""

    case_id: int
    subject: str
    prompt: str
    target_new: str
    ground_truth: str | None
    rephrase_prompts: tuple[str, ...]
    locality: tuple[tuple[str, str], ...]
    portability: tuple[tuple[str, str], ...]

    def request(self) -> EditRequest:
        return EditRequest(self.prompt, self.subject, self.target_new, self.ground_truth)


Record = CounterFactRecord | ZsreRecord | KnownRecord | EasyEditRecord


class _Fields:
    """Typed access to one raw record's fields, with errors that name the record index and the field."""

    def __init__(self, raw: object, index: int, source: str):
        self.raw, self.index, self.source = raw, index, source
        if not isinstance(raw, dict):
            self.fail("", f"is a {type(raw).__name__}, expected a JSON object")

    def fail(self, field: str, problem: str):
        where = f"field {field!r} " if field else ""
        raise EditkitError(f"{self.source}: record {self.index}: {where}{problem}; fix the record or drop it")

    def get(self, path: str, kind: type = str, default: object = ...):
        value: object = self.raw
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                if default is not ...:
                    return default
                self.fail(path, "is missing")
            value = value[key]
        if kind is str and not (isinstance(value, str) and value.strip()):
            self.fail(path, f"must be a non-empty string, got {value!r}")
        if kind is not object and (not isinstance(value, kind) or isinstance(value, bool)):
            self.fail(path, f"must be a JSON {kind.__name__}, got {value!r}")
        return value

    def strings(self, path: str, default: object = ...) -> tuple[str, ...]:
        value = self.get(path, object, [] if default is not ... else ...)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.fail(path, f"must be a list of non-empty strings, got {value!r}")
        return tuple(value)

    def template(self, prompt: str, subject: str, field: str) -> str:
        """`prompt` with `{}` for the subject (a filled-in prompt has its first occurrence replaced)."""
        if "{}" in prompt:
            return prompt
        if subject not in prompt:
            self.fail(field, f"{prompt!r} contains neither {{}} nor the subject {subject!r}")
        return prompt.replace(subject, "{}", 1)


def _counterfact(f: _Fields) -> CounterFactRecord:
    if "requested_rewrite" not in f.raw and "locality_prompt" in f.raw:
        return _counterfact_easyedit(f)
    subject = f.get("requested_rewrite.subject")
    return CounterFactRecord(
        case_id=f.get("case_id", int),
        subject=subject,
        prompt=f.template(f.get("requested_rewrite.prompt"), subject, "requested_rewrite.prompt"),
        target_new=f.get("requested_rewrite.target_new.str"),
        target_true=f.get("requested_rewrite.target_true.str"),
        relation_id=f.get("requested_rewrite.relation_id", str, ""),
        target_new_id=f.get("requested_rewrite.target_new.id", str, ""),
        paraphrase_prompts=f.strings("paraphrase_prompts"),
        neighborhood_prompts=f.strings("neighborhood_prompts"),
        attribute_prompts=f.strings("attribute_prompts", None),
        generation_prompts=f.strings("generation_prompts", None),
    )


def _counterfact_easyedit(f: _Fields) -> CounterFactRecord:
    """CounterFact in EasyEdit's flat layout (one rephrase, one locality prompt per record) as a CounterFact
    record: the rephrase is the one paraphrase, the locality prompt the one neighbour. NS asks a neighbour to
    keep the record's true object, so its answer must be that object."""
    subject, truth = f.get("subject"), f.get("ground_truth")
    if f.get("locality_ground_truth") != truth:
        f.fail(
            "locality_ground_truth",
            f"is {f.raw['locality_ground_truth']!r}, not the ground_truth {truth!r}: CounterFact's NS needs a "
            "neighbour with the same true object; read this file with --dataset easyedit instead",
        )
    return CounterFactRecord(
        case_id=f.get("case_id", int, f.index),
        subject=subject,
        prompt=f.template(f.get("prompt"), subject, "prompt"),
        target_new=f.get("target_new"),
        target_true=truth,
        relation_id="",
        target_new_id="",
        paraphrase_prompts=f.strings("rephrase_prompt"),
        neighborhood_prompts=f.strings("locality_prompt"),
        attribute_prompts=(),
        generation_prompts=(),
    )


def _zsre(f: _Fields) -> ZsreRecord:
    subject = f.get("subject")
    answers = f.strings("answers")
    if not answers:
        f.fail("answers", "is empty")
    return ZsreRecord(
        case_id=f.get("case_id", int, f.index),
        subject=subject,
        prompt=f.template(f.get("src"), subject, "src"),
        target_new=answers[0],
        paraphrase_prompts=f.strings("rephrase"),
        loc=f.get("loc"),
        loc_answer=f.get("loc_ans"),
    )


def _known(f: _Fields) -> KnownRecord:
    return KnownRecord(
        case_id=f.get("known_id", int),
        subject=f.get("subject"),
        template=f.template(f.get("template"), f.get("subject"), "template"),
        prompt=f.get("prompt"),
        attribute=f.get("attribute"),
        prediction=f.get("prediction", str, ""),
        relation_id=f.get("relation_id", str, ""),
    )


def _pairs(f: _Fields, name: str) -> tuple[tuple[str, str], ...]:
    """EasyEdit's locality/portability: flat `<name>_prompt`/`<name>_ground_truth` fields, or KnowEdit's
    nested `{name: {group: [{"prompt", "ground_truth"}]}}` (answers that are lists use their first item)."""
    if f"{name}_prompt" in f.raw:
        return tuple(zip(f.strings(f"{name}_prompt"), f.strings(f"{name}_ground_truth"), strict=False))
    pairs = []
    for group, items in f.get(name, dict, {}).items():
        for item in items if isinstance(items, list) else [items]:
            prompt, answer = (item.get(k) if isinstance(item, dict) else None for k in ("prompt", "ground_truth"))
            while isinstance(answer, list) and answer:
                answer = answer[0]
            if not (isinstance(prompt, str) and isinstance(answer, str) and prompt.strip() and answer.strip()):
                f.fail(f"{name}.{group}", f"needs a prompt and a ground_truth string, got {item!r}")
            pairs.append((prompt, answer))
    return tuple(pairs)


def _easyedit(f: _Fields) -> EasyEditRecord:
    subject = f.get("subject")
    truth = f.get("ground_truth", object, None)
    truth = truth[0] if isinstance(truth, list) and truth else truth
    return EasyEditRecord(
        case_id=f.get("case_id", int, f.index),
        subject=subject,
        prompt=f.template(f.get("prompt"), subject, "prompt"),
        target_new=f.get("target_new"),
        ground_truth=truth if isinstance(truth, str) and truth.strip() else None,
        rephrase_prompts=f.strings("rephrase_prompt", None),
        locality=_pairs(f, "locality"),
        portability=_pairs(f, "portability"),
    )


_PARSERS = {
    "counterfact": _counterfact,
    "multi_counterfact": _counterfact,
    NAME: _counterfact,  # the toy world's records are CounterFact's
    "zsre": _zsre,
    "known_1000": _known,
    "easyedit": _easyedit,
}


def parse_record(raw: object, kind: str, index: int = 0, source: str = "dataset") -> Record:
    """One typed record of layout `kind`, validated; errors name `source`, the record's `index` and the field."""
    if kind not in _PARSERS:
        raise EditkitError(f"unknown dataset {kind!r}; use one of {', '.join(KINDS)}")
    return _PARSERS[kind](_Fields(raw, index, source))


def parse_records(raw: object, kind: str, source: str = "dataset") -> list[Record]:
    """Typed records from a loaded JSON list, validating every record."""
    if kind not in _PARSERS:
        raise EditkitError(f"unknown dataset {kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(raw, list):
        raise EditkitError(f"{source}: expected a JSON list of records, got a {type(raw).__name__}")
    records = [parse_record(r, kind, i, source) for i, r in enumerate(raw)]
    ids = [r.case_id for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise EditkitError(f"{source}: case_id {dup} appears twice; case ids must be unique")
    return records


def layout_of(raw: dict) -> str | None:
    """The dataset layout one raw record is in (counterfact, zsre, easyedit), or None for a plain request
    ({prompt with {}, subject, target_new[, target_true]} or a bare `requested_rewrite`)."""
    if "requested_rewrite" in raw and "paraphrase_prompts" in raw:
        return "counterfact"
    if "src" in raw and "answers" in raw:
        return "zsre"
    prompt = raw.get("prompt")
    if isinstance(prompt, str) and ("{}" not in prompt or {"ground_truth", "rephrase_prompt"} & set(raw)):
        return "easyedit"
    return None


def load_edit_requests(
    path: str | Path, limit: int | None = None, offset: int = 0
) -> list[tuple[EditRequest, Record | None]]:
    """Each request of a file for `editkit edit --requests`, with its dataset record when it is in one of the
    benchmark layouts (CounterFact, zsRE, EasyEdit, parsed as `load_dataset` parses them)."""
    from editkit.requests import load_records, request_from_record

    out = []
    for i, raw in enumerate(load_records(path, limit, offset), start=offset):
        kind = layout_of(raw) if isinstance(raw, dict) else None
        if kind is None:
            out.append((request_from_record(raw, f"{path} record {i}"), None))
        else:
            record = parse_record(raw, kind, i, str(path))
            out.append((record.request(), record))
    return out


def cache_dir() -> Path:
    """Where downloaded datasets live: `$EDITKIT_CACHE`, else `~/.cache/editkit`."""
    return cache_root() / "dsets"


def dataset_path(kind: str, path: str | Path | None = None) -> Path:
    """The local file for `kind`: `path` if given, the toy world's file, a copy shipped in data/ (known_1000),
    or a cached download from ROME's site."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise EditkitError(f"dataset file {p} does not exist; pass an existing JSON file with --data")
        return p
    if (toy_file := toy_path(kind, "counterfact")) is not None:
        return toy_file
    if kind not in REMOTE_FILES:
        raise EditkitError(f"dataset {kind!r} has no download location; pass the file with --data PATH")
    shipped = data_dir() / REMOTE_FILES[kind]
    if shipped.is_file():
        return shipped
    target = cache_dir() / REMOTE_FILES[kind]
    if not target.exists():
        _download(ROME_DATA_URL + REMOTE_FILES[kind], target)
    return target


def _download(url: str, target: Path) -> None:
    from editkit.io import atomic_write_bytes

    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            atomic_write_bytes(target, r.read())
    except OSError as e:
        raise EditkitError(
            f"could not download {url} ({e}); you seem to be offline: download it elsewhere and pass it "
            f"with --data PATH, or copy it to {target}"
        ) from e


def load_dataset(
    kind: str,
    path: str | Path | None = None,
    limit: int | None = None,
    offset: int = 0,
    sample: int | None = None,
    seed: int = 0,
    distinct_subjects: bool = False,
    keep: Callable[[list[Record]], list[bool]] | None = None,
) -> list[Record]:
    """Records of dataset `kind` from `path` (or the named source): `offset`/`limit` slice them in file
    order; `sample` then draws that many with `random.Random(seed)`, kept in file order. Before that, `keep`
    (one flag per record, e.g. `known.prefers_true`) filters them, then `distinct_subjects` keeps only each
    subject's first record (see `first_per_subject`)."""
    if kind not in _PARSERS:
        raise EditkitError(f"unknown dataset {kind!r}; use one of {', '.join(KINDS)}")
    file = dataset_path(kind, path)
    raw = read_json(file, "dataset file", "pass the dataset's JSON file")
    records = parse_records(raw, kind, str(file))
    if offset < 0 or (limit is not None and limit < 1) or (sample is not None and sample < 1):
        raise EditkitError("offset must be >= 0 and limit/sample >= 1")
    if keep is not None:
        records = _kept(records, keep, None if limit is None else offset + limit, distinct_subjects)
    if distinct_subjects:
        records = first_per_subject(records)
    records = records[offset : offset + limit if limit is not None else None]
    if sample is not None and sample < len(records):
        keep = sorted(random.Random(seed).sample(range(len(records)), sample))
        records = [records[i] for i in keep]
    return records


def _kept(records: list[Record], keep, needed: int | None, distinct: bool, chunk: int = 256) -> list[Record]:
    """The records `keep` flags, in order; `keep` (costly: it runs the model) sees only as many records, in
    chunks, as it takes to have `needed` of them (distinct subjects when `distinct`)."""
    out: list[Record] = []
    for i in range(0, len(records), chunk):
        part = records[i : i + chunk]
        out += [r for r, k in zip(part, keep(part), strict=True) if k]
        if needed is not None and len(first_per_subject(out) if distinct else out) >= needed:
            break
    return out


def first_per_subject(records: list[Record]) -> list[Record]:
    """Each subject's first record only. For batch and sequential edits: requests on one subject share the
    key at its last token, so a batch holding two of them asks one key for two values (MEMIT's MCF likewise
    drops conflicting records)."""
    seen: set[str] = set()
    out = []
    for r in records:
        subject = r.request().subject
        if subject not in seen:
            seen.add(subject)
            out.append(r)
    return out

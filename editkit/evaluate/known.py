"""Which facts a model knows. ROME built known_1000 by keeping the facts whose greedy continuation starts
with the attribute; CounterFact runs keep the records whose true object the unedited model prefers to the
new one (teacher-forced, mean token probability, as the ES metric compares them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from editkit.errors import EditkitError
from editkit.evaluate.datasets import (
    CounterFactRecord,
    EasyEditRecord,
    KnownRecord,
    Record,
    dataset_path,
    parse_records,
)
from editkit.evaluate.scoring import score_targets


def true_answer(record: Record) -> str:
    """The object the unedited fact states: known_1000's attribute, CounterFact's target_true, EasyEdit's
    ground truth; an error for records that have none (zsRE)."""
    if isinstance(record, KnownRecord):
        return record.attribute
    if isinstance(record, CounterFactRecord):
        return record.target_true
    if isinstance(record, EasyEditRecord) and record.ground_truth:
        return record.ground_truth
    raise EditkitError(
        f"record {record.case_id} states no true object; use known_1000, CounterFact or EasyEdit with ground_truth"
    )


def completes(model, tokenizer, records: Sequence[Record], batch_size: int = 64) -> list[bool]:
    """Per record: whether the greedy continuation of its filled-in prompt starts with its true object.
    Teacher-forced, which is the same test: every token of the object is the top-1 after the ones before it."""
    prompts = [r.request().text for r in records]
    scores = score_targets(model, tokenizer, prompts, [true_answer(r) for r in records], batch_size)
    return [all(s.correct) for s in scores]


def prefers_true(model, tokenizer, records: Sequence[Record], batch_size: int = 64) -> list[bool]:
    """Per CounterFact/EasyEdit record: whether the model gives the true object a lower mean token NLL than
    the new one on the rewrite prompt (the unedited model 'fails' ES there)."""
    prompts = [r.request().text for r in records]
    true = score_targets(model, tokenizer, prompts, [true_answer(r) for r in records], batch_size)
    new = score_targets(model, tokenizer, prompts, [r.request().target_new for r in records], batch_size)
    return [t.nll < n.nll for t, n in zip(true, new, strict=True)]


def known_facts(
    model, tokenizer, kind: str, path: str | Path | None = None, batch_size: int = 64
) -> tuple[list[dict], int]:
    """The raw records of dataset `kind` (from `path` or its named source) that the model completes correctly,
    unchanged and in file order, and the number of records read."""
    file = dataset_path(kind, path)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EditkitError(f"{file} is not valid JSON ({e}); pass the dataset's JSON file") from e
    records = parse_records(raw, kind, str(file))
    keep = completes(model, tokenizer, records, batch_size)
    return [r for r, k in zip(raw, keep, strict=True) if k], len(raw)

"""The one request type every edit method and the evaluation runner share, with its validation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from editkit.errors import EditkitError
from editkit.io import read_text


def fill_prompt(template: str, subject: str) -> str:
    """`template` with its `{}` replaced by `subject`; a clear error when there is no `{}`."""
    if "{}" not in template:
        raise EditkitError(f"prompt {template!r} has no {{}}; write the prompt with {{}} where the subject goes")
    if not subject.strip():
        raise EditkitError("subject is empty; pass the subject's name")
    return template.replace("{}", subject, 1)


@dataclass(frozen=True)
class EditRequest:
    """Rewrite `subject`'s attribute in `prompt` (which contains `{}`) from `target_true` to `target_new`."""

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None

    def __post_init__(self) -> None:
        fill_prompt(self.prompt, self.subject)
        if not self.target_new.strip():
            raise EditkitError(f"target_new is empty in request for {self.subject!r}; pass the new answer")

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return fill_prompt(self.prompt, self.subject)


def request_from_record(record: dict, where: str = "request") -> EditRequest:
    """A request from a plain {prompt, subject, target_new[, target_true]} mapping or a CounterFact record
    (its `requested_rewrite`, targets as {"str": ...}); errors name `where`."""
    if not isinstance(record, dict):
        raise EditkitError(f"{where}: expected a JSON object, got {type(record).__name__}")
    rw = record.get("requested_rewrite", record)
    text = lambda v: v.get("str") if isinstance(v, dict) else v  # noqa: E731
    missing = [k for k in ("prompt", "subject", "target_new") if not isinstance(text(rw.get(k)), str)]
    if missing:
        raise EditkitError(f"{where}: missing or non-text field {missing[0]!r}; give prompt, subject and target_new")
    true = text(rw.get("target_true"))
    try:
        return EditRequest(rw["prompt"], rw["subject"], text(rw["target_new"]), true if isinstance(true, str) else None)
    except EditkitError as e:
        raise EditkitError(f"{where}: {e}") from None


def load_records(path: str | Path, limit: int | None = None, offset: int = 0) -> list[dict]:
    """Records [offset, offset + limit) of a JSON list or JSONL file (plain requests or CounterFact records)."""
    path = Path(path)
    if not path.exists():
        raise EditkitError(f"requests file {path} does not exist; pass a JSON or JSONL file")
    text = read_text(path, "requests file")
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
            records = records if isinstance(records, list) else [records]
    except json.JSONDecodeError as e:
        raise EditkitError(
            f"requests file {path} is not valid JSON{'L' if path.suffix == '.jsonl' else ''}: {e}"
        ) from None
    if offset < 0 or (limit is not None and limit < 1):
        raise EditkitError(f"--offset must be >= 0 and --limit >= 1 (got offset {offset}, limit {limit})")
    out = records[offset : None if limit is None else offset + limit]
    if not out:
        raise EditkitError(f"{path} has {len(records)} records; --offset {offset} leaves none")
    return out


def load_requests(path: str | Path, limit: int | None = None, offset: int = 0) -> list[EditRequest]:
    """Requests from a JSON list or JSONL file of plain requests or CounterFact records; errors name the file
    and the record's index."""
    records = load_records(path, limit, offset)
    return [request_from_record(r, f"{path} record {offset + i}") for i, r in enumerate(records)]

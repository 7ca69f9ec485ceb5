"""Edited checkpoints: `save_pretrained` (safetensors) + tokenizer + provenance.json + the edit itself
(`editkit_edit/`, for `revert`), all written to one temporary directory and renamed into place at once,
loadable with plain transformers."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from editkit.errors import EditkitError
from editkit.io import atomic_directory, read_json

PROVENANCE = "provenance.json"
#: The edit carried inside a checkpoint directory, so that `revert` needs nothing else.
CHECKPOINT_EDIT = "editkit_edit"


def save_checkpoint(model, tokenizer, path: str | Path, result=None, source: str = "") -> Path:
    """Write the (edited) model and tokenizer to `path`; provenance.json says where it came from and which
    edit it carries (method, requests, fingerprints), and `editkit_edit/` holds that edit."""
    info = {
        "format": "editkit-checkpoint/1",
        "source_model": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if result is not None:
        info["edit"] = {
            "method": result.method,
            "modules": result.modules,
            "requests": [dataclasses.asdict(r) for r in result.requests],
            "fingerprint": result.fingerprint,
            "edited_fingerprint": result.edited_fingerprint,
        }
    with atomic_directory(path, replace_if=PROVENANCE) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if result is not None:
            result.write_into(tmp / CHECKPOINT_EDIT)
        (tmp / PROVENANCE).write_text(json.dumps(info, indent=2) + "\n")
    return Path(path)


def read_provenance(path: str | Path) -> dict:
    """The provenance of an editkit checkpoint, or a clear error for any other directory."""
    file = Path(path) / PROVENANCE
    if not file.exists():
        raise EditkitError(f"{path} has no {PROVENANCE}; pass a directory written by --save-checkpoint")
    return read_json(file, "checkpoint provenance", f"{path} is damaged; write the checkpoint again")

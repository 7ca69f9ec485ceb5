"""Edited checkpoints: `save_pretrained` (safetensors) + tokenizer + provenance.json + the edit itself
(`editkit_edit/`, for `revert`), all written to one temporary directory and renamed into place at once,
loadable with plain transformers. An edit kept beside the weights (a side memory, a prompt context) cannot
be loaded by plain transformers: its checkpoint holds the base weights, `editkit_edit/` holds the memory
(safetensors), `load_checkpoint` restores the edited model, and `plain_note` says so in one line."""

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
        note = plain_note(result)
        if note:
            info["edit"]["note"] = note
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


def plain_note(result) -> str | None:
    """One line saying why plain transformers cannot load `result`'s edit, or None when it can."""
    if result.memories:
        sites = ", ".join(m.module for m in result.memories)
        return (
            f"{result.method} keeps its edit in a side memory at {sites}, which plain transformers cannot load: "
            f"from_pretrained gives the unedited model; editkit.edit.checkpoint.load_checkpoint attaches the "
            f"memory from {CHECKPOINT_EDIT}/ (safetensors)"
        )
    if result.context:
        return (
            f"{result.method} edits no weights: the checkpoint is the unedited model; read every prompt behind the "
            f"context in {CHECKPOINT_EDIT}/edit.json (the edit's context_for(prompt), after load_checkpoint)"
        )
    return None


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """An editkit checkpoint as the edited model: (model, tokenizer, adapter) with the edit's side memories
    attached, and the edit it carries (None for an unedited checkpoint)."""
    from editkit.edit.result import EditResult
    from editkit.models import load_model

    read_provenance(path)
    bundle = load_model(str(path), device=device)
    edit_dir = Path(path) / CHECKPOINT_EDIT
    result = EditResult.load(edit_dir) if edit_dir.exists() else None
    if result is not None:
        result.attach(bundle.model)
    return bundle, result

"""`editkit convert`: any loadable model (a .gguf file, a hub id, a named model, a directory) written as a plain
Hugging Face directory (safetensors, tokenizer, chat template) that plain transformers loads."""

from __future__ import annotations

from pathlib import Path


def convert(model: str, out: str | Path, dtype: str | None = None, source_note: str | None = None) -> dict:
    """Load `model` (a GGUF file dequantised to `dtype`, default float32) and write it to `out` atomically,
    with a provenance.json naming where it came from."""
    from editkit.edit.checkpoint import save_checkpoint
    from editkit.models.loading import load_model

    m, tokenizer, adapter = load_model(model, device="cpu", dtype=dtype)
    save_checkpoint(m, tokenizer, out, None, source_note or model)
    return {
        "model": model,
        "out": str(out),
        "family": adapter.family,
        "parameters": sum(p.numel() for p in m.parameters()),
        "dtype": str(next(m.parameters()).dtype).removeprefix("torch."),
    }

"""What the `trace`, `trace-dataset`, `known` and `neurons` commands do, as library calls returning results
(the CLI only renders)."""

from __future__ import annotations

import json
from pathlib import Path

from editkit.errors import EditkitError

IMAGE_FORMATS = ("png", "pdf")


def trace_kinds(kind: str, sever: str | None = None) -> list[str]:
    """The kinds a `--kind` value traces (`all`: every kind); `--sever` restores hidden states only."""
    from editkit.locate.tracing import KINDS

    kinds = list(KINDS) if kind == "all" else [kind]
    if sever:
        if kind not in ("all", "hidden"):
            raise EditkitError(f"--sever restores hidden states; it cannot be used with --kind {kind}")
        kinds = ["hidden"]
    return kinds


def run_trace(
    model: str,
    prompt: str,
    subject: str,
    noise_subjects: list[str] | None = None,
    kind: str = "all",
    sever: str | None = None,
    out: Path | None = None,
    image_format: str = "png",
    device: str = "cpu",
    **trace_kwargs,
):
    """Causal trace of one prompt (`locate.tracing.trace`; `noise_subjects` default: the subjects of the
    shipped known_1000, `reference_subjects()`); with `out`, trace.npz and the heatmap written there.
    Returns the result and the files written."""
    from editkit.locate.plots import plot_trace
    from editkit.locate.tracing import reference_subjects, trace
    from editkit.models import load_model

    if image_format not in IMAGE_FORMATS:
        raise EditkitError(f"--format must be png or pdf, got {image_format!r}")
    kinds = trace_kinds(kind, sever)
    m, tok, a = load_model(model, device=device)
    subjects = noise_subjects if noise_subjects is not None else reference_subjects()
    result = trace(m, tok, a, prompt, subject, kinds=kinds, sever=sever, noise_subjects=subjects, **trace_kwargs)
    paths = []
    if out is not None:
        result.save(out / "trace.npz")
        paths = [out / "trace.npz", plot_trace(result, out / f"trace.{image_format}")]
    return result, paths


def run_trace_dataset(
    model: str,
    dataset: str,
    out: Path,
    limit: int | None = None,
    kind: str = "all",
    device: str = "cpu",
    progress: bool = True,
    shard: str = "0/1",
    **trace_kwargs,
) -> dict:
    """Trace the first `limit` cases of `dataset` into `out/traces.h5` (resumable; every case of the dataset sets
    the noise scale, as ROME's knowns do), then write the average indirect effect to aie.json and aie.png.
    Shard i/n of n > 1 writes `out/traces-i-of-n.h5`; the average is over every trace file in `out`, so
    shards run side by side (or in turn) in one directory merge. Returns the counts, the AIE and the files."""
    from editkit.evaluate.runner import parse_shard
    from editkit.io import atomic_write_text
    from editkit.locate.dataset import average_indirect_effect, load_trace_cases, plot_aie, trace_dataset
    from editkit.models import load_model
    from editkit.progress import progress_bar

    kinds = trace_kinds(kind)
    i, n = parse_shard(shard)
    cases = load_trace_cases(dataset)
    m, tok, a = load_model(model, device=device)
    path = out / ("traces.h5" if n == 1 else f"traces-{i}-of-{n}.h5")
    with progress_bar("trace-dataset", len(cases[:limit]), "facts", progress) as bar:
        counts = trace_dataset(
            m, tok, a, cases[:limit], path, kinds=kinds, noise_subjects=[c.subject for c in cases],
            progress=lambda i, n: bar(i), shard=shard, **trace_kwargs,
        )  # fmt: skip
    files = sorted(out.glob("traces*.h5"))
    aie = average_indirect_effect(files)
    atomic_write_text(out / "aie.json", json.dumps(aie.to_json(), indent=1))
    png = plot_aie(aie, out / "aie.png")
    return {"counts": counts, "aie": aie, "files": [path, out / "aie.json", png]}

"""Sequential-editing curves: each metric against the number of edits, one line per run (method), teacher-
forced solid and generation dashed, perplexity and retention after every edit step, collapse marked."""

from __future__ import annotations

from pathlib import Path

from editkit.errors import EditkitError
from editkit.evaluate.tables import Row, merge_runs
from editkit.locate.plots import pyplot, save_figure

PANELS = ("ES", "PS", "NS")


def plot_curves(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Draw the curves of sequential runs made with checkpoints into `out` (PNG or PDF; default
    `<first run>/curves.png`); returns the path."""
    return plot_rows(merge_runs(run_dirs), out if out is not None else Path(run_dirs[0]) / "curves.png")


def plot_rows(rows: list[Row], out: str | Path) -> Path:
    """Draw the curves of merged sequential runs (`Row`s, e.g. from saved summaries) into `out` (PNG or PDF)."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf"):
        raise EditkitError(f"cannot write {out}: give a .png or .pdf file")
    flat = [r.label for r in rows if "checkpoints" not in r.summary]
    if flat:
        raise EditkitError(f"run {flat[0]!r} has no checkpoints; make it with --mode sequential --checkpoints 10,50")
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for i, row in enumerate(rows):
        colour = f"C{i}"
        for ax, metric in zip(axes[0], PANELS, strict=True):
            _lines(ax, row, metric, colour)
        _capability(axes[1][0], axes[1][1], row, colour)
    for ax, metric in zip(axes[0], PANELS, strict=True):
        ax.set(title=metric, xlabel="edits", ylabel="% (solid: teacher-forced, dashed: generation)", ylim=(-2, 102))
    axes[1][0].set(title="perplexity on held-out text", xlabel="edits", yscale="log")
    axes[1][1].set(title="retention of untouched known facts", xlabel="edits", ylabel="%", ylim=(-2, 102))
    axes[1][2].axis("off")
    axes[1][2].legend(*axes[0][0].get_legend_handles_labels(), loc="center")
    return save_figure(fig, out)


def _lines(ax, row: Row, metric: str, colour: str) -> None:
    points = row.summary["checkpoints"]
    x = [p["edits"] for p in points]
    for key, style, name in (("metrics", "-", "teacher-forced"), ("generation_metrics", "--", "generation")):
        if key in points[0] and metric in points[0][key]:
            y = [100 * p[key][metric]["mean"] for p in points]
            ax.plot(x, y, style, color=colour, marker="o", ms=3, label=f"{row.label} ({name})")


def _capability(ax_ppl, ax_ret, row: Row, colour: str) -> None:
    curve = row.summary.get("curve") or []
    if not curve:
        return
    x = [p["edits"] for p in curve]
    ax_ppl.plot(x, [p["perplexity"] for p in curve], color=colour)
    ax_ppl.axhline(row.summary["capability"]["perplexity_before"], color=colour, ls=":", lw=0.8)
    kept = [(e, 100 * p["retention"]) for e, p in zip(x, curve, strict=True) if p["retention"] is not None]
    if kept:
        ax_ret.plot(*zip(*kept, strict=True), color=colour)
    if row.summary.get("collapse"):
        for ax in (ax_ppl, ax_ret):
            ax.axvline(row.summary["collapse"]["edit"], color=colour, ls="--", lw=0.8)

"""Pictures of traces: heatmaps in the paper's style (PNG/PDF) and a coloured grid for the terminal."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from editkit.locate.tracing import TraceResult

CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
TITLES = {
    "hidden": "Restoring single layer's hidden state",
    "mlp": "Restoring MLP outputs (window {w})",
    "attn": "Restoring attention outputs (window {w})",
}


def token_labels(result: TraceResult) -> list[str]:
    """Token strings with the subject's tokens marked by '*', as in the paper."""
    b, e = result.subject_range
    return [repr(t.strip() or t)[1:-1] + ("*" if b <= i < e else "") for i, t in enumerate(result.tokens)]


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (figures go to files, never to a window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Save `fig` atomically as PNG or PDF (by the file's extension) and close it."""
    import io

    from editkit.io import atomic_write_bytes

    path = Path(path)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=150, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_trace(result: TraceResult, path: str | Path) -> Path:
    """One panel per traced kind, tokens down, layers across, colour = p(answer); saved atomically as
    PNG or PDF (by the file's extension)."""
    plt = pyplot()
    kinds = list(result.scores)
    labels = token_labels(result)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 0.5 + 0.22 * len(labels)), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        scores = result.scores[kind]
        im = ax.pcolor(scores, cmap=CMAPS[kind], vmin=min(result.corrupted_score, scores.min()))
        ax.invert_yaxis()
        ax.set_yticks(np.arange(len(labels)) + 0.5, labels, fontsize=7)
        ticks = list(range(0, scores.shape[1], max(1, scores.shape[1] // 6)))
        ax.set_xticks(np.array(ticks) + 0.5, ticks, fontsize=7)
        ax.set_title(TITLES[kind].format(w=result.window), fontsize=8)
        ax.set_xlabel("single restored layer" if kind == "hidden" else "centre of restored window", fontsize=7)
        cb = fig.colorbar(im, ax=ax)
        cb.ax.tick_params(labelsize=6)
        cb.set_label(f"p({result.answer.strip()})", fontsize=7)
    return save_figure(fig, path)


def rich_grid(result: TraceResult, kind: str):
    """A rich Table: one row per token, one cell per layer, shaded (colour and ░▒▓█) by the restored score."""
    from rich.table import Table
    from rich.text import Text

    colour = {"hidden": (117, 107, 177), "mlp": (49, 163, 84), "attn": (222, 45, 38)}[kind]
    scores = result.scores[kind]
    lo, hi = float(scores.min()), float(scores.max())
    table = Table(box=None, padding=(0, 0), show_edge=False)
    table.add_column(f"{kind} \\ layer", justify="right")
    for layer in range(scores.shape[1]):
        table.add_column(str(layer % 10).rjust(2), justify="center", width=2)
    for label, row in zip(token_labels(result), scores, strict=True):
        cells = []
        for v in row:
            f = (v - lo) / (hi - lo) if hi > lo else 0.0
            r, g, b = (int(255 - f * (255 - c)) for c in colour)
            cells.append(Text(" ░▒▓█"[min(4, int(f * 5))] * 2, style=f"rgb({r},{g},{b})"))
        table.add_row(label, *cells)
    return table

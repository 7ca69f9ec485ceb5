"""Tables of run directories in the papers' layouts (ROME's Table 4 for CounterFact, the zsRE table, EasyEdit's
four metrics): one row per run, shards of one run merged, cells as mean ± 95% CI in percent."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from editkit.errors import EditkitError
from editkit.evaluate.metrics import summarize
from editkit.evaluate.runner import parse_shard, read_cases
from editkit.evaluate.suites import suite_of

COLUMNS = {
    "counterfact": ("S", "ES", "PS", "NS", "GE", "RS", "EM", "PM", "NM"),
    "zsre": ("Efficacy", "Paraphrase", "Specificity"),
    "easyedit": ("Reliability", "Generalization", "Locality", "Portability"),
}
FORMATS = ("rich", "markdown", "csv", "latex")


@dataclass(frozen=True)
class Row:
    """One run (its shards merged): a label, its suite, the merged summary and how many shards it has."""

    label: str
    suite: str
    summary: dict
    shards: str
    config: dict

    def cell(self, metric: str) -> tuple[float, float] | None:
        """(mean, half-width of the 95% CI) in percent, or None if the run lacks the metric."""
        m = self.summary["metrics"].get(metric)
        return None if m is None else percent(m)


def percent(m: dict) -> tuple[float, float]:
    """A summarised metric ({"mean", "ci95"}) as (mean, half-width of the 95% CI) in percent."""
    lo, hi = m["ci95"]
    return 100 * m["mean"], 100 * (hi - lo) / 2


def cell_text(m: dict) -> str:
    """A summarised metric as 'mean ± half-width' in percent, as the markdown tables write it."""
    return _text(percent(m), " ± ")


def _load(run_dir: Path) -> tuple[dict, list[dict]]:
    cfg = run_dir / "config.json"
    if not cfg.is_file():
        raise EditkitError(f"{run_dir} is not a run directory (no config.json); pass directories made by editkit eval")
    return json.loads(cfg.read_text()), read_cases(run_dir / "cases.jsonl")


def merge_runs(run_dirs: list[str | Path]) -> list[Row]:
    """Rows in first-seen order; run directories whose configs differ only in `shard` merge into one row."""
    groups: dict[str, list[tuple[dict, list[dict]]]] = {}
    for d in run_dirs:
        config, cases = _load(Path(d))
        key = json.dumps({k: v for k, v in config.items() if k != "shard"}, sort_keys=True)
        groups.setdefault(key, []).append((config, cases))
    rows = [_row(parts) for parts in groups.values()]
    if len({r.suite for r in rows}) > 1:
        raise EditkitError("these runs use different benchmarks (e.g. CounterFact and zsRE); make one table each")
    labels = [r.label for r in rows]
    return [_relabel(r) if labels.count(r.label) > 1 else r for r in rows]


def _row(parts: list[tuple[dict, list[dict]]]) -> Row:
    config = parts[0][0]
    shards = sorted(parse_shard(c["shard"])[0] for c, _ in parts)
    total = parse_shard(config["shard"])[1]
    if len(set(shards)) != len(shards):
        raise EditkitError(
            f"shard {config['shard']} of {config['method']} is given twice; pass each run directory once"
        )
    cases = sorted((c for _, cs in parts for c in cs), key=lambda c: c["case_id"])
    suite = suite_of(config["dataset"])
    label = config["method"] if config["method"] != "none" else f"{config['model']} (unedited)"
    return Row(label, suite, summarize([c["metrics"] for c in cases], suite), f"{len(shards)}/{total}", config)


def _relabel(row: Row) -> Row:
    """Tell apart runs of one method: add the model, mode, edits per batch and seed."""
    c = row.config
    extra = f" [{c['model']}, {c['mode']} x{c['batch_size']}, seed {c['seed']}]"
    return Row(row.label + extra, row.suite, row.summary, row.shards, row.config)


def _text(cell: tuple[float, float] | None, pm: str) -> str:
    return "–" if cell is None else f"{cell[0]:.1f}{pm}{cell[1]:.1f}"


def render(rows: list[Row], fmt: str = "markdown"):
    """The table as text (markdown, csv, latex) or as a rich Table (`rich`)."""
    if fmt not in FORMATS:
        raise EditkitError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not rows:
        raise EditkitError("no runs given; pass one or more run directories")
    cols = COLUMNS[rows[0].suite]
    return {"rich": _rich, "markdown": _markdown, "csv": _csv, "latex": _latex}[fmt](rows, cols)


def _header(cols) -> list[str]:
    return ["Editor", *cols, "n"]


def _rich(rows: list[Row], cols):
    from rich.table import Table

    table = Table(title="mean ± 95% CI, in percent")
    for h in _header(cols):
        table.add_column(h, justify="left" if h == "Editor" else "right")
    for r in rows:
        table.add_row(r.label, *(_text(r.cell(c), " ± ") for c in cols), _n(r))
    return table


def _n(row: Row) -> str:
    return f"{row.summary['n']}" + ("" if row.shards == "1/1" else f" ({row.shards} shards)")


def _markdown(rows: list[Row], cols) -> str:
    head = _header(cols)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h == "Editor" else "---:" for h in head) + "|"]
    lines += ["| " + " | ".join([r.label, *(_text(r.cell(c), " ± ") for c in cols), _n(r)]) + " |" for r in rows]
    return "\n".join(lines)


def _csv(rows: list[Row], cols) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["editor", *(f"{c}{s}" for c in cols for s in ("", "_ci95")), "n", "shards"])
    for r in rows:
        cells = [r.cell(c) for c in cols]
        w.writerow(
            [r.label, *(f"{x:.2f}" if c else "" for c in cells for x in (c or (0, 0))), r.summary["n"], r.shards]
        )
    return buf.getvalue().rstrip("\n")


def _latex(rows: list[Row], cols) -> str:
    head = " & ".join(_header(cols)).replace("_", r"\_")
    body = [
        " & ".join([r.label.replace("_", r"\_"), *(_text(r.cell(c), r" $\pm$ ") for c in cols), _n(r)]) + r" \\"
        for r in rows
    ]
    spec = "l" + "r" * (len(cols) + 1)
    return "\n".join(
        [
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            head + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
        ]
    )

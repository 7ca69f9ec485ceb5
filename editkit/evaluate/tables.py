"""Tables of run directories in the papers' layouts (ROME's Table 4 for CounterFact, the zsRE table, EasyEdit's
four metrics): one row per run, shards of one run merged, cells as mean ± 95% CI in percent. Every column
is labelled with its protocol: `tf:` teacher-forced, `gen:` greedy generation, `cap:` capability."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

from editkit.errors import EditkitError
from editkit.evaluate.runner import parse_shard, read_baseline, read_cases, summarize_run
from editkit.evaluate.suites import suite_of
from editkit.io import read_json

COLUMNS = {
    "counterfact": ("S", "ES", "PS", "NS", "GE", "RS", "EM", "PM", "NM"),
    "zsre": ("Efficacy", "Paraphrase", "Specificity"),
    "easyedit": ("Reliability", "Generalization", "Locality", "Portability"),
}
# The generation protocol's columns: the rates of answers starting with the target, then containing it.
GEN_COLUMNS = {
    "counterfact": ("S", "ES", "PS", "NS", "ES_contains", "PS_contains", "NS_contains"),
    "zsre": ("Efficacy", "Paraphrase", "Specificity", "Efficacy_contains", "Paraphrase_contains"),
    "easyedit": ("Reliability", "Generalization", "Locality", "Portability"),
}
PROTOCOL_KEYS = {"tf": "metrics", "gen": "generation_metrics"}
CAP_COLUMNS = ("PPL", "retention")
FORMATS = ("rich", "markdown", "csv", "latex")


@dataclass(frozen=True)
class Row:
    """One run (its shards merged): a label, its suite, the merged summary and how many shards it has."""

    label: str
    suite: str
    summary: dict
    shards: str
    config: dict

    def cell(self, metric: str, protocol: str = "tf") -> tuple[float, float] | None:
        """(mean, half-width of the 95% CI) in percent, or None if the run lacks the metric; `protocol` is
        tf (teacher-forced), gen (generation) or cap (retention)."""
        if protocol == "cap":
            m = (self.summary.get("capability") or {}).get(metric)
        else:
            m = self.summary.get(PROTOCOL_KEYS[protocol], {}).get(metric)
        return None if m is None else percent(m)

    def perplexity(self) -> tuple[float, float] | None:
        """(perplexity before, mean perplexity after), or None if the run measured no capability."""
        cap = self.summary.get("capability")
        return (cap["perplexity_before"], cap["perplexity_after"]["mean"]) if cap else None

    @property
    def protocol(self) -> str:
        return self.config.get("protocol", "teacher-forced")


def percent(m: dict) -> tuple[float, float] | None:
    """A summarised metric ({"mean", "ci95"}) as (mean, half-width of the 95% CI) in percent; None when no
    case had a value for it."""
    if m["mean"] is None:
        return None
    lo, hi = m["ci95"]
    return 100 * m["mean"], 100 * (hi - lo) / 2


def cell_text(m: dict) -> str:
    """A summarised metric as 'mean ± half-width' in percent, as the markdown tables write it."""
    return _text(percent(m), " ± ")


def _load(run_dir: Path) -> tuple[dict, list[dict], dict | None, list[dict]]:
    cfg = run_dir / "config.json"
    if not cfg.is_file():
        raise EditkitError(f"{run_dir} is not a run directory (no config.json); pass directories made by editkit eval")
    steps = read_cases(run_dir / "steps.jsonl")
    config = read_json(cfg, "run config", f"delete {run_dir} and run the evaluation again")
    return config, read_cases(run_dir / "cases.jsonl"), read_baseline(run_dir), steps


_PROTOCOL_FIELDS = ("shard", "protocol", "decoding", "max_new_tokens")


def merge_runs(run_dirs: list[str | Path]) -> list[Row]:
    """Rows in first-seen order; run directories whose configs differ only in `shard` merge into one row.
    Two directories with the same settings and the same shard are two runs (two rows, told apart by
    directory). Shards run under different protocols are refused; whole runs of different protocols are
    separate rows, each labelled with its protocol."""
    if len({Path(d).resolve() for d in run_dirs}) < len(run_dirs):
        raise EditkitError("a run directory is given twice; pass each run directory once")
    groups: list[tuple[str, list[Path], list[tuple]]] = []
    protocols: dict[str, set[str]] = {}
    for d in map(Path, run_dirs):
        config, cases, base, steps = _load(d)
        key = json.dumps({k: v for k, v in config.items() if k not in ("shard", "torch_threads")}, sort_keys=True)
        group = next((g for g in groups if g[0] == key and all(p[0]["shard"] != config["shard"] for p in g[2])), None)
        if group is None:
            groups.append(group := (key, [], []))
        group[1].append(d)
        group[2].append((config, cases, base, steps))
        run = json.dumps({k: v for k, v in config.items() if k not in _PROTOCOL_FIELDS}, sort_keys=True)
        protocols.setdefault(run, set()).add(config.get("protocol", "teacher-forced"))
        if len(protocols[run]) > 1 and parse_shard(config["shard"])[1] > 1:
            raise EditkitError(
                f"shards of one {config['method']} run were made under different protocols "
                f"({', '.join(sorted(protocols[run]))}); they do not merge into one row: rerun them with one --protocol"
            )
    rows = [_row(parts) for _, _, parts in groups]
    if len({r.suite for r in rows}) > 1:
        raise EditkitError("these runs use different benchmarks (e.g. CounterFact and zsRE); make one table each")
    if len({r.protocol for r in rows}) > 1:
        rows = [Row(f"{r.label} [{r.protocol}]", r.suite, r.summary, r.shards, r.config) for r in rows]
    labels = [r.label for r in rows]
    rows = [_relabel(r) if labels.count(r.label) > 1 else r for r in rows]
    labels = [r.label for r in rows]
    return [
        dataclasses.replace(r, label=f"{r.label} ({', '.join(str(d) for d in dirs)})")
        if labels.count(r.label) > 1
        else r
        for r, (_, dirs, _) in zip(rows, groups, strict=True)
    ]


def _row(parts: list[tuple]) -> Row:
    config = parts[0][0]
    shards = sorted(parse_shard(p[0]["shard"])[0] for p in parts)
    total = parse_shard(config["shard"])[1]
    cases = sorted((c for p in parts for c in p[1]), key=lambda c: c["case_id"])
    steps = sorted((s for p in parts for s in p[3]), key=lambda s: s["edits"])
    suite = suite_of(config["dataset"])
    label = config["method"] if config["method"] != "none" else f"{config['model']} (unedited)"
    summary = summarize_run(cases, config, parts[0][2], steps)
    return Row(label, suite, summary, f"{len(shards)}/{total}", config)


def _relabel(row: Row) -> Row:
    """Tell apart runs of one method: add the model, mode, edits per batch and seed."""
    c = row.config
    extra = f" [{c['model']}, {c['mode']} x{c['batch_size']}, seed {c['seed']}]"
    return Row(row.label + extra, row.suite, row.summary, row.shards, row.config)


def _text(cell: tuple[float, float] | None, pm: str) -> str:
    return "–" if cell is None else f"{cell[0]:.1f}{pm}{cell[1]:.1f}"


def columns(rows: list[Row]) -> list[tuple[str, str]]:
    """(protocol, metric) of every column the rows have: tf, then gen, then cap."""
    suite = rows[0].suite
    cols = []
    if any("metrics" in r.summary for r in rows):
        cols += [("tf", c) for c in COLUMNS[suite]]
    if any("generation_metrics" in r.summary for r in rows):
        cols += [("gen", c) for c in GEN_COLUMNS[suite]]
    if any("capability" in r.summary for r in rows):
        cols += [("cap", c) for c in CAP_COLUMNS]
    return cols


def _cell_text(row: Row, col: tuple[str, str], pm: str, arrow: str = " → ") -> str:
    protocol, metric = col
    if protocol == "cap" and metric == "PPL":
        p = row.perplexity()
        return "–" if p is None else f"{p[0]:.2f}{arrow}{p[1]:.2f}"
    return _text(row.cell(metric, protocol), pm)


def render(rows: list[Row], fmt: str = "markdown", protocols: tuple[str, ...] = ("tf", "gen", "cap")):
    """The table as text (markdown, csv, latex) or as rich tables (`rich`), with the columns of `protocols`
    (tf, gen, cap) that the rows have."""
    if fmt not in FORMATS:
        raise EditkitError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not rows:
        raise EditkitError("no runs given; pass one or more run directories")
    cols = [c for c in columns(rows) if c[0] in protocols]
    if not cols:
        raise EditkitError(f"these runs have no {'/'.join(protocols)} columns; table another protocol")
    return {"rich": _rich, "markdown": _markdown, "csv": _csv, "latex": _latex}[fmt](rows, cols)


def _header(cols) -> list[str]:
    return ["Editor", *(f"{p}:{m}" for p, m in cols), "n"]


TITLES = {
    "tf": "teacher-forced (tf): mean ± 95% CI, in percent",
    "gen": "generation (gen), greedy answers: mean ± 95% CI, in percent",
    "cap": "capability (cap): perplexity on held-out text before → after; retention of untouched facts, %",
}


def _rich(rows: list[Row], cols):
    """One rich table per protocol (so each fits a terminal), every column still labelled with it."""
    from rich.console import Group
    from rich.table import Table

    tables = []
    for protocol in dict.fromkeys(p for p, _ in cols):
        mine = [c for c in cols if c[0] == protocol]
        table = Table(title=TITLES[protocol])
        for h in _header(mine):
            table.add_column(h, justify="left" if h == "Editor" else "right")
        for r in rows:
            table.add_row(r.label, *(_cell_text(r, c, " ± ") for c in mine), _n(r))
        tables.append(table)
    return Group(*tables)


def _n(row: Row) -> str:
    return f"{row.summary['n']}" + ("" if row.shards == "1/1" else f" ({row.shards} shards)")


def _markdown(rows: list[Row], cols) -> str:
    head = _header(cols)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h == "Editor" else "---:" for h in head) + "|"]
    lines += ["| " + " | ".join([r.label, *(_cell_text(r, c, " ± ") for c in cols), _n(r)]) + " |" for r in rows]
    return "\n".join(lines)


def _csv(rows: list[Row], cols) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    pairs = [("_before", "_after") if (p, m) == ("cap", "PPL") else ("", "_ci95") for p, m in cols]
    names = [f"{p}:{m}{s}" for (p, m), sfx in zip(cols, pairs, strict=True) for s in sfx]
    w.writerow(["editor", *names, "n", "shards"])
    for r in rows:
        cells = []
        for p, m in cols:
            if (p, m) == ("cap", "PPL"):
                cells += [f"{x:.4f}" for x in r.perplexity()] if r.perplexity() else ["", ""]
            else:
                c = r.cell(m, p)
                cells += [f"{x:.2f}" for x in c] if c else ["", ""]
        w.writerow([r.label, *cells, r.summary["n"], r.shards])
    return buf.getvalue().rstrip("\n")


def _latex(rows: list[Row], cols) -> str:
    head = " & ".join(_header(cols)).replace("_", r"\_")
    body = [
        " & ".join([r.label.replace("_", r"\_"), *(_cell_text(r, c, r" $\pm$ ", r" $\to$ ") for c in cols), _n(r)])
        + r" \\"
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

"""Reproduce ROME's Table 4 layout on CounterFact: the unedited model, FT-L, ROME, r-ROME, MEMIT and AlphaEdit,
and the methods researchers now compare against (EMMET, UltraEdit, GRACE, WISE, IKE), each evaluated with
`editkit eval`'s runner under both protocols (teacher-forced and generation) with capability, then one table
per protocol and the gap between them written to experiments/README.md with this command.

    python experiments/reproduce_counterfact.py --model toy --limit 100            # the toy world, on a CPU
    python experiments/reproduce_counterfact.py --model smollm2-135m --dataset counterfact \\
        --data counterfact-edit.json --limit 200 --distinct-subjects --eval known_only=true
    python experiments/reproduce_counterfact.py --model gpt2-xl --limit 2000 \\
        --dataset counterfact --device cuda                                          # the paper's setting

FT-L, ROME, r-ROME and IKE edit each record alone (reverted after it); MEMIT, EMMET and UltraEdit edit
--batch-size records in one batch; AlphaEdit and the lifelong editors GRACE and WISE edit the records one
after another, each scored once it is in place with every earlier edit still there. `--eval key=value`
sets any other field of the runs' EvalConfig; `--hparams METHOD=FILE` gives one method a hyper-parameter file
other than its shipped one. Runs resume: rerun the same command after an interruption;
each run's wall time (summed over its invocations) is kept in its directory's wall.json and shown under the
table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from editkit.edit.hparams import parse_override
from editkit.evaluate.runner import EvalConfig, run_named
from editkit.evaluate.tables import merge_runs, render
from editkit.io import atomic_write_text, replace_section
from editkit.toy import default_dataset

METHODS = ("none", "ft-l", "rome", "r-rome", "memit", "alphaedit", "emmet", "ultraedit", "grace", "wise", "ike")
#: How each method edits the records; the rest edit one record at a time.
MODES = {
    "memit": "batch", "emmet": "batch", "ultraedit": "batch",
    "alphaedit": "sequential", "grace": "sequential", "wise": "sequential",
}  # fmt: skip
README = Path(__file__).parent / "README.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy")
    p.add_argument("--dataset", default=None, help="default: toy for --model toy, else counterfact")
    p.add_argument("--data", default=None)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--batch-size", type=int, default=100, help="MEMIT, EMMET, UltraEdit: edits per batch")
    p.add_argument("--distinct-subjects", action="store_true", help="each subject's first record only")
    p.add_argument("--eval", action="append", default=[], help="another EvalConfig field, key=value")
    p.add_argument("--hparams", action="append", default=[], help="METHOD=FILE: that method's hparams file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", default="runs/reproduce_counterfact")
    p.add_argument("--no-readme", action="store_true", help="print the table only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    dataset = args.dataset or default_dataset(args.model)
    extra = dict(parse_override(e) for e in args.eval)
    files = dict(parse_hparams(h) for h in args.hparams)
    dirs, walls = [], {}
    for method in args.methods.split(","):
        out = Path(args.runs) / f"{Path(args.model).name}-{method}"
        mode = MODES.get(method, "single")
        config = EvalConfig(
            model=args.model, dataset=dataset, method=method, data=args.data, limit=args.limit, mode=mode,
            batch_size=args.batch_size if mode == "batch" else 1, distinct_subjects=args.distinct_subjects, **extra,
        )  # fmt: skip
        print(f"== {method} ({mode}) -> {out}", flush=True)
        t0 = time.perf_counter()
        resume = (out / "config.json").exists()
        run_named(config, out, resume=resume, device=args.device, hparams_file=files.get(method))
        walls[method] = add_wall(out, time.perf_counter() - t0)
        dirs.append(out)
    rows = merge_runs(dirs)
    table = (
        "\n\n".join(f"{title}\n\n{render(rows, 'markdown', (p,))}" for p, title in TITLES.items() if _has(rows, p))
        + f"\n\n{gaps(rows)}"
    )
    times = ", ".join(f"{m} {s / 60:.0f} min" for m, s in walls.items())
    print(table + f"\n\nwall time: {times}")
    if not args.no_readme:
        command = "python experiments/reproduce_counterfact.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_readme(table, times, command.strip(), args.model, dataset, args.limit)
    return table


def parse_hparams(text: str) -> tuple[str, str]:
    """'METHOD=FILE' -> (method, file); a method not in METHODS is an error naming them."""
    method, sep, file = text.partition("=")
    if not sep or method not in METHODS or not file:
        raise SystemExit(f"--hparams {text!r}: write METHOD=FILE with METHOD one of {', '.join(METHODS)}")
    return method, file


def add_wall(out: Path, seconds: float) -> float:
    """Add `seconds` to the run's wall.json (a resumed run sums its invocations); the new total."""
    path = out / "wall.json"
    total = (json.loads(path.read_text())["seconds"] if path.exists() else 0.0) + seconds
    atomic_write_text(path, json.dumps({"seconds": round(total, 1)}) + "\n")
    return total


TITLES = {
    "tf": "Teacher-forced (the papers' protocol: P(new) > P(true)):",
    "gen": "Generation (greedy answer up to a natural stop starts with the target; NS: with the true object):",
    "cap": "Capability (perplexity on held-out text before → after; retention of untouched known facts):",
}


def _has(rows, protocol: str) -> bool:
    from editkit.evaluate.tables import columns

    return any(p == protocol for p, _ in columns(rows))


def gaps(rows) -> str:
    """Per method: generation minus teacher-forced, in points, for ES, PS and NS."""
    lines = ["| Editor | ES gen − tf | PS gen − tf | NS gen − tf |", "|---|---:|---:|---:|"]
    for r in rows:
        cells = []
        for m in ("ES", "PS", "NS"):
            tf, gen = r.cell(m, "tf"), r.cell(m, "gen")
            cells.append("–" if tf is None or gen is None else f"{gen[0] - tf[0]:+.1f}")
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    return "Where the protocols disagree (percentage points):\n\n" + "\n".join(lines)


def write_readme(table: str, times: str, command: str, model: str, dataset: str, limit: int) -> None:
    """Replace this model's section of experiments/README.md (or add it)."""
    name = Path(model).name
    begin, end = f"<!-- reproduce_counterfact:{name}:begin -->", f"<!-- reproduce_counterfact:{name}:end -->"
    section = (
        f"{begin}\n## CounterFact, ROME Table 4 layout ({name}, {dataset}, first {limit} records)\n\n"
        f"```\n{command}\n```\n\n{table}\n\nWall time (2 shared CPU cores): {times}.\n\n"
        "Cells: mean ± 95% CI in percent (GE: ROME's weighted n-gram entropy x 100). "
        "S is the harmonic mean of ES, PS, NS. Generation: greedy decoding, at most 20 new tokens, stopped at "
        "the end of sequence, a newline or a sentence end; answers lower-cased, punctuation removed.\n"
        f"{end}"
    )
    replace_section(README, begin, end, section)


if __name__ == "__main__":
    main()

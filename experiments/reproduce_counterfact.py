"""Reproduce ROME's Table 4 layout on CounterFact: the unedited model, FT-L, ROME, MEMIT and AlphaEdit, each
evaluated with `editkit eval`'s runner, then the table written to experiments/README.md with this command.

    python experiments/reproduce_counterfact.py --model toy --limit 100            # the toy world, on a CPU
    python experiments/reproduce_counterfact.py --model gpt2-xl --limit 2000 \\
        --dataset counterfact --device cuda                                          # the paper's setting

The gpt2-xl run needs the weights, a GPU and the CounterFact download (or --data PATH); it uses the
hyper-parameters editkit ships for gpt2-xl. Runs resume: rerun the same command after an interruption.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from editkit.evaluate.runner import EvalConfig, run_named
from editkit.evaluate.tables import merge_runs, render
from editkit.io import atomic_write_text

METHODS = ("none", "ft-l", "rome", "memit", "alphaedit")
README = Path(__file__).parent / "README.md"
BEGIN, END = "<!-- reproduce_counterfact:begin -->", "<!-- reproduce_counterfact:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy")
    p.add_argument("--dataset", default=None, help="default: toy for --model toy, else counterfact")
    p.add_argument("--data", default=None)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--mode", default="single", help="single for ROME/FT-L; MEMIT/AlphaEdit in batch use --mode batch")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", default="runs/reproduce_counterfact")
    p.add_argument("--no-readme", action="store_true", help="print the table only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    dataset = args.dataset or ("toy" if args.model == "toy" else "counterfact")
    dirs = []
    for method in args.methods.split(","):
        out = Path(args.runs) / f"{Path(args.model).name}-{method}"
        config = EvalConfig(
            model=args.model, dataset=dataset, method=method, data=args.data, limit=args.limit, mode=args.mode,
            batch_size=args.batch_size,
        )  # fmt: skip
        print(f"== {method} -> {out}", flush=True)
        run_named(config, out, resume=(out / "config.json").exists(), device=args.device)
        dirs.append(out)
    table = render(merge_runs(dirs), "markdown")
    print(table)
    if not args.no_readme:
        command = "python experiments/reproduce_counterfact.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_readme(table, command.strip(), args.model, dataset, args.limit)
    return table


def write_readme(table: str, command: str, model: str, dataset: str, limit: int) -> None:
    """Replace this script's section of experiments/README.md (or add it)."""
    section = (
        f"{BEGIN}\n## CounterFact, ROME Table 4 layout ({model}, {dataset}, first {limit} records)\n\n"
        f"```\n{command}\n```\n\n{table}\n\n"
        "Cells: mean ± 95% CI in percent (GE: ROME's weighted n-gram entropy x 100). "
        "S is the harmonic mean of ES, PS, NS.\n"
        "The paper's numbers come from the same script with `--model gpt2-xl --dataset counterfact --device cuda` "
        "and the shipped gpt2-xl hyper-parameters; that needs the weights and a GPU and was not run here.\n"
        f"{END}"
    )
    text = README.read_text() if README.exists() else "# Experiments\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    atomic_write_text(README, text + ("" if text.endswith("\n") else "\n"))


if __name__ == "__main__":
    main()

"""Sequential editing curves (as "The Mirage of Model Editing"'s WILD deploys edits): ROME, r-ROME, MEMIT in
batches of 10 and AlphaEdit (and on request EMMET and UltraEdit in batches of 10, GRACE, WISE and IKE) edit the
toy world's CounterFact records one after another, never reverted; after 1, 2, 5, 10, 20, 50, 100, 500 and
1000 edits (batched methods: the multiples of 10) every edit so far is scored under both protocols, with
perplexity and retention after every edit step (`--capability-every N`: every N edits and at the checkpoints).
Writes the curves' table into experiments/README.md and a figure.

    OMP_NUM_THREADS=1 python experiments/sequential.py                      # all four, to 1000 edits
    OMP_NUM_THREADS=1 python experiments/sequential.py --methods rome --checkpoints 10,50 --readme-only
    OMP_NUM_THREADS=1 python experiments/sequential.py --model smollm2-135m --dataset counterfact \\
        --data ../shared/data/counterfact-edit.json --eval known_only=true --eval distinct_subjects=true \\
        --eval capability_corpus=experiments/results/stdlib-docstrings.jsonl --methods rome --checkpoints 1,10,100

A model other than the toy gets its own README section and figure (`sequential-<model>.png`). Runs resume
(rerun the same command after a kill); --readme-only tables what the runs hold so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from editkit.edit.hparams import parse_override
from editkit.evaluate.runner import EvalConfig, parse_checkpoints, read_cases, run_named
from editkit.evaluate.tables import Row, merge_runs
from editkit.io import atomic_write_text, json_safe, replace_section
from editkit.toy import default_dataset

#: edits per batch: MEMIT, EMMET and UltraEdit in batches of 10, the rest one edit at a time (IKE reads each
#: prompt behind the facts_per_prompt edited facts nearest it, its hparams' retrieval)
METHODS = {
    "rome": 1, "r-rome": 1, "memit": 10, "alphaedit": 1, "emmet": 10, "ultraedit": 10, "grace": 1, "wise": 1, "ike": 1,
}  # fmt: skip
DEFAULT = ("rome", "r-rome", "memit", "alphaedit")
README = Path(__file__).parent / "README.md"
SAVED = Path(__file__).parent / "figures" / "sequential"  # each run's table and curves, kept in git


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy")
    p.add_argument("--dataset", default=None, help="an `editkit eval` dataset (default: toy for toy, else counterfact)")
    p.add_argument("--data", default=None, help="the dataset's file, where it is not the shipped one")
    p.add_argument("--eval", action="append", default=[], help="another EvalConfig field, key=value")
    p.add_argument("--methods", default=",".join(DEFAULT), help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--checkpoints", default="1,2,5,10,20,50,100,500,1000")
    p.add_argument("--runs", default="runs/sequential")
    p.add_argument("--device", default="cpu")
    p.add_argument("--capability-every", type=int, default=1, help="measure capability every N edits")
    p.add_argument("--readme-only", action="store_true", help="table the runs as they are; edit nothing")
    return p.parse_args(argv)


def run_dir(args, method: str) -> Path:
    return Path(args.runs) / f"{Path(args.model).name}-{method}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    points = parse_checkpoints(args.checkpoints)
    extra = dict(parse_override(e) for e in args.eval)
    if not args.readme_only:
        dataset = args.dataset or default_dataset(args.model)
        for method in args.methods.split(","):
            out = run_dir(args, method)
            mine = [c for c in points if c % METHODS[method] == 0]  # MEMIT's batches of 10: multiples of 10
            config = EvalConfig(
                model=args.model, dataset=dataset, data=args.data, method=method, mode="sequential",
                batch_size=METHODS[method], checkpoints=mine, limit=mine[-1], generation=False,
                capability_every=args.capability_every, **extra,
            )  # fmt: skip
            print(f"== {method} -> {out}", flush=True)
            run_named(config, out, resume=(out / "config.json").exists(), device=args.device, progress=False)
    given = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--readme-only"]  # the runs' command
    command = "OMP_NUM_THREADS=1 python experiments/sequential.py " + " ".join(given)
    runs = [progress(run_dir(args, m)) for m in args.methods.split(",")]
    write_readme([r for r in runs if r], command.strip(), Path(args.model).name)


def progress(run: Path) -> dict | None:
    """What a (possibly unfinished) sequential run holds: its checkpoints' metrics and its capability steps,
    from its directory (and saved to SAVED/<name>.json, which git keeps), or from that file where the directory
    is gone (runs live in an ignored folder; a fresh clone tables the saved ones). None: neither exists."""
    saved = SAVED / f"{run.name}.json"
    if not (run / "config.json").exists():
        if not saved.exists():
            return None
        held = json.loads(saved.read_text())
        row = Row(**held["row"]) if held["row"] else None
        return _held(held["config"], held["steps"], row)
    config = json.loads((run / "config.json").read_text())
    steps = read_cases(run / "steps.jsonl")
    row = None
    if read_cases(run / "cases.jsonl"):
        (row,) = merge_runs([run])
    SAVED.mkdir(parents=True, exist_ok=True)
    held = {"config": config, "steps": steps, "row": dataclasses.asdict(row) if row else None}
    atomic_write_text(saved, json.dumps(json_safe(held), indent=1) + "\n")
    return _held(config, steps, row)


def _held(config: dict, steps: list[dict], row: Row | None) -> dict:
    points = row.summary.get("checkpoints", []) if row else []
    complete = [p for p in points if p["n"] == p["edits"]]
    return {"method": config["method"], "points": complete, "steps": steps, "row": row, "config": config}


def _pct(block: dict | None, metric: str) -> str:
    return "–" if not block or metric not in block else f"{100 * block[metric]['mean']:.1f}"


def table(runs: list[dict]) -> str:
    """One line per method and checkpoint: both protocols' ES/PS/NS, perplexity, retention."""
    head = "| method | edits | tf:ES | gen:ES | tf:PS | gen:PS | tf:NS | gen:NS | cap:PPL | cap:retention |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        for p in r["points"]:
            tf, gen, cap = p.get("metrics"), p.get("generation_metrics"), p.get("capability") or {}
            ppl = f"{cap['perplexity_before']:.2f} → {cap['perplexity_after']['mean']:.2f}" if cap else "–"
            ret = f"{100 * cap['retention']['mean']:.1f}" if cap.get("retention") else "–"
            cells = [_pct(b, m) for m in ("ES", "PS", "NS") for b in (tf, gen)]
            lines.append(f"| {r['method']} | {p['edits']} | " + " | ".join(cells) + f" | {ppl} | {ret} |")
    return "\n".join(lines)


def write_readme(runs: list[dict], command: str, model: str) -> None:
    """Replace this script's section of experiments/README.md for `model` (or add it), and draw the figure."""
    toy = model == "toy"
    tag, where = ("", "the toy model") if toy else (f"-{model}", model)
    begin, end = f"<!-- sequential{tag}:begin -->", f"<!-- sequential{tag}:end -->"
    probe = runs[0]["config"].get("capability_probe") or {} if runs else {}
    texts = f"{probe.get('texts', '?')} held-out " + ("toy lines" if toy else "texts of the capability corpus")
    reached = ", ".join(f"{r['method']} {r['steps'][-1]['edits'] if r['steps'] else 0} edits" for r in runs)
    figure = ""
    drawable = [r["row"] for r in runs if r["points"]]
    if drawable:
        from editkit.evaluate.plots import plot_rows

        path = plot_rows(drawable, Path(__file__).parent / "figures" / f"sequential{tag}.png")
        figure = f"\n![sequential curves](figures/{path.name})\n"
    section = (
        f"{begin}\n## Sequential editing on {where} (both protocols, capability)\n\n"
        f"```\n{command}\n```\n\nReached so far: {reached}.\n\n{table(runs)}\n{figure}\n"
        "tf: teacher-forced (P(new) > P(true)); gen: the greedy answer starts with the target (NS: with the "
        f"true object); PPL: perplexity on {texts} before → after; retention: of a fixed sample of "
        f"{probe.get('facts', '?')} facts no record edits, those the unedited model answers right, the share whose "
        "top-1 answer is unchanged.\n"
        f"{end}"
    )
    replace_section(README, begin, end, section)


if __name__ == "__main__":
    main()

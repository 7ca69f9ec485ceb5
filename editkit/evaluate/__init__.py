"""Evaluation: benchmark datasets (`load_dataset`), the papers' metrics under the teacher-forced and the
generation protocol, capability (perplexity, retention), resumable, sharded and sequential runs with
checkpoints (`EvalConfig`, `run_eval`, `run_named`), and tables in the papers' layouts (`merge_runs`,
`render`)."""

from editkit.evaluate.datasets import KINDS, load_dataset
from editkit.evaluate.runner import EvalConfig, compare_methods, run_eval, run_named
from editkit.evaluate.tables import merge_runs, render

__all__ = ["KINDS", "EvalConfig", "compare_methods", "load_dataset", "merge_runs", "render", "run_eval", "run_named"]

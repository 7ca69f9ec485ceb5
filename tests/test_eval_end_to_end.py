"""End to end on the shipped toy model: the unedited model and ROME (shipped toy hyper-parameters, single mode)
on the first 10 CounterFact records of the toy world; ROME must succeed on at least 9 of 10 rewrites."""

from editkit.evaluate import compare_methods, load_dataset, merge_runs
from editkit.evaluate.runner import model_fingerprint, read_cases
from editkit.models import toy_dir


def test_rome_on_ten_toy_records(toy, tmp_path):
    records = load_dataset("toy", toy_dir() / "counterfact.json", limit=10)
    before = model_fingerprint(toy.model)
    dirs = compare_methods(toy, records, ["none", "rome"], tmp_path, "toy", "toy", generation=False)
    assert model_fingerprint(toy.model) == before  # every edit reverted
    none, rome = merge_runs(dirs)
    es = lambda row: row.summary["metrics"]["ES"]["mean"]  # noqa: E731
    assert es(rome) >= 0.9 and es(none) <= 0.3, (es(rome), es(none))
    assert rome.summary["metrics"]["PS"]["mean"] > none.summary["metrics"]["PS"]["mean"]
    assert rome.summary["metrics"]["NS"]["mean"] >= 0.5
    assert [c["case_id"] for c in read_cases(dirs[1] / "cases.jsonl")] == [r.case_id for r in records]

"""Dataset-level tracing: resumable HDF5 runs, token buckets, the AIE's shape on the toy model."""

import json

import h5py
import numpy as np
import pytest

from editkit.errors import EditkitError
from editkit.locate.dataset import (
    average_indirect_effect,
    bucket_rows,
    load_trace_cases,
    plot_aie,
    trace_cases,
    trace_dataset,
)
from editkit.models import data_dir

KW = dict(kinds=["hidden"], samples=3, noise=0.3)


def test_bucket_rows_by_hand():
    scores = np.arange(8 * 2, dtype=float).reshape(8, 2)  # 8 tokens, 2 layers; subject = tokens 2..4
    rows = bucket_rows(scores, (2, 5))
    np.testing.assert_array_equal(rows[0], scores[2])  # first subject token
    np.testing.assert_array_equal(rows[1], scores[3])  # middle
    np.testing.assert_array_equal(rows[2], scores[4])  # last subject token
    np.testing.assert_array_equal(rows[3], scores[5])  # first subsequent
    np.testing.assert_array_equal(rows[4], scores[6:7].mean(0))  # further
    np.testing.assert_array_equal(rows[5], scores[7])  # last token
    two = bucket_rows(scores[:4], (0, 2))  # no middle tokens, no further tokens
    assert np.isnan(two[1]).all() and np.isnan(two[4]).all()


def test_known_1000_and_counterfact_records_become_cases(toy_world):
    known = json.loads((data_dir() / "known_1000.json").read_text())[:3]
    cases = trace_cases(known)
    assert cases[0].prompt == known[0]["prompt"] and cases[0].answer == known[0]["attribute"]
    cf = load_trace_cases(str(data_dir() / "toy" / "counterfact.json"), limit=2)
    assert len(cf) == 2 and cf[0].subject in cf[0].prompt
    with pytest.raises(EditkitError, match="record 1 is not a known_1000 or CounterFact record"):
        trace_cases([known[0], {"prompt": "x"}])


def test_counterfact_prompts_with_other_braces_fill_their_subject(toy_world):
    """The subject goes where `{}` is; other braces (code, set notation) stay as they are (str.format choked)."""
    record = {
        "case_id": 7,
        "requested_rewrite": {
            "prompt": "In {} the set {x} is written",
            "subject": "LaTeX",
            "target_new": {"str": "braces"},
            "target_true": {"str": "brackets"},
        },
        "paraphrase_prompts": [],
        "neighborhood_prompts": [],
    }
    (case,) = trace_cases([record])
    assert (case.case_id, case.prompt, case.answer) == ("7", "In LaTeX the set {x} is written", "brackets")


def test_resumable_run_and_aie(toy, tmp_path):
    cases = load_trace_cases("toy", limit=8)
    path = tmp_path / "traces.h5"
    first = trace_dataset(*toy, cases[:5], path, **KW)
    assert first["traced"] + first["skipped_wrong"] == 5 and first["traced"] >= 4
    # An interruption mid-case leaves a group without "done": it is redone, nothing else is.
    with h5py.File(path, "a") as f:
        f["cases"].create_group("000005").attrs["case_id"] = "torn"
    again = trace_dataset(*toy, cases, path, **KW)
    assert again["resumed"] == 5 and again["traced"] + again["skipped_wrong"] == 3
    with h5py.File(path, "r") as f:
        assert sorted(f["cases"]) == [f"{i:06d}" for i in range(8)]
        assert f["cases/000005"].attrs["case_id"] == cases[5].case_id
    with pytest.raises(EditkitError, match="holds a run with other settings"):
        trace_dataset(*toy, cases, path, kinds=["hidden"], samples=4, noise=0.3)

    aie = average_indirect_effect(path)
    assert aie.n == first["traced"] + again["traced"] and aie.mean["hidden"].shape == (6, toy[2].n_layers)
    subject, last_token = aie.mean["hidden"][:3], aie.mean["hidden"][5]
    # The paper's picture: subject tokens matter early (and not at all at the last layer), the last token late.
    assert np.nanmax(subject[:, 0]) > 0.03 and np.allclose(np.nan_to_num(subject[:, -1]), 0, atol=1e-5)
    assert last_token[-1] > last_token[0] and aie.peaks()["hidden"]["last token"] == toy[2].n_layers - 1
    assert plot_aie(aie, tmp_path / "aie.png").stat().st_size > 0


def test_corrupt_h5_is_a_clear_error(toy, tmp_path):
    bad = tmp_path / "traces.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(EditkitError, match="is not a readable HDF5 file"):
        trace_dataset(*toy, load_trace_cases("toy", limit=1), bad, **KW)


def test_shards_merge_into_the_unsharded_average(toy, tmp_path):
    cases = load_trace_cases("toy", limit=6)
    whole = tmp_path / "traces.h5"
    trace_dataset(*toy, cases, whole, **KW)
    shards = [tmp_path / f"traces-{i}-of-2.h5" for i in range(2)]
    for i, path in enumerate(shards):
        trace_dataset(*toy, cases, path, shard=f"{i}/2", **KW)
    with h5py.File(shards[1], "r") as f:
        assert sorted(f["cases"]) == ["000001", "000003", "000005"]  # keys are indices among all cases
    a, b = average_indirect_effect(whole), average_indirect_effect(shards)
    assert a.n == b.n >= 5 and all(np.array_equal(a.mean[k], b.mean[k], equal_nan=True) for k in a.kinds)
    assert average_indirect_effect([whole, *shards]).n == a.n  # a case in two files counts once
    other = tmp_path / "other.h5"
    trace_dataset(*toy, cases[:1], other, kinds=["hidden"], samples=2, noise=0.3)
    with pytest.raises(EditkitError, match="different settings"):
        average_indirect_effect([whole, other])
    with pytest.raises(EditkitError, match="bad shard '2/2'"):
        trace_dataset(*toy, cases, tmp_path / "x.h5", shard="2/2", **KW)

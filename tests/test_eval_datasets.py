"""Loaders on the real shipped benchmark prefixes (tests/data/, see SOURCES.md), on the toy world, and on
malformed records: every error names the record index and the field."""

import copy
import json

import pytest

from editkit.errors import EditkitError
from editkit.evaluate import datasets as D
from tests.eval_helpers import DATA

CF_RECORD = {
    "case_id": 7,
    "pararel_idx": 3,
    "requested_rewrite": {
        "prompt": "The mother tongue of {} is",
        "relation_id": "P103",
        "subject": "Danielle Darrieux",
        "target_new": {"str": "English", "id": "Q1860"},
        "target_true": {"str": "French", "id": "Q150"},
    },
    "paraphrase_prompts": ["Danielle Darrieux grew up speaking", "Danielle Darrieux, a native speaker of"],
    "neighborhood_prompts": ["Michel Rocard is a native speaker of"],
    "attribute_prompts": ["Toko Yasuda speaks"],
    "generation_prompts": ["Danielle Darrieux's mother tongue is"],
}


def test_zsre_mend_prefix():
    recs = D.load_dataset("zsre", DATA / "zsre_mend_eval-prefix12.json")
    assert len(recs) == 12 and [r.case_id for r in recs] == list(range(12))
    r = recs[0]
    assert (r.subject, r.prompt, r.target_new) == (
        "Watts Humphrey",
        "What university did {} attend?",
        "Illinois Institute of Technology",
    )
    assert r.paraphrase_prompts == ("What university did Watts Humphrey take part in?",)
    assert (r.loc, r.loc_answer) == ("nq question: who played desmond doss father in hacksaw ridge", "Hugo Weaving")
    req = r.request()
    assert req.text == "What university did Watts Humphrey attend?" and req.target_true is None


def test_easyedit_counterfact_prefix():
    recs = D.load_dataset("easyedit", DATA / "counterfact-edit-prefix12.json")
    r = recs[0]
    assert (r.prompt, r.subject, r.target_new, r.ground_truth) == (
        "The mother tongue of {} is", "Danielle Darrieux", "English", "French"
    )  # fmt: skip
    assert r.rephrase_prompts == ("Where Danielle Darrieux is from, people speak the language of",)
    assert r.locality == (("Michel Rocard is a native speaker of", "French"),) and r.portability == ()


def test_counterfact_in_easyedit_layout_reads_as_counterfact():
    recs = D.load_dataset("counterfact", DATA / "counterfact-edit-prefix12.json")
    easy = D.load_dataset("easyedit", DATA / "counterfact-edit-prefix12.json")
    assert len(recs) == 12 and [r.case_id for r in recs] == [r.case_id for r in easy]
    r = recs[0]
    assert (r.prompt, r.subject, r.target_new, r.target_true) == (
        "The mother tongue of {} is", "Danielle Darrieux", "English", "French"
    )  # fmt: skip
    assert r.paraphrase_prompts == ("Where Danielle Darrieux is from, people speak the language of",)
    assert r.neighborhood_prompts == ("Michel Rocard is a native speaker of",)
    assert r.request() == easy[0].request()
    raw = json.loads((DATA / "counterfact-edit-prefix12.json").read_text())[:2]
    raw[1]["locality_ground_truth"] = "German"
    with pytest.raises(EditkitError, match="record 1: field 'locality_ground_truth' is 'German', not the ground_truth"):
        D.parse_records(raw, "counterfact", "cf.json")


def test_easyedit_knowedit_nested_locality_and_portability():
    raw = [
        {
            "subject": "Watts Humphrey",
            "prompt": "Watts Humphrey attended",
            "target_new": "MIT",
            "ground_truth": ["Trinity College"],
            "portability": {
                "Reasoning": [{"prompt": "The city of Watts Humphrey's university is", "ground_truth": [["Boston"]]}]
            },
            "locality": {"Relation_Specificity": [{"prompt": "Watts Humphrey was born in", "ground_truth": "Dublin"}]},
        }
    ]
    (r,) = D.parse_records(raw, "easyedit")
    assert r.prompt == "{} attended" and r.ground_truth == "Trinity College"
    assert r.portability == (("The city of Watts Humphrey's university is", "Boston"),)
    assert r.locality == (("Watts Humphrey was born in", "Dublin"),)


def test_known_1000_prefix():
    recs = D.load_dataset("known_1000", DATA / "known_1000-prefix12.json")
    assert recs[1].subject == "Beats Music" and recs[1].template == "{} is owned by" and recs[1].attribute == "Apple"


def test_counterfact_layout_and_toy_world():
    (r,) = D.parse_records([CF_RECORD], "counterfact")
    assert (r.case_id, r.prompt, r.target_new, r.target_true, r.target_new_id) == (
        7, "The mother tongue of {} is", "English", "French", "Q1860"
    )  # fmt: skip
    assert len(r.paraphrase_prompts) == 2 and r.request().text == "The mother tongue of Danielle Darrieux is"
    toy = D.load_dataset("toy", DATA.parents[1] / "data" / "toy" / "counterfact.json")
    assert len(toy) >= 1000 and all(len(t.neighborhood_prompts) == 10 for t in toy[:20])


@pytest.mark.parametrize(
    "path,value,message",
    [
        (("requested_rewrite", "subject"), None, "record 1: field 'requested_rewrite.subject' is missing"),
        (
            ("requested_rewrite", "target_new", "str"),
            "",
            "'requested_rewrite.target_new.str' must be a non-empty string",
        ),
        (("case_id",), "7", "record 1: field 'case_id' must be a JSON int"),
        (("paraphrase_prompts",), [1, 2], "field 'paraphrase_prompts' must be a list of non-empty strings"),
        (("requested_rewrite", "prompt"), "The mother tongue is", "contains neither {} nor the subject"),
    ],
)
def test_malformed_records_name_index_and_field(path, value, message):
    bad = copy.deepcopy(CF_RECORD)
    bad["case_id"] = 8
    parent = bad
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(EditkitError, match=message.replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
        D.parse_records([CF_RECORD, bad], "counterfact", "cf.json")


def test_bad_files_and_names(tmp_path):
    with pytest.raises(EditkitError, match="case_id 7 appears twice"):
        D.parse_records([CF_RECORD, CF_RECORD], "counterfact")
    with pytest.raises(EditkitError, match="record 0: is a str, expected a JSON object"):
        D.parse_records(["x"], "zsre")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(EditkitError, match="not valid JSON"):
        D.load_dataset("zsre", tmp_path / "bad.json")
    with pytest.raises(EditkitError, match="does not exist; pass an existing JSON file with --data"):
        D.load_dataset("zsre", tmp_path / "missing.json")
    with pytest.raises(EditkitError, match="unknown dataset 'cf'"):
        D.load_dataset("cf", DATA / "known_1000-prefix12.json")
    with pytest.raises(EditkitError, match="no download location; pass the file with --data"):
        D.load_dataset("easyedit")


def test_offline_download_says_how_to_pass_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(D, "ROME_DATA_URL", "http://127.0.0.1:9/")
    with pytest.raises(EditkitError, match=r"could not download http://127\.0\.0\.1:9/counterfact\.json .*--data PATH"):
        D.load_dataset("counterfact")
    cached = tmp_path / "dsets" / "zsre_mend_eval.json"  # a file already in the cache is used, not downloaded
    cached.parent.mkdir(parents=True)
    cached.write_bytes((DATA / "zsre_mend_eval-prefix12.json").read_bytes())
    assert len(D.load_dataset("zsre")) == 12


def test_limit_offset_and_seeded_sample():
    path = DATA / "zsre_mend_eval-prefix12.json"
    assert [r.case_id for r in D.load_dataset("zsre", path, limit=3, offset=2)] == [2, 3, 4]
    a = [r.case_id for r in D.load_dataset("zsre", path, sample=5, seed=1)]
    assert a == [r.case_id for r in D.load_dataset("zsre", path, sample=5, seed=1)] and a == sorted(a) and len(a) == 5
    assert a != [r.case_id for r in D.load_dataset("zsre", path, sample=5, seed=2)]
    assert json.loads(path.read_text())[0]["subject"] == "Watts Humphrey"


def test_distinct_subjects_keeps_each_subjects_first_record():
    from editkit.models import toy_dir

    path = toy_dir() / "counterfact.json"
    subjects = [r["requested_rewrite"]["subject"] for r in json.loads(path.read_text())]
    first = [i for i, s in enumerate(subjects) if s not in subjects[:i]]
    got = D.load_dataset("toy", path, limit=5, distinct_subjects=True)
    assert [r.case_id for r in got] == first[:5]
    assert len({r.request().subject for r in got}) == 5 and first[:2] == [0, 4]  # four facts per toy subject


def test_keep_filter_sees_only_the_records_the_slice_needs():
    from editkit.models import toy_dir

    path = toy_dir() / "counterfact.json"
    seen = []

    def every_third(records):
        seen.extend(r.case_id for r in records)
        return [r.case_id % 3 == 0 for r in records]

    everything = D.load_dataset("toy", path)
    got = D.load_dataset("toy", path, limit=5, offset=2, keep=every_third)
    assert [r.case_id for r in got] == [r.case_id for r in everything if r.case_id % 3 == 0][2:7]
    assert len(seen) == 256 < len(everything)  # one chunk was enough
    seen.clear()
    distinct = D.load_dataset("toy", path, limit=100, keep=every_third, distinct_subjects=True)
    wanted = D.first_per_subject([r for r in everything if r.case_id % 3 == 0])[:100]
    assert [r.case_id for r in distinct] == [r.case_id for r in wanted] and len(seen) < len(everything)
    assert len(D.load_dataset("toy", path, keep=every_third)) == len(everything[::3])

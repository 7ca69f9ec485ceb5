"""`editkit features dashboard` on the toy model and its block-0 SAE, opened in a real headless browser."""

import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from editkit.cli import app
from editkit.models import toy_dir

SAE_DIR = toy_dir() / "sae-blocks.0.hook_resid_post"
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


class Elements(HTMLParser):
    """Counts of elements by id and class, and the attributes of elements with an id, in a DOM dump."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: dict[str, dict] = {}
        self.classes: dict[str, int] = {}
        self.tags: dict[str, int] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if "id" in a:
            self.ids[a["id"]] = a
        for c in (a.get("class") or "").split():
            self.classes[c] = self.classes.get(c, 0) + 1


def rendered(page) -> Elements:
    """The DOM of `page` after a headless Chromium loaded it (scripts and image decoding done)."""
    out = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return Elements(out.stdout)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    out = tmp_path_factory.mktemp("dash") / "d"
    res = CliRunner().invoke(
        app,
        ["features", "dashboard", "toy", str(SAE_DIR), "--top-n", "3", "--texts", "96",
         "--facts", str(toy_dir() / "counterfact.json"), "--n-facts", "12", "--out", str(out), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return out, json.loads(res.output)


def test_dashboard_writes_an_index_and_one_page_per_feature(dashboard):
    out, data = dashboard
    assert len(data["features"]) == 3 and data["facts"] == 12
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.html"] + [f"feature-{i}.html" for i in data["features"]]
    )
    # some feature among the three densest carries at least one of the 12 facts
    pages = [(out / f"feature-{i}.html").read_text() for i in data["features"]]
    assert any("class='fact'" in p for p in pages)


@pytest.mark.skipif(BROWSER is None, reason="no headless browser: apt-get install chromium to run this test")
def test_dashboard_pages_open_in_a_headless_browser(dashboard):
    out, data = dashboard
    index = rendered(out / "index.html")
    assert "features" in index.ids and index.classes.get("feature") == 3
    for i in data["features"]:
        page = rendered(out / f"feature-{i}.html")
        assert {"histogram", "contexts", "promoted", "suppressed", "facts", "density"} <= set(page.ids)
        assert int(page.ids["histogram"].get("data-width", 0)) > 100  # the browser decoded the inline PNG
        assert page.classes.get("context", 0) >= 1 and page.tags.get("mark", 0) == page.classes["context"]
        assert page.classes.get("tok", 0) > page.classes["context"]


def test_dashboard_needs_exactly_one_way_to_choose_features(tmp_path):
    res = CliRunner().invoke(app, ["features", "dashboard", "toy", str(SAE_DIR), "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "exactly one of --features" in res.output
    res = CliRunner().invoke(
        app, ["features", "dashboard", "toy", str(SAE_DIR), "--features", "3,x", "--out", str(tmp_path / "d")]
    )
    assert res.exit_code == 2 and "'3,x' is not a comma-separated list" in res.output
    assert not (tmp_path / "d").exists()

"""Thread count: --threads, else EDITKIT_THREADS, else the cores free of other work; bad values are one line."""

import os

import pytest
import torch
from typer.testing import CliRunner

from editkit.cli import app
from editkit.errors import EditkitError
from editkit.threads import choose_threads, set_threads


def test_requested_then_environment_then_free_cores(monkeypatch):
    monkeypatch.setenv("EDITKIT_THREADS", "3")
    assert choose_threads(2) == 2
    assert choose_threads() == 3
    monkeypatch.delenv("EDITKIT_THREADS")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert choose_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))  # every core busy: one thread
    assert choose_threads() == 1


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_bad_values_are_clear_errors(monkeypatch, value):
    monkeypatch.setenv("EDITKIT_THREADS", value)
    with pytest.raises(EditkitError, match="EDITKIT_THREADS"):
        choose_threads()


def test_cli_option_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        assert CliRunner().invoke(app, ["--threads", "1", "models", "list"]).exit_code == 0
        assert torch.get_num_threads() == 1
        bad = CliRunner().invoke(app, ["--threads", "0", "models", "list"])
        assert bad.exit_code == 2 and "give at least 1 thread" in bad.output
    finally:
        set_threads(before)

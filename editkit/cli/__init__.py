"""The `editkit` command line: a module per command group over shared option definitions (`common`). Each command
parses its arguments, calls one library function and renders the result with rich; no logic lives here."""

# isort: off
# Importing a group's module registers its commands; this order is the order `editkit --help` lists them in.
from editkit.cli import models, locate, demo, evaluate, edit, features  # noqa: F401
from editkit.cli.common import app

# isort: on

__all__ = ["app"]

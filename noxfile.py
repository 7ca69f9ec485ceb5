"""nox sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`."""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev,gguf]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "editkit", "tests", "experiments", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".")
    from pathlib import Path

    for script in sorted(Path("experiments/bench").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)

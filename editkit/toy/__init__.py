"""The toy world shipped in data/toy (a small GPT-2 trained on a seeded fictional world, the project's fixture):
where its files are, and the one place the name `toy` is resolved. The library takes its data as inputs; what
the toy world supplies for them is in `editkit.toy.sources`, its runtime world in `editkit.toy.world`, and the
generator that rebuilt it in `editkit.toy.generate` (which nothing at run time imports)."""

from __future__ import annotations

import os
from pathlib import Path

from editkit.errors import EditkitError
from editkit.io import data_dir

NAME = "toy"
#: The toy world's parts, as files of `toy_dir()`.
FILES = {"model": "model", "world": "world.json", "corpus": "corpus.txt", "counterfact": "counterfact.json"}


def _root() -> Path:
    root = os.environ.get("EDITKIT_TOY_DIR")
    return Path(root) if root else data_dir() / NAME


def toy_dir() -> Path:
    """The shipped toy world: `$EDITKIT_TOY_DIR`, else `data/toy` of the checkout editkit was installed from."""
    path = _root()
    if not (path / "model" / "config.json").exists():
        raise EditkitError(
            f"toy model not found at {path}/model; install editkit from a source checkout (pip install -e .) "
            "or set EDITKIT_TOY_DIR to a directory made by experiments/train_toy_model.py"
        )
    return path


def default_dataset(model: str) -> str:
    """The dataset an evaluation of `model` uses unless told: the toy world's records for the toy model only,
    CounterFact for any other (toy-world facts mean nothing to a pretrained model)."""
    return NAME if is_toy(model) else "counterfact"


def is_toy(name: str | os.PathLike | None) -> bool:
    """Whether `name` (a model, dataset or corpus name, or a path) means the toy world or its model directory."""
    if name is None:
        return False
    if str(name) == NAME:
        return True
    path = Path(name).expanduser()
    return path.is_dir() and path.resolve() == (_root() / FILES["model"]).resolve()


def toy_path(name: str | None, part: str) -> Path | None:
    """The file of the toy world's `part` (model, world, corpus, counterfact) when `name` is `toy`, else None."""
    return toy_dir() / FILES[part] if name == NAME else None


def load_world():
    """The shipped toy world (`world.json`)."""
    from editkit.toy.world import World

    return World.load(toy_dir() / FILES["world"])

"""A local English text that every Python installation has: the docstrings of the standard library, one
paragraph per line of a .jsonl file (field `text`), in a fixed order. For `--corpus FILE` where no other
text is at hand. `--site-packages` appends the docstrings of the installed third-party packages (torch,
transformers, numpy, ... in sorted order) for a larger corpus; `--prefix` starts every line with a string,
e.g. the tokenizer's BOS for a model whose tokenizer adds none (SmolLM2 puts an attention sink of norm
~20,000 on whatever token comes first; a special token there is left out of SAE training and evaluation).

    python experiments/stdlib_corpus.py --out runs/stdlib-docstrings.jsonl
    python experiments/stdlib_corpus.py --site-packages --shuffle 0 --prefix "<|im_start|>" \
        --out runs/docstrings-bos.jsonl
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sysconfig
from pathlib import Path


def paragraphs(root: Path, min_chars: int = 200, skip: tuple[str, ...] = ("site-packages",)):
    """Docstring paragraphs of at least `min_chars` characters, whitespace joined, files in sorted order."""
    for path in sorted(root.rglob("*.py")):
        if any(part in ("test", "tests", "idlelib", "lib2to3", *skip) for part in path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                for para in (doc or "").split("\n\n"):
                    text = " ".join(para.split())
                    if len(text) >= min_chars:
                        yield text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--site-packages", action="store_true", help="append the installed packages' docstrings")
    ap.add_argument("--shuffle", type=int, default=None, metavar="SEED", help="shuffle the lines with this seed")
    ap.add_argument("--prefix", default="", help="a string every line starts with (e.g. a BOS token)")
    args = ap.parse_args()
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = list(paragraphs(root))
    if args.site_packages:
        texts += paragraphs(Path(sysconfig.get_paths()["purelib"]), skip=("editkit",))
    lines = [json.dumps({"text": args.prefix + t}) for t in dict.fromkeys(texts)]
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps({"stdlib": str(root), "paragraphs": len(lines), "chars": sum(map(len, lines))}))


if __name__ == "__main__":
    main()

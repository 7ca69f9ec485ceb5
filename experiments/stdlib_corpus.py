"""A local English text that every Python installation has: the docstrings of the standard library, one
paragraph per line of a .jsonl file (field `text`), in a fixed order. For `--corpus FILE` where no other
text is at hand.

    python experiments/stdlib_corpus.py --out runs/stdlib-docstrings.jsonl
"""

from __future__ import annotations

import argparse
import ast
import json
import sysconfig
from pathlib import Path


def paragraphs(root: Path, min_chars: int = 200):
    """Docstring paragraphs of at least `min_chars` characters, whitespace joined, files in sorted order."""
    for path in sorted(root.rglob("*.py")):
        if any(part in ("test", "tests", "idlelib", "site-packages", "lib2to3") for part in path.parts):
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
    args = ap.parse_args()
    root = Path(sysconfig.get_paths()["stdlib"])
    lines = [json.dumps({"text": t}) for t in dict.fromkeys(paragraphs(root))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps({"stdlib": str(root), "paragraphs": len(lines), "chars": sum(map(len, lines))}))


if __name__ == "__main__":
    main()

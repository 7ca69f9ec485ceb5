"""Reference texts and the TF-IDF model behind the reference score RS: ROME's `attribute_snippets.json`,
`idf.npy` and `tfidf_vocab.json` when given, or the sentences of a corpus (the toy world's)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from editkit.errors import EditkitError


@dataclass
class References:
    """Texts about subjects that have a given (relation, object), and a fitted TF-IDF vectorizer."""

    texts: dict[tuple[str, str], list[str]]
    vectorizer: object

    def for_record(self, record) -> list[str]:
        """Reference texts about the record's new object (ROME keys them by relation and target id)."""
        return self.texts.get((record.relation_id, record.target_new_id or record.target_new), [])


def _vectorizer_from_rome(tfidf_dir: Path):
    from sklearn.feature_extraction.text import TfidfVectorizer

    idf_file, vocab_file = tfidf_dir / "idf.npy", tfidf_dir / "tfidf_vocab.json"
    for f in (idf_file, vocab_file):
        if not f.is_file():
            raise EditkitError(
                f"{f} not found; --tfidf takes the directory holding ROME's idf.npy and tfidf_vocab.json"
            )
    vec = TfidfVectorizer()
    vec.vocabulary_ = json.loads(vocab_file.read_text())
    vec.idf_ = np.load(idf_file)
    return vec


def rome_references(snippets_file: str | Path, tfidf_dir: str | Path) -> References:
    """ROME's reference texts (`attribute_snippets.json`) and its TF-IDF statistics."""
    raw = json.loads(Path(snippets_file).read_text())
    texts: dict[tuple[str, str], list[str]] = {}
    for entry in raw:
        texts.setdefault((entry["relation_id"], entry["target_id"]), []).extend(s["text"] for s in entry["samples"])
    return References(texts, _vectorizer_from_rome(Path(tfidf_dir)))


def corpus_references(corpus_file: str | Path, records) -> References:
    """The sentences of a one-text-per-line corpus that state each record's new object, TF-IDF fitted on the
    corpus (the toy world's references)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    lines = [ln for ln in Path(corpus_file).read_text().splitlines() if ln.strip()]
    vec = TfidfVectorizer().fit(lines)
    texts = {}
    for r in records:
        key = (r.relation_id, r.target_new_id or r.target_new)
        if key not in texts:
            texts[key] = [ln for ln in lines if r.target_new in ln]
    return References(texts, vec)

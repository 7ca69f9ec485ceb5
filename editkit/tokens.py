"""Tokenization helpers that get right what breaks in practice: subject spans, target tokens, padding."""

from __future__ import annotations

import torch

from editkit.errors import EditkitError


def pad_id(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS token, else 0 (GPT-2 has no pad)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text` as the model sees it as a prompt (with the tokenizer's own BOS, if it adds one);
    a text longer than the model's context (`tokenizer.model_max_length`, set by load_model) is an error."""
    ids = list(tokenizer(text, verbose=False)["input_ids"])
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and len(ids) > limit:
        short = text if len(text) <= 60 else f"{text[:30]}…{text[-25:]}"
        raise EditkitError(
            f"text {short!r} is {len(ids)} tokens, longer than the model's context of {limit} tokens; shorten it"
        )
    return ids


def bos_to_prepend(tokenizer, prepend_bos: bool, what: str, fix: str) -> int | None:
    """The BOS id to put first on every text (None when `prepend_bos` is off); a tokenizer without a BOS
    token is one error line: `what` asks for it, `fix` says what to do."""
    if not prepend_bos:
        return None
    if tokenizer.bos_token_id is None:
        raise EditkitError(f"{what}, but this tokenizer has no BOS token (bos_token_id is None); {fix}")
    return int(tokenizer.bos_token_id)


def with_bos(ids: list[int], bos: int | None) -> list[int]:
    """`ids` with `bos` first, unless `bos` is None or they already start with it (a tokenizer that adds its
    own BOS gets no second one, as in TransformerLens)."""
    return list(ids) if bos is None or ids[:1] == [bos] else [bos, *ids]


def pad_rows(rows: list[list[int]], pad: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded with `pad` into `[n, longest]` ids and their attention mask (1 on real tokens).

    Right padding keeps each row's positions as when run alone (score per-row at `lengths - 1`);
    left padding puts every row's last token in the last column (for generation).
    """
    if side not in ("left", "right"):
        raise EditkitError(f"padding_side must be 'left' or 'right', got {side!r}")
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def batch_encode(tokenizer, texts: list[str], padding_side: str = "right") -> dict[str, torch.Tensor]:
    """`encode` of each text padded (`pad_rows`) into `input_ids`/`attention_mask` tensors, plus `lengths`."""
    if padding_side not in ("left", "right"):
        raise EditkitError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    rows = [encode(tokenizer, t) for t in texts]
    empty = [t for t, r in zip(texts, rows, strict=True) if not r]
    if empty:
        raise EditkitError(f"text {empty[0]!r} tokenizes to nothing; pass a non-empty prompt")
    ids, mask = pad_rows(rows, pad_id(tokenizer), padding_side)
    return {"input_ids": ids, "attention_mask": mask, "lengths": torch.tensor([len(r) for r in rows])}


def subject_span(tokenizer, prompt: str, subject: str) -> tuple[int, int]:
    """Token range [start, end) of the first occurrence of `subject` in `prompt` (ids from `encode`).

    Works from character offsets, so it holds whether the subject's tokens carry a leading space (BPE
    'Ġ', SentencePiece '▁') or not, and whether the tokenizer adds a BOS token.
    """
    if not subject.strip():
        raise EditkitError("subject is empty; pass the subject's name as it appears in the prompt")
    start_char = prompt.find(subject)
    if start_char < 0:
        raise EditkitError(f"subject {subject!r} not found in prompt {prompt!r}; the subject must appear verbatim")
    end_char = start_char + len(subject)
    enc = tokenizer(prompt, return_offsets_mapping=True, verbose=False)
    tokens = [
        i
        for i, (a, b) in enumerate(enc["offset_mapping"])
        if b > a and a < end_char and b > start_char and prompt[a:b].strip()
    ]
    if not tokens:
        raise EditkitError(f"subject {subject!r} covers no token of prompt {prompt!r}")
    return tokens[0], tokens[-1] + 1


def target_ids(tokenizer, prompt: str, target: str) -> list[int]:
    """Tokens of `target` as the continuation of `prompt` (with the leading space the model expects).

    Tokenizes prompt and prompt + " " + target and takes the difference, which handles GPT-2's 'Ġ' and
    SentencePiece's '▁' alike.
    """
    target = target.strip()
    if not target:
        raise EditkitError("target is empty; pass the answer text, e.g. --target Paris")
    head = encode(tokenizer, prompt)
    full = encode(tokenizer, f"{prompt} {target}")
    if full[: len(head)] != head:  # the boundary merged with the prompt's last token: tokenize alone
        ids = list(tokenizer(f" {target}", add_special_tokens=False)["input_ids"])
    else:
        ids = full[len(head) :]
    if not ids:
        raise EditkitError(f"target {target!r} tokenizes to nothing; pass a target with visible text")
    return ids

"""`EditResult`: what an edit changed, enough to re-apply it to the original model and to revert it bit for bit.

Deltas are kept as the ordered list of updates the method wrote (rank-one factors `ΔW = v uᵀ` where the
update is rank one), and the original bytes of every touched weight: float subtraction is not exact, so a
revert copies the originals back instead of subtracting.

Methods whose edit is not a weight delta keep it beside the model instead: side memories (GRACE, WISE;
`editkit.edit.memory`), attached on apply and detached on revert, and a prompt context (IKE) that the
evaluation prepends to every prompt it scores. The fingerprints then cover the attached memories too.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from editkit import tensors
from editkit.edit import memory as side
from editkit.edit.memory import Memory
from editkit.errors import EditkitError
from editkit.io import atomic_directory
from editkit.models.adapters import get_module, weight_out_in
from editkit.requests import EditRequest

META, TENSORS = "edit.json", "deltas.safetensors"
#: The tensors a Delta may carry (each saved as delta.<i>.<field>).
TENSOR_FIELDS = ("u", "v", "dense", "keys", "values", "state")

#: the text a prompt is read behind (an in-context edit's, chosen per prompt); None: no context
Context = Callable[[str], str] | None


def behind(context: Context, prompts: Iterable[str]) -> list[str]:
    """`prompts` as the model is given them: each behind its context, if there is one."""
    return [context(p) + p if context else p for p in prompts]


@dataclass
class Delta:
    """One update of one `mlp_out` module's `[out, in]` weight: `v uᵀ` (rank one) or `dense`, plus the keys
    it wrote and the values v* they should now produce (for checks and for AlphaEdit's preserved keys), and any
    running state a lifelong method carries along the edit chain (UltraEdit's normalisation statistics)."""

    module: str
    u: torch.Tensor | None = None
    v: torch.Tensor | None = None
    dense: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    state: torch.Tensor | None = None

    def matrix(self) -> torch.Tensor:
        """ΔW as a float32 `[out, in]` matrix; the outer product rounds each element once, the same everywhere."""
        return torch.outer(self.v, self.u) if self.dense is None else self.dense


def weight(model, module: str) -> torch.Tensor:
    return weight_out_in(get_module(model, module))


@torch.no_grad()
def write(model, delta: Delta) -> None:
    """W ← W + ΔW, added in (at least) float32 and rounded to the weight's dtype: the one way deltas are written."""
    w = weight(model, delta.module)
    acc = torch.promote_types(w.dtype, torch.float32)
    w.copy_((w.to(acc) + delta.matrix().to(w.device, acc)).to(w.dtype))


@dataclass
class EditResult:
    """Touched modules, their deltas in order, the original weights and fingerprints before and after; side
    memories read beside the weights, and a context to prepend to prompts (empty for weight edits)."""

    method: str
    hparams: dict
    requests: list[EditRequest] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    original: dict[str, torch.Tensor] = field(default_factory=dict)
    fingerprint: str = ""
    edited_fingerprint: str = ""
    model: str = ""
    memories: list[Memory] = field(default_factory=list)
    context: str = ""

    def context_for(self, prompt: str) -> str:
        """The text `prompt` is read behind: `context` ('' for a weight or memory edit), or the part of it its
        method keeps for this prompt (IKE's facts_per_prompt: the edited facts nearest the prompt)."""
        from editkit.edit.registry import get

        read = get(self.method).reads if self.context else None
        return read(self, prompt) if read else self.context

    @property
    def reader(self) -> Context:
        """`context_for` where the edit has a context, else None (scoring then reads prompts bare)."""
        return self.context_for if self.context else None

    @property
    def modules(self) -> list[str]:
        return list(self.original)

    @property
    def sites(self) -> list[str]:
        """Every module the edit writes (weights) or reads beside (side memories)."""
        return list(dict.fromkeys([*self.modules, *(m.module for m in self.memories)]))

    def push(self, model, delta: Delta) -> None:
        """Write `delta` into `model` and record it (keeping the module's original weight on first touch);
        a delta with a NaN or infinite ΔW, key k or value v* is refused before anything is written."""
        bad = [k for k in TENSOR_FIELDS if not _finite(getattr(delta, k))]
        if bad:
            names = {"u": "ΔW", "v": "ΔW", "dense": "ΔW", "keys": "key k", "values": "target value v*"}
            what = names.get(bad[0], bad[0])
            raise EditkitError(
                f"{self.method} computed a non-finite {what} (NaN or Inf) for {delta.module}; no edit was applied. "
                "Check the model's weights and the hyper-parameters (e.g. a lower v_lr or lr)"
            )
        if delta.module not in self.original:
            self.original[delta.module] = weight(model, delta.module).detach().clone().cpu()
        write(model, delta)
        self.deltas.append(delta)

    def add_memory(self, model, memory: Memory) -> None:
        """Attach a new side memory to `model` and record it."""
        side.attach(model, memory)
        self.memories.append(memory)

    def seal(self, model) -> EditResult:
        """Compute the fingerprints once all deltas are written and memories attached."""
        self.fingerprint = tensors.fingerprint(self.original.items())
        self.edited_fingerprint = self._state(model)
        return self

    def rollback(self, model) -> None:
        """Undo the last request bit for bit, for side memories that journal their edits (GRACE)."""
        undo = [side.UNDO.get(m.kind) for m in self.memories]
        if not self.memories or self.deltas or None in undo or not self.requests:
            raise EditkitError(f"{self.method} edits cannot be rolled back one by one; revert the whole edit")
        self._expect(model, self.edited_fingerprint, "a model carrying this edit (its state differs)")
        for m, fn in zip(self.memories, undo, strict=True):
            fn(m)
        self.requests.pop()
        if not self.requests:  # every request taken back: the model as it was, no memory attached
            for m in self.memories:
                side.detach(model, m.module)
            self.memories.clear()
        self.edited_fingerprint = self._state(model)

    # --- apply / revert ---------------------------------------------------------------------------------

    def apply(self, model) -> None:
        """Write this edit into an unedited copy of the original model; refuses any other model."""
        self._expect(model, self.fingerprint, "the model this edit was made on (its original weights differ)")
        for d in self.deltas:
            write(model, d)
        self.attach(model)

    def attach(self, model) -> None:
        """Attach this edit's side memories to `model`, whose weights already carry its deltas (an edited
        checkpoint); refuses a model that then differs from the edited one."""
        for m in self.memories:
            side.attach(model, m)
        self._expect(model, self.edited_fingerprint, "the edited model (applying reproduced different bytes)")

    @torch.no_grad()
    def revert(self, model) -> None:
        """Restore every touched weight bit for bit; refuses a model that does not carry this edit."""
        self._expect(model, self.edited_fingerprint, "a model carrying this edit (its weights differ)")
        for m, w in self.original.items():
            weight(model, m).copy_(w)
        for m in self.memories:
            side.detach(model, m.module)

    def _state(self, model) -> str:
        """Fingerprint of what this edit changes on `model`: its touched weights and the memories attached."""
        items = [(m, weight(model, m)) for m in self.modules]
        return tensors.fingerprint(items + side.attached_items(model, [m.module for m in self.memories]))

    def _expect(self, model, fp: str, what: str) -> None:
        got = self._state(model)
        if got != fp:
            raise EditkitError(
                f"fingerprint mismatch on {', '.join(self.sites) or 'the model'}: the model is not {what}; "
                f"expected {fp[:12]}, got {got[:12]}"
            )

    # --- files -------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """`path/edit.json` (method, hparams, requests, fingerprints) + `path/deltas.safetensors`, atomically."""
        with atomic_directory(path, replace_if=META) as tmp:
            self.write_into(tmp)
        return Path(path)

    def write_into(self, directory: Path) -> None:
        """Write edit.json and deltas.safetensors into `directory` (made if missing; not atomic by itself)."""
        from safetensors.torch import save_file

        tensors = {f"original.{m}": w.contiguous() for m, w in self.original.items()}
        meta = []
        for i, d in enumerate(self.deltas):
            parts = {k: getattr(d, k) for k in TENSOR_FIELDS if getattr(d, k) is not None}
            tensors.update({f"delta.{i}.{k}": t.detach().cpu().contiguous() for k, t in parts.items()})
            meta.append({"module": d.module, "rank_one": d.dense is None, "tensors": sorted(parts)})
        memories = []
        for i, m in enumerate(self.memories):
            tensors.update({f"memory.{i}.{k}": t.detach().cpu().contiguous() for k, t in m.tensors.items()})
            memories.append({"module": m.module, "kind": m.kind, "meta": m.meta, "tensors": sorted(m.tensors)})
        info = {
            "format": "editkit-edit/1",
            "method": self.method,
            "model": self.model,
            "hparams": self.hparams,
            "requests": [dataclasses.asdict(r) for r in self.requests],
            "modules": self.modules,
            "deltas": meta,
            "fingerprint": self.fingerprint,
            "edited_fingerprint": self.edited_fingerprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if memories:
            info["memories"] = memories
        if self.context:
            info["context"] = self.context
        directory.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(directory / TENSORS))
        (directory / META).write_text(json.dumps(info, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> EditResult:
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / META).exists() or not (path / TENSORS).exists():
            raise EditkitError(
                f"{path} is not an edit directory (no {META} / {TENSORS}); pass `editkit edit --out` output"
            )
        info = json.loads((path / META).read_text())
        tensors = load_file(str(path / TENSORS))
        deltas = [
            Delta(d["module"], **{k: tensors[f"delta.{i}.{k}"] for k in d["tensors"]})
            for i, d in enumerate(info["deltas"])
        ]
        return cls(
            method=info["method"],
            hparams=info["hparams"],
            requests=[EditRequest(**r) for r in info["requests"]],
            deltas=deltas,
            original={m: tensors[f"original.{m}"] for m in info["modules"]},
            fingerprint=info["fingerprint"],
            edited_fingerprint=info["edited_fingerprint"],
            model=info.get("model", ""),
            memories=[
                Memory(m["module"], m["kind"], {k: tensors[f"memory.{i}.{k}"] for k in m["tensors"]}, m["meta"])
                for i, m in enumerate(info.get("memories", []))
            ],
            context=info.get("context", ""),
        )


def _finite(t: torch.Tensor | None) -> bool:
    return t is None or bool(torch.isfinite(t).all())

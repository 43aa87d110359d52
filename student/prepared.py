"""A prepared base: one LoRA adapter trained once, before any user document, on other documents together with
questions about them ("learning to learn", issue 26), shipped as a folder with a checksummed manifest and
folded into the base weights at load. Everything downstream (routing, retention, drift, the canary) then treats
the prepared model as "the base"."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"


class PreparedError(ValueError):
    """A prepared-base folder is missing, incomplete or altered."""


def file_digests(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def write_manifest(folder: Path, info: dict) -> dict:
    """Checksums of the adapter's files plus what built them (command, seed, data hash, settings)."""
    digests = file_digests(folder / "adapter")
    manifest = {**info, "files": digests,
                "checksum": hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a prepared base, after checking every file against it."""
    folder = Path(folder).expanduser()
    mf = folder / MANIFEST
    if not mf.is_file():
        raise PreparedError(f"{folder} is not a prepared base (no {MANIFEST}; build one with `seal prepare`)")
    manifest = json.loads(mf.read_text())
    found = file_digests(folder / "adapter") if (folder / "adapter").is_dir() else {}
    if found != manifest.get("files"):
        bad = sorted(set(found.items()) ^ set(manifest.get("files", {}).items()))
        raise PreparedError(f"{folder}: adapter files do not match the manifest ({bad[0][0] if bad else '?'})")
    return manifest


def fold_prepared(model, folder: str | Path):
    """Merge a verified prepared adapter into `model`'s weights; returns the plain model with them folded."""
    from peft import PeftModel

    read_manifest(folder)
    peft = PeftModel.from_pretrained(model, str(Path(folder).expanduser() / "adapter"), is_trainable=False)
    return peft.merge_and_unload()

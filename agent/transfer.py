"""`seal export` / `seal import`: move a learned student version, with its documents and probes, from one state to
another (another machine), checksummed.

A bundle is one tar file: `bundle.json` (the version's manifest, every document's text and probes, the base model
it was learned on, and a digest over all of it) and `adapters/<id>/<files>` (each file's sha256 is in the
manifest). Import checks every checksum and the base model before it writes anything, copies the adapters under
new ids, adds the documents, and commits a new version of the target stack; importing the same bundle twice
returns the version the first import made.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.config import SealConfig
from core.documents import QA, Passage
from core.io import sha256_file
from memory.store import MemoryStore
from student.stack import AdapterRef, Manifest, StackError, StackStore

FORMAT = 1


class BundleError(ValueError):
    """A bundle that cannot be imported here (corrupt, another base model, unknown format): nothing is written."""


@dataclass(frozen=True)
class Imported:
    version: int
    name: str
    documents: int
    adapters: int
    again: bool  # the same bundle was imported before: nothing new was written


def _stores(cfg: SealConfig) -> tuple[StackStore, MemoryStore]:
    from agent.continual import memory_target

    return StackStore(Path(cfg.continual.state_dir) / "stack"), MemoryStore(memory_target(cfg))


def base_identity(cfg: SealConfig) -> dict:
    """What a bundle's adapters are deltas of: the base model, and the prepared base folded into it if any."""
    prepared = None
    if cfg.model.prepared:
        p = Path(cfg.model.prepared) / "manifest.json"
        prepared = sha256_file(p) if p.is_file() else cfg.model.prepared
    return {"source": cfg.model.source, "prepared": prepared}


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def export_version(cfg: SealConfig, ref: str, out: Path) -> tuple[Manifest, Path]:
    stack, memory = _stores(cfg)
    try:
        m = stack.resolve(ref)
        stack.verify(m)
        docs = []
        for d in m.doc_ids:
            p = memory.document(d)
            docs.append({"doc_id": d, "title": p.title, "context": p.context,
                         "probes": [{"question": q.question, "answer": q.answer, "source": q.source}
                                    for q in memory.probes(d)]})
    finally:
        memory.close()
    body = {"format": FORMAT, "base": base_identity(cfg), "manifest": m.to_json(), "documents": docs}
    body["digest"] = _digest(body)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w") as tar:
        raw = json.dumps(body, indent=1, ensure_ascii=False).encode()
        info = tarfile.TarInfo("bundle.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
        for a in m.adapters:
            for fname in sorted(a.files):
                tar.add(stack.adapter_dir(a.id) / fname, arcname=f"adapters/{a.id}/{fname}")
    tmp.replace(out)  # a bundle is whole or absent
    return m, out


def read_bundle(path: Path, into: Path) -> dict:
    """Unpack and check a bundle: its digest, and every adapter file against the manifest's sha256."""
    try:
        with tarfile.open(path, "r") as tar:
            tar.extractall(into, filter="data")  # no absolute paths, no links out, no devices
    except (tarfile.TarError, OSError) as e:
        raise BundleError(f"{path}: not a readable bundle ({e})") from e
    try:
        body = json.loads((into / "bundle.json").read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: no valid bundle.json ({e})") from e
    if body.get("format") != FORMAT:
        raise BundleError(f"{path}: bundle format {body.get('format')!r}; this release reads format {FORMAT}")
    digest = body.pop("digest", None)
    if digest != _digest(body):
        raise BundleError(f"{path}: bundle.json fails its digest (changed after export)")
    body["digest"] = digest
    m = Manifest.from_json(body["manifest"])
    for a in m.adapters:
        for fname, sha in a.files.items():
            f = into / "adapters" / a.id / fname
            if not f.is_file() or sha256_file(f) != sha:
                raise BundleError(f"{path}: adapter {a.id} file {fname} is missing or fails its checksum")
    return body


def import_bundle(cfg: SealConfig, path: Path, promote: bool = False) -> Imported:
    from agent.continual import advance_latest

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no such bundle: {path}")
    stack, memory = _stores(cfg)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            body = read_bundle(path, Path(tmp))
            if body["base"] != base_identity(cfg):
                raise BundleError(f"{path} was learned on {body['base']}; this state serves {base_identity(cfg)}: "
                                  "its adapters would not mean the same here")
            src = Manifest.from_json(body["manifest"])
            tag = f"imported {body['digest'][:16]}"
            with stack.updating(), stack.writer():
                for v in stack.versions():  # the same bundle again: the version it made
                    m = stack.manifest(v)
                    if m.note.startswith(tag):
                        return Imported(v, m.name, len(m.doc_ids), len(m.adapters), again=True)
                version = stack.next_version()
                refs = []
                for k, a in enumerate(src.adapters):
                    new_id = f"a{version:05d}-i{k}"
                    dest = stack.adapter_dir(new_id)
                    if dest.exists():
                        raise StackError(f"adapter {new_id} already exists (adapters are immutable)")
                    part = dest.with_name(dest.name + ".part")
                    shutil.rmtree(part, ignore_errors=True)
                    shutil.copytree(Path(tmp) / "adapters" / a.id, part)
                    part.rename(dest)  # an adapter folder is whole or absent
                    refs.append(AdapterRef(new_id, a.doc_ids, a.rank, a.kind, dict(a.files), a.merged))
                for d in body["documents"]:
                    p = Passage(d["title"], d["context"], ())
                    if p.doc_id != d["doc_id"]:
                        raise BundleError(f"{path}: document {d['doc_id']} does not hash to its id")
                    probes = [QA(q["question"], q["answer"]) for q in d["probes"]]
                    sources = {q.get("source") for q in d["probes"]} - {None}
                    memory.add_document(p, probes, source=sources.pop() if len(sources) == 1 else "imported")
                m = stack.commit(refs, None, note=f"{tag} from {src.name} of {path.name}")
                for d in m.doc_ids:
                    memory.mark_learned(d, m.version)
                memory.record_update(m.version, None, None, "imported", f"{src.name} from {path.name}")
                if promote:
                    stack.set_alias("prod", m.version)
                    advance_latest(stack, m.version)
            return Imported(m.version, m.name, len(m.doc_ids), len(m.adapters), again=False)
    finally:
        memory.close()

"""The persisted adapter stack: immutable versions (manifests), immutable adapter folders, movable aliases.

Layout under the stack root:
    adapters/a00017/          adapter files (written by Student.save: temp folder + fsync + rename)
    versions/v00017.json      manifest of student-v17: the ordered adapters, with a sha256 per file
    aliases.json              {"latest": 17, "prod": 15}   (replaced atomically)
    .lock                     flock: one writer of the stack at a time

A version never changes after it is written; every change (new document, consolidation, removal) makes a
new one, so rollback is moving an alias. Checksums are verified when a version is loaded.
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core.io import atomic_write_json, sha256_file

NAME = re.compile(r"^student-v(\d+)$")


class StackError(ValueError):
    """A version, alias or adapter that does not exist or cannot be used."""


class CorruptAdapterError(StackError):
    """An adapter file is missing or its checksum does not match its manifest."""


@dataclass(frozen=True)
class AdapterRef:
    id: str
    doc_ids: tuple[str, ...]
    rank: int
    kind: str  # "lora" (one document) | "consolidated" (several, folded)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    merged: bool = False  # served merged into the base weights (no per-query adapter cost)

    @classmethod
    def from_json(cls, d: dict) -> "AdapterRef":
        return cls(d["id"], tuple(d["doc_ids"]), int(d["rank"]), d["kind"], dict(d["files"]),
                   bool(d.get("merged", False)))


@dataclass(frozen=True)
class Manifest:
    version: int
    parent: int | None
    adapters: tuple[AdapterRef, ...]
    created_at: str
    note: str = ""

    @property
    def name(self) -> str:
        return f"student-v{self.version}"

    @property
    def created(self) -> float:
        """`created_at` as epoch seconds: the one time format of the API (jobs, events, models, versions)."""
        return datetime.fromisoformat(self.created_at).timestamp()

    @property
    def doc_ids(self) -> list[str]:
        return [d for a in self.adapters for d in a.doc_ids]

    def to_json(self) -> dict:
        d = asdict(self)
        d["name"] = self.name
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Manifest":
        return cls(int(d["version"]), d["parent"], tuple(AdapterRef.from_json(a) for a in d["adapters"]),
                   d["created_at"], d.get("note", ""))


class StackStore:
    """`lock_timeout_s`: how long `writer()` waits for another writer (a few writes: seconds);
    `update_timeout_s`: how long `updating()` waits for another update (one whole update: minutes)."""

    def __init__(self, root: str | Path, lock_timeout_s: float = 600.0, update_timeout_s: float = 4 * 3600.0):
        self.root = Path(root)
        for d in ("adapters", "versions"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._timeouts = {".lock": lock_timeout_s, ".update.lock": update_timeout_s}
        self._locks: dict[str, object] = {}

    # -- locking and reading -----------------------------------------------------------------------------
    @contextmanager
    def _flock(self, name: str):
        """An advisory file lock across processes and threads (filelock), re-entrant in the thread that holds
        it (a writer that calls a writer no longer deadlocks), and bounded: a holder that never lets go is an
        error that names the lock, not a hang."""
        from filelock import FileLock, Timeout

        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = FileLock(str(self.root / name), timeout=self._timeouts[name])
        try:
            lock.acquire()
        except Timeout as e:
            raise StackError(f"{self.root / name} is held by another {'update' if 'update' in name else 'writer'} "
                             f"for over {self._timeouts[name]:.0f} s") from e
        try:
            yield self
        finally:
            lock.release()

    def writer(self):
        """Serialize writers across processes (workers, CLI) with an advisory file lock."""
        return self._flock(".lock")

    def updating(self):
        """Serialize whole updates (read prod, train, evaluate, promote) across threads and processes; a
        separate lock from `writer()`, which the update takes inside it for each write."""
        return self._flock(".update.lock")

    def versions(self) -> list[int]:
        out = []
        for p in (self.root / "versions").glob("v*.json"):
            if p.stem[1:].isdigit():
                out.append(int(p.stem[1:]))
        return sorted(out)

    def manifest(self, version: int) -> Manifest:
        p = self.root / "versions" / f"v{version:05d}.json"
        if not p.is_file():
            raise StackError(f"no version student-v{version}")
        return Manifest.from_json(json.loads(p.read_text()))

    def aliases(self) -> dict[str, int]:
        p = self.root / "aliases.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def resolve(self, ref: str | int) -> Manifest:
        """`17`, `student-v17` (also `seal-student-v17`, `v17`), or an alias such as `latest` / `prod` (also
        `seal-student@prod`): every form a command or route prints."""
        if isinstance(ref, str):
            ref = ref.strip()
            if ref.startswith("seal-student@"):
                ref = ref.split("@", 1)[1]
            elif ref.startswith("seal-"):
                ref = ref[len("seal-"):]
            if ref[:1] == "v" and ref[1:].isdigit():
                ref = ref[1:]
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return self.manifest(int(ref))
        if m := NAME.match(ref):
            return self.manifest(int(m.group(1)))
        aliases = self.aliases()
        if ref not in aliases:
            raise StackError(f"unknown version or alias {ref!r}; aliases: {sorted(aliases) or 'none'}")
        return self.manifest(aliases[ref])

    def adapter_dir(self, adapter_id: str) -> Path:
        return self.root / "adapters" / adapter_id

    def verify(self, manifest: Manifest) -> None:
        for a in manifest.adapters:
            folder = self.adapter_dir(a.id)
            for fname, digest in a.files.items():
                f = folder / fname
                if not f.is_file():
                    raise CorruptAdapterError(f"{manifest.name}: adapter {a.id} is missing {fname}")
                if sha256_file(f) != digest:
                    raise CorruptAdapterError(f"{manifest.name}: adapter {a.id} file {fname} fails its checksum")

    # -- writing (call inside `with store.writer():`) -------------------------------------------------------
    def next_version(self) -> int:
        vs = self.versions()
        return (vs[-1] + 1) if vs else 1

    def add_adapter(self, student, live_name: str, adapter_id: str, doc_ids: list[str], kind: str = "lora") -> AdapterRef:
        """Save a trained adapter from the live model as an immutable folder and return its reference."""
        folder = self.adapter_dir(adapter_id)
        if folder.exists():
            raise StackError(f"adapter {adapter_id} already exists (adapters are immutable)")
        student.save(live_name, folder)
        cfg = json.loads((folder / "adapter_config.json").read_text())
        files = {f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.is_file()}
        return AdapterRef(adapter_id, tuple(doc_ids), int(cfg["r"]), kind, files)

    def commit(self, adapters: list[AdapterRef], parent: int | None, note: str = "",
               move: tuple[str, ...] = ()) -> Manifest:
        """Write a new immutable version, then move aliases. The manifest is written last (after its
        adapters), so a crash before it leaves the previous version intact and only an orphan folder."""
        m = Manifest(self.next_version(), parent, tuple(adapters), datetime.now(timezone.utc).isoformat(), note)
        path = self.root / "versions" / f"v{m.version:05d}.json"
        if path.exists():
            raise StackError(f"{m.name} already exists")
        atomic_write_json(path, m.to_json())
        for alias in move:
            self.set_alias(alias, m.version)
        return m

    def move_alias_if(self, alias: str, expected: int | None, version: int) -> bool:
        """Compare-and-set: point `alias` at `version` only if it still points at `expected` (None: unset).
        The caller holds `writer()`; an update promotes this way, so an operator's promote or rollback made
        while the update ran is never silently undone."""
        if self.aliases().get(alias) != expected:
            return False
        self.set_alias(alias, version)
        return True

    def set_alias(self, alias: str, version: int) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", alias) or NAME.match(alias):
            raise StackError(f"invalid alias name {alias!r}")
        self.manifest(version)  # must exist
        aliases = self.aliases()
        aliases[alias] = version
        atomic_write_json(self.root / "aliases.json", aliases)


def load_version(store: StackStore, student, manifest: Manifest) -> list[str]:
    """Verify, make the live student equal to the version, and return the names of its active adapters.

    Merged adapters are applied to the base weights (restoring the original weights first unless the live
    base already holds a prefix of them); the others are loaded once each and returned for `student.use()`.
    """
    # checksums are verified for what is read from disk now; adapters already live were verified when loaded
    # (serving calls this per request, so re-hashing every file each time would be the hot path's cost)
    need = [a for a in manifest.adapters if a.id not in student.adapters() and a.id not in student.merged]
    store.verify(Manifest(manifest.version, manifest.parent, tuple(need), manifest.created_at, manifest.note))
    want = tuple(a.id for a in manifest.adapters if a.merged)
    if student.merged != want:
        if student.merged != want[:len(student.merged)]:
            student.restore_base()
        for aid in want[len(student.merged):]:
            student.drop(aid)
            student.load(store.adapter_dir(aid), aid)
            student.merge_into_base(aid, track=True)
    names = []
    for a in manifest.adapters:
        if a.merged:
            continue
        if a.id not in student.adapters():
            student.load(store.adapter_dir(a.id), a.id)
        names.append(a.id)
    return names

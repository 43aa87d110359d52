"""Teacher versions: immutable LoRA adapters on the teacher's base model, each tied to the round that made it
and the student version it was rewarded against. Version 0 is the untouched base (no adapter).

Layout: adapters/tNNNNN/ (Student.save: temp folder + fsync + rename), versions/tNNNNN.json (written last,
atomically, with a sha256 per adapter file), aliases.json ({"current": N}).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core.io import atomic_write_json, sha256_file
from student.stack import CorruptAdapterError, StackError


@dataclass(frozen=True)
class TeacherVersion:
    version: int
    parent: int | None
    round: int
    student_version: str  # what the rewards were measured against, e.g. "base" or "student-v12"
    winners: int
    mean_reward: float
    files: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    @property
    def name(self) -> str:
        return f"teacher-v{self.version}"


class TeacherStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        for d in ("adapters", "versions"):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    def adapter_dir(self, version: int) -> Path:
        return self.root / "adapters" / f"t{version:05d}"

    def versions(self) -> list[int]:
        return sorted(int(p.stem[1:]) for p in (self.root / "versions").glob("t*.json") if p.stem[1:].isdigit())

    def get(self, version: int) -> TeacherVersion | None:
        """None for version 0 (the base teacher)."""
        if version == 0:
            return None
        p = self.root / "versions" / f"t{version:05d}.json"
        if not p.is_file():
            raise StackError(f"no teacher-v{version}")
        return TeacherVersion(**json.loads(p.read_text()))

    def verify(self, v: TeacherVersion) -> None:
        for fname, digest in v.files.items():
            f = self.adapter_dir(v.version) / fname
            if not f.is_file() or sha256_file(f) != digest:
                raise CorruptAdapterError(f"{v.name}: adapter file {fname} is missing or fails its checksum")

    @contextmanager
    def retraining(self):
        """Yields True to the one process that may retrain the teacher now, False to any other (it skips: the
        one retraining uses every winner recorded so far). Never waits, so no update waits on a teacher."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.root / ".retrain.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def commit(self, student, live_name: str, version: int, parent: int | None, round_: int,
               student_version: str, winners: int, mean_reward: float) -> TeacherVersion:
        folder = self.adapter_dir(version)
        if (self.root / "versions" / f"t{version:05d}.json").exists():
            raise StackError(f"teacher-v{version} already exists")
        student.save(live_name, folder)
        files = {f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.is_file()}
        v = TeacherVersion(version, parent, round_, student_version, winners, mean_reward, files,
                           datetime.now(timezone.utc).isoformat())
        atomic_write_json(self.root / "versions" / f"t{version:05d}.json", asdict(v))
        self.set_current(version)
        return v

    def current(self) -> int:
        p = self.root / "aliases.json"
        return json.loads(p.read_text()).get("current", 0) if p.is_file() else 0

    def set_current(self, version: int) -> None:
        if version:
            self.get(version)
        atomic_write_json(self.root / "aliases.json", {"current": version})

    def load(self, student, version: int) -> str | None:
        """Load a teacher version into the live model (once); its adapter name, or None for the base."""
        v = self.get(version)
        if v is None:
            return None
        name = f"teacher-v{version}"
        if name not in student.adapters():
            self.verify(v)
            student.load(self.adapter_dir(version), name)
        return name

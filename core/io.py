"""File I/O every stage shares: append-only JSONL (locked, fsynced, torn-line tolerant), atomic writes, checksums.
One helper per job, so a crash never leaves a half-written file anywhere in the tree."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, rename over it: readers see the old file or the new one."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_save(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent))


def atomic_save(path: Path, save) -> None:
    """For writers that take a path (torch.save, safetensors): `save(tmp)`, fsync, then the same rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(dest: Path, replace: bool = True, root: Callable[[Path], Path] | None = None) -> Iterator[Path]:
    """Build a folder in a temporary folder beside `dest` (the caller writes into the yielded path), then fsync
    its files and rename it into place: a crash never leaves half a folder at `dest`. `replace=False` is for
    caches any process may build: when another one got there first, its (identical) copy is kept. `root`
    picks the folder to move when the writer nests its output (peft writes `tmp/<adapter name>/`)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        yield tmp
        src = root(tmp) if root else tmp
        for f in src.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if replace and dest.exists():
            shutil.rmtree(dest)
        try:
            os.replace(src, dest)
        except OSError:
            if replace or not dest.is_dir():
                raise
        fsync_dir(dest.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def append_jsonl(path: Path, record: dict) -> None:
    """One line per record, fsynced: a killed run keeps everything it measured. Several processes may
    append to one file (e.g. shards of one evaluation): the line goes out in one locked write."""
    import fcntl

    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line from a killed writer
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill: ignore it, its unit is redone
    return out

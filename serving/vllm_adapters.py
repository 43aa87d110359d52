"""Stack versions as vLLM LoRA adapters, under names that never change: one folded adapter per version, or,
with routed adapters (serving/routing.py), each document's adapter on its own, shared by every version that
lists it (the API process routes each request and asks the server for that one adapter, or for the base).

vLLM has had bugs serving stale or wrong weights when an adapter is re-loaded under a name it has seen, or
when LoRA slots are evicted and refilled. So a name is loaded once and never reused for other weights: it
carries the version number and a digest of the exact adapter files (a state dir rebuilt from scratch, whose
"v3" differs, gets another name). Versions no alias points at are unloaded, least recently used first,
beyond `keep_loaded`.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

from core.config import SealConfig, VLLMSettings
from serving.backend import BackendError, VLLMBackend, VLLMClient
from student.export import ExportReport, fold_folders
from student.stack import AdapterRef, Manifest, StackStore

SERVED = "seal-student-"  # every name we load starts so (the base model's never does)
PREFIX = SERVED + "v"  # a version, folded
ADAPTER_PREFIX = SERVED + "doc-"  # one routed adapter
_NAME = re.compile(r"^(seal-student-(?:v\d+|doc-[A-Za-z0-9]+)-[0-9a-f]{10})(?:-r[0-9a-f]*\d+)?$")


def version_digest(manifest: Manifest, max_rank: int) -> str:
    return _digest(manifest.adapters, max_rank)


def _digest(adapters, max_rank: int) -> str:
    h = hashlib.sha256(f"rank={max_rank}".encode())
    for a in adapters:
        h.update(a.id.encode())
        for f, sha in sorted(a.files.items()):
            h.update(f"{f}={sha}".encode())
    return h.hexdigest()[:10]


class VLLMAdapters:
    def __init__(self, client: VLLMClient, stack: StackStore, settings: VLLMSettings, export_root: Path):
        self.client, self.stack, self.s = client, stack, settings
        self.root = Path(export_root)
        self.lock = threading.Lock()
        # name -> what it serves, least recently used first: ("v", version) or ("a", adapter id)
        self.used: OrderedDict[str, tuple[str, int | str]] = OrderedDict()
        self.unloaded: dict[str, int] = {}  # base name -> times unloaded: a re-load gets a fresh name
        self.process = secrets.token_hex(3)  # re-load names carry it: two API processes never pick the same one
        self.reports: dict[str, ExportReport] = {}
        self.backend: VLLMBackend | None = None  # set by open_vllm

    def base_model(self) -> str:
        """The server's name for the untouched base (config, else the first non-adapter model it lists)."""
        if self.s.served_model:
            return self.s.served_model
        ids = [m["id"] for m in self.client.models() if not m["id"].startswith(SERVED) and not m.get("parent")]
        if not ids:
            raise BackendError(f"vLLM server {self.client.url} lists no base model")
        return ids[0]

    def forget(self, name: str) -> None:
        """The server lost `name` (it restarted): the next `ensure` loads it again, same name, same files."""
        with self.lock:
            self.used.pop(name, None)

    def name_for(self, manifest: Manifest) -> str:
        return f"{PREFIX}{manifest.version}-{version_digest(manifest, self.s.max_lora_rank)}"

    def adapter_name(self, ref: AdapterRef) -> str:
        slug = "".join(c for c in ref.id if c.isalnum()) or "x"
        return f"{ADAPTER_PREFIX}{slug}-{_digest([ref], self.s.max_lora_rank)}"

    def export(self, manifest: Manifest) -> Path:
        """The version as one PEFT folder (written once; verified adapters in, atomic folder out)."""
        return self._export(self.name_for(manifest), manifest)

    def export_adapter(self, manifest: Manifest, ref: AdapterRef) -> Path:
        """One routed adapter of `manifest` as its own PEFT folder (at most max_lora_rank)."""
        return self._export(self.adapter_name(ref), type(manifest)(manifest.version, manifest.parent, (ref,),
                                                                   manifest.created_at, manifest.note))

    def _export(self, name: str, manifest: Manifest) -> Path:
        out = self.root / name
        if (out / "adapter_config.json").is_file():
            return out
        self.stack.verify(manifest)
        folders = [self.stack.adapter_dir(a.id) for a in manifest.adapters]
        self.reports[name] = fold_folders(folders, out, self.s.max_lora_rank)
        return out

    def loaded(self) -> set[str]:
        return {m["id"] for m in self.client.models() if m["id"].startswith(SERVED)}

    def ensure(self, manifest: Manifest | None) -> str | None:
        """The server-side name answering for this version (None: the base model), loading it if needed."""
        if manifest is None or not manifest.adapters:
            return None
        return self._ensure(self.name_for(manifest), ("v", manifest.version), lambda: self.export(manifest))

    def ensure_adapter(self, manifest: Manifest, adapter_id: str) -> str:
        """The server-side name of one routed adapter of `manifest`, loading it if needed."""
        ref = next((a for a in manifest.adapters if a.id == adapter_id), None)
        if ref is None:
            raise KeyError(f"{manifest.name} has no adapter {adapter_id!r}")
        return self._ensure(self.adapter_name(ref), ("a", ref.id), lambda: self.export_adapter(manifest, ref))

    def _ensure(self, base: str, key: tuple[str, int | str], export) -> str:
        with self.lock:
            k = self.unloaded.get(base, 0)
            name = self.reload_name(base, k)
            fresh = name not in self.used and name not in self.loaded()
            if fresh:
                path = export()
                self.client.load_lora(name, str(path.resolve()))
            self.used[name] = key
            self.used.move_to_end(name)
            if fresh:  # only a load can exceed the bound; a cache hit reads no alias or manifest from disk
                self._evict()
        return name

    def reload_name(self, base: str, k: int) -> str:
        """Never the same name twice, even for the same weights, across processes too (a server may cache an
        adapter under a name another process unloaded)."""
        return f"{base}-r{self.process}{k}" if k else base

    def _pinned(self) -> set[tuple[str, int | str]]:
        """What an alias points at: its version, and each of that version's adapters (served routed)."""
        pinned: set[tuple[str, int | str]] = set()
        for v in set(self.stack.aliases().values()):
            pinned.add(("v", v))
            if any(k[0] == "a" for k in self.used.values()):
                pinned.update(("a", a.id) for a in self.stack.manifest(v).adapters)
        return pinned

    def _evict(self) -> None:
        pinned = self._pinned()
        spare = [n for n, key in self.used.items() if key not in pinned]
        for name in spare[:max(0, len(spare) - self.s.keep_loaded)]:
            try:
                self.client.unload_lora(name)
            except BackendError:
                pass  # already gone (a restarted server): forgetting it is all that is needed
            self._retire(name)

    def _retire(self, name: str) -> None:
        self.used.pop(name, None)
        m = _NAME.match(name)
        base = m.group(1) if m else name
        self.unloaded[base] = self.unloaded.get(base, 0) + 1

    def unload_all(self) -> list[str]:
        with self.lock:
            names = sorted(self.loaded())
            for n in names:
                self.client.unload_lora(n)
                self._retire(n)
            self.used.clear()
            return names


def open_vllm(cfg: SealConfig, stack: StackStore, tokenizer) -> VLLMAdapters | None:
    """The configured vLLM connection (None for the in-process backend). No request is made here."""
    import os

    if cfg.backend.kind != "vllm":
        return None
    s = cfg.backend.vllm
    key = os.environ.get(s.api_key_env) if s.api_key_env else None
    root = Path(s.export_dir)
    if not root.is_absolute():
        root = Path(cfg.continual.state_dir) / root
    adapters = VLLMAdapters(VLLMClient(s.url, key, s.timeout_s), stack, s, root)
    adapters.backend = VLLMBackend(adapters.client, tokenizer, adapters.base_model)
    return adapters

"""Recitations kept across processes: a stack adapter never changes and greedy decoding of fixed weights always
writes the same, so what an adapter wrote of a document part is remembered in the memory store. The learner's
gate writes them while it measures a document as served; the server then reads them instead of decoding them
again on a query's path, after a restart or an eviction too."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from memory.store import MemoryStore


class RecitationMemo:
    """A mapping (adapter id, part title line) -> recitation: recent entries in memory, every entry whose adapter
    `persist` accepts also in the store (the learner passes "is a committed stack adapter", so a candidate's
    throwaway name is never written down)."""

    def __init__(self, store: MemoryStore | None, persist: Callable[[str], bool] = lambda adapter: True,
                 hot: int = 4096):
        self.store, self.persist, self.limit = store, persist, hot
        self._hot: OrderedDict[tuple[str, str], str] = OrderedDict()

    def get(self, key: tuple[str, str], default: str | None = None) -> str | None:
        if key in self._hot:
            self._hot.move_to_end(key)
            return self._hot[key]
        text = self.store.recitation(*key) if self.store is not None and self.persist(key[0]) else None
        if text is None:
            return default
        self._keep(key, text)
        return text

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __getitem__(self, key: tuple[str, str]) -> str:
        text = self.get(key)
        if text is None:
            raise KeyError(key)
        return text

    def __setitem__(self, key: tuple[str, str], text: str) -> None:
        self._keep(key, text)
        if self.store is not None and self.persist(key[0]):
            self.store.put_recitation(key[0], key[1], text)

    def __len__(self) -> int:
        return len(self._hot)

    def _keep(self, key, text: str) -> None:
        self._hot[key] = text
        self._hot.move_to_end(key)
        while len(self._hot) > self.limit:
            self._hot.popitem(last=False)

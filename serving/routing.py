"""Routed adapters: each question is answered by the untouched model plus only the adapter that learned the
document the question is about (memory/router.py), so a question about none of the learned documents meets the
untouched weights. Each document's adapter is trained alone on the base (not on top of the stack), so it can
be applied alone; a version still lists all of them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from memory.router import DocumentRouter, Route


@dataclass
class AdapterRouting:
    router: DocumentRouter
    adapter_of: dict[str, str]  # doc_id -> live adapter name

    def routes(self, questions: list[str]) -> list[Route]:
        return [self.router.route(q) for q in questions]

    def names_for(self, questions: list[str]) -> list[list[str]]:
        """The adapters that answer each question ([] = the untouched model)."""
        return [[self.adapter_of[r.doc_id]] if r.doc_id in self.adapter_of else [] for r in self.routes(questions)]


@dataclass
class ServedRouting:
    """A routing whose adapters are named as a generation backend knows them (a vLLM server's LoRA names).
    `served_name` is called per routed adapter as questions arrive, so only adapters that some question meets
    are loaded on the server."""

    routing: AdapterRouting
    served_name: Callable[[str], str]  # adapter id -> the backend's name for it

    def routes(self, questions: list[str]) -> list[Route]:
        return self.routing.routes(questions)

    def names_for(self, questions: list[str]) -> list[list[str]]:
        return [[self.served_name(n) for n in names] for names in self.routing.names_for(questions)]


def general_texts(canary_settings) -> tuple[list[str], list[str]]:
    """(background for idf, general questions for calibration): the shipped neutral prompts and the general
    questions kept disjoint from the canary, so the canary stays a held-out check of the routing."""
    from evaluation.canary import load_canary, load_neutral_prompts, load_retain_questions

    drift, retain = load_neutral_prompts(canary_settings.prompts_file)
    questions = load_retain_questions(canary_settings.retain_questions_file, load_canary(canary_settings.file))
    return drift + retain + questions, questions


def build_routing(adapter_of: dict[str, str], documents: dict[str, str], settings, canary_settings,
                  texts: tuple[list[str], list[str]] | None = None, counts: dict | None = None,
                  background_df=None) -> AdapterRouting | None:
    """Routing from doc_id -> live adapter name (`documents`: doc_id -> text); None when there is nothing to
    route to (the base answers everything). `texts`: general_texts() already read (else read here)."""
    adapter_of = {d: a for d, a in adapter_of.items() if d in documents}
    if not adapter_of:
        return None
    background, calibration = texts or general_texts(canary_settings)
    router = DocumentRouter({d: documents[d] for d in adapter_of}, background, settings.floor, counts=counts,
                            background_df=background_df, scorer=settings.scorer, k1=settings.k1, b=settings.b)
    router.calibrate(calibration, settings.quantile, settings.floor)
    return AdapterRouting(router, adapter_of)


class RoutingCache:
    """The routings of the versions last asked for (rebuilt when a version's live adapters change); one per
    process that answers: the learner and the server. Safe across threads: the vLLM path answers from a
    thread pool, and two versions asked in turn keep both their routings."""

    def __init__(self, memory, settings, canary_settings, size: int = 8):
        import threading
        from collections import OrderedDict

        self.memory, self.s, self.cs, self.size = memory, settings, canary_settings, size
        self._lock = threading.Lock()
        self._entries: "OrderedDict[tuple, AdapterRouting | None]" = OrderedDict()
        self._texts = None  # the shipped general texts, read once per process
        self._background_df = None  # ... and their document frequencies
        self._counts: dict = {}  # doc_id -> term counts: a new version tokenizes only its new documents

    def document(self, doc_id: str):
        """A routed document as stored (its title and text: what recite-then-read asks its adapter to write out,
        part by part, and how long each part is)."""
        return self.memory.document(doc_id)

    def get(self, manifest, names: list[str] | None) -> AdapterRouting | None:
        if manifest is None or not names:
            return None
        key = (manifest.version, tuple(names))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        adapter_of = {d: a.id for a in manifest.adapters if a.id in names for d in a.doc_ids}
        docs = {d: f"{p.title}\n{p.context}" for d in adapter_of
                if self.memory.has_document(d) and (p := self.memory.document(d))}
        from collections import Counter

        from memory.router import document_frequencies, terms

        texts = self._texts or general_texts(self.cs)
        bg_df = self._background_df if self._background_df is not None else document_frequencies(texts[0])
        with self._lock:
            known = {d: self._counts[d] for d in docs if d in self._counts}
        new = {d: Counter(terms(t)) for d, t in docs.items() if d not in known}
        value = build_routing(adapter_of, docs, self.s, self.cs, texts, counts={**known, **new},
                              background_df=bg_df)  # built outside the lock
        with self._lock:
            self._texts, self._background_df = texts, bg_df
            self._counts.update(new)
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

"""Which learned document a query is about, so that only that document's adapter answers it.

Lexical scoring of the query against each learned document: BM25 (the default) or tf-idf cosine. The idf counts
a fixed background of general text next to the documents, so a word every question uses weighs little even when
one document is learned, and a question about none of the documents scores low and is answered by the untouched
model. BM25's score is not normalised by the query: a general question whose two common words happen to meet
some document among thousands stays low, where its cosine (or its share of matched words) is high. At 1,000
SQuAD passages, with the threshold set so that 2% of general questions route, BM25 sends 66% of the passages'
questions to their own passage against cosine's 49% (RESULTS.md, "Routing at scale")."""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

# Unicode text is normalised and split into words by Hugging Face `tokenizers` (NFKC, lower case, whitespace and
# Unicode punctuation); the scripts written without spaces are then split into overlapping character pairs (the
# usual tf-idf unit for Chinese, Japanese, Thai, ...)
UNSPACED = re.compile(r"[\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf"
                       r"\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers him
his how i if in into is it its itself just me more most my no nor not now of off on once only or other our out over
own same she should so some such than that the their them then there these they this those through to too under
until up very was we were what when where which while who whom why will with would you your yours one two many
much name named called answer question short phrase
""".split())


@lru_cache(maxsize=1)
def _splitter():
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    split = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="removed")])
    return norm, split


def words(text: str) -> list[str]:
    """Words of any script: NFKC, lower case, split at whitespace and Unicode punctuation by `tokenizers`; a
    symbol left inside a word (the pound in "£41", the degree in "90°") is dropped, as in the text's sense."""
    norm, split = _splitter()
    out = []
    for w, _ in split.pre_tokenize_str(norm.normalize_str(text)):
        if not w.isalnum():  # keep letters, marks (Thai vowels, Devanagari signs) and digits
            w = "".join(c for c in w if unicodedata.category(c)[0] in "LMN")
        if w:
            out.append(w)
    return out


def terms(text: str) -> list[str]:
    """Index terms of any script: NFKC-normalised, case-folded words ("München" -> "münchen", "Москва" ->
    "москва"; non-ASCII words of 6+ letters also give their first five letters, so inflected forms meet); English
    stopwords and words under 3 letters dropped (digits kept); runs of unspaced scripts as character pairs."""
    out = []
    for w in words(text):
        run = UNSPACED.search(w)
        if run is None:
            if w not in STOPWORDS and (len(w) > 2 or w.isdigit()):
                out.append(w)
                if len(w) > 5 and not w.isascii():  # inflected scripts: the stem's head too ("москву", "москва")
                    out.append(w[:5] + "~")
            continue
        for part in UNSPACED.sub(" ", w).split():  # the spaced-script pieces around unspaced runs
            if len(part) > 2 or part.isdigit():
                out.append(part)
        for r in UNSPACED.findall(w):
            out += [r] if len(r) == 1 else [r[i:i + 2] for i in range(len(r) - 1)]
    return out


def document_frequencies(texts: list[str]) -> Counter:
    df: Counter = Counter()
    for text in texts:
        df.update(set(terms(text)))
    return df


@dataclass(frozen=True)
class Route:
    doc_id: str | None  # None: about no learned document (the untouched model answers)
    score: float  # the nearest document's score (BM25, or cosine)


SCORERS = ("bm25", "cosine")


class DocumentRouter:
    """BM25 (k1, b; idf over the documents and a general background) or tf-idf cosine (sublinear tf), on a scipy
    sparse matrix: one sparse product scores a query against every document (thousands in well under a
    millisecond), where a Python scan over documents grew linearly. `counts` (doc_id -> term counts) may be passed
    in from a cache, so a new version re-tokenizes only its new documents. A threshold is a cosine in (0, 1) or a
    BM25 score above 0."""

    def __init__(self, docs: dict[str, str], background: list[str], threshold: float,
                 counts: dict[str, Counter] | None = None, background_df: Counter | None = None,
                 scorer: str = "bm25", k1: float = 1.2, b: float = 0.75):
        import numpy as np
        from scipy.sparse import csr_matrix

        if scorer not in SCORERS:
            raise ValueError(f"routing scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
        if not (0 < threshold < 1 if scorer == "cosine" else threshold > 0):
            raise ValueError(f"routing threshold must be {'in (0, 1)' if scorer == 'cosine' else 'above 0'} "
                             f"for the {scorer} scorer, got {threshold}")
        self.scorer, self.k1, self.b = scorer, k1, b
        self.threshold = threshold
        self.ids = list(docs)
        counts = counts if counts is not None else {}
        tf = [counts[d] if d in counts else Counter(terms(docs[d])) for d in self.ids]
        df = Counter(background_df) if background_df is not None else document_frequencies(background)
        for c in tf:
            df.update(c.keys())
        self.n = len(docs) + len(background)
        self.df = df
        self.vocab = {w: k for k, w in enumerate(df)}
        self.idf = np.array([self._idf(w) for w in self.vocab], dtype=np.float32)
        rows, cols, vals = [], [], []
        lengths = [sum(c.values()) for c in tf]
        mean_len = (sum(lengths) / len(lengths)) if lengths else 1.0
        for r, c in enumerate(tf):
            if scorer == "bm25":  # saturating term frequency, documents longer than the mean weigh each word less
                norm = k1 * (1 - b + b * lengths[r] / max(mean_len, 1e-9))
                v = {self.vocab[w]: self.idf[self.vocab[w]] * k * (k1 + 1) / (k + norm) for w, k in c.items()}
            else:
                v = {self.vocab[w]: (1 + math.log(k)) * self.idf[self.vocab[w]] for w, k in c.items()}
                length = math.sqrt(sum(x * x for x in v.values()))
                v = {col: x / length for col, x in v.items()} if length else {}
            for col, x in v.items():
                rows.append(r)
                cols.append(col)
                vals.append(x)
        self.matrix = csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)),
                                 shape=(len(self.ids), len(self.vocab))).tocsc()

    def _idf(self, w: str) -> float:
        df = self.df.get(w, 0)
        if self.scorer == "bm25":  # the non-negative BM25 idf
            return math.log(1 + (self.n - df + 0.5) / (df + 0.5))
        return math.log((self.n + 1) / (df + 1))

    def _vector(self, text: str) -> dict[str, float]:
        tf = Counter(terms(text))
        if self.scorer == "bm25":  # each query word once: the document side carries the weights
            return {w: 1.0 for w in tf}
        v = {w: (1 + math.log(n)) * self._idf(w) for w, n in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values()))
        return {w: x / norm for w, x in v.items()} if norm else {}

    def _scores(self, query: str):
        import numpy as np

        q = [(self.vocab[w], x) for w, x in self._vector(query).items() if w in self.vocab]
        if not q or not self.ids:
            return np.zeros(len(self.ids), dtype=np.float32)
        cols, weights = zip(*q)
        return np.asarray(self.matrix[:, list(cols)] @ np.array(weights, dtype=np.float32)).ravel()

    def scores(self, query: str) -> list[float]:
        """Score against every document (for cosine, a query word no document or background has still counts in
        the query's norm)."""
        return [float(x) for x in self._scores(query)]

    def calibrate(self, general: list[str], quantile: float, floor: float) -> float:
        """Set the threshold so that about `1 - quantile` of general questions (about none of the documents)
        would be routed, but never below `floor`. More documents share more words with general questions by
        chance, so a fixed threshold would route more of them as documents pile up."""
        best = sorted(float(self._scores(q).max()) if self.ids else 0.0 for q in general)
        at = best[min(len(best) - 1, int(quantile * len(best)))] if best else 0.0
        self.threshold = max(floor, at + 1e-6)
        if self.scorer == "cosine":
            self.threshold = min(self.threshold, 0.999)
        return self.threshold

    def route(self, query: str) -> Route:
        if not self.ids:
            return Route(None, 0.0)
        s = self._scores(query)
        i = int(s.argmax())
        best = float(s[i])
        return Route(self.ids[i] if best >= self.threshold else None, best)


class PartIndex:
    """BM25 over the parts of one document, built once per document: which parts a question is most about (a long
    document's recitation is read part by part, and the reader's window holds a few parts, not fifty)."""

    def __init__(self, parts: list[str]):
        self.n = len(parts)
        self.router = DocumentRouter({str(i): p for i, p in enumerate(parts)}, [], 1e-9) if self.n > 1 else None

    def nearest(self, question: str, k: int) -> list[int]:
        """The indices, in document order, of the `k` parts nearest `question`; the first `k` when it shares no
        word with any part."""
        if self.n <= k:
            return list(range(self.n))
        scores = self.router.scores(question)
        if max(scores) <= 0:
            return list(range(k))
        return sorted(sorted(range(self.n), key=lambda i: (-scores[i], i))[:k])


def nearest_parts(question: str, parts: list[str], k: int) -> list[int]:
    """`PartIndex(parts).nearest(question, k)`, for a single question."""
    return PartIndex(parts).nearest(question, k)

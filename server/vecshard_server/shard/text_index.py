"""A TEXT payload index: the postings of one string field's terms, for BM25 keyword search and the
`text` filter condition.

Each document (a point whose field is a string; see `document_of`) gets a document number when it
is added; a changed or removed document's number dies and a new one is given to the new text. Per
number: its slot, its length in terms and whether it is alive (numpy columns). Postings (term,
document number, term frequency) live in numpy segments sorted by term, no Python object per
posting or per term: each write batch adds one segment, and segments merge as a log-structured
merge does (a segment merges into the one before it once it is at least half its size), dropping the
postings of dead numbers; once dead numbers outnumber the live ones, everything is renumbered.

The counters are exact at every moment: documents (N), tokens (the sum of lengths), each term's
document frequency (df), distinct terms, and skipped points (the field present, not a string).

Scoring is BM25 as Lucene (8+) and bm25s's "lucene" method compute it, in float64:
idf = ln(1 + (N - df + 0.5) / (df + 0.5)), a term's score idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)),
with N, avgdl = tokens / N and df given by the caller (the collection's, summed over its shards).
A query term listed twice counts twice (as in Lucene's boolean query and bm25s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard.payload import PayloadDict, key_parts
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.shard.analysis import WORD, Analyzer

Mask = npt.NDArray[np.bool_]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

_CHUNK = 1 << 15  # documents per segment built in one go (bounds a bulk build's memory)
_MAX_SEGMENTS = 24


def _leaves(v: Any, out: list[Any]) -> None:
    if isinstance(v, list):
        for x in v:
            _leaves(x, out)
    else:
        out.append(v)


def document_of(payload: PayloadDict | None, path: Sequence[str]) -> tuple[str | None, bool]:
    """(the field's text, whether the point is skipped): the text when the field's one non-null value
    is a string (a list of one string counts), skipped when it has other non-null values."""
    if not payload:
        return None, False
    if len(path) == 1:  # (the common case, first)
        value = payload.get(path[0])
        if isinstance(value, str):
            return value, False
        if value is None:
            return None, False
    cur: list[Any] = [payload]
    for part in path:
        nxt: list[Any] = []
        for obj in cur:
            items: list[Any] = []
            _leaves(obj, items)
            nxt.extend(o[part] for o in items if isinstance(o, dict) and part in o)
        if not nxt:
            return None, False
        cur = nxt
    values: list[Any] = []
    for v in cur:
        _leaves(v, values)
    values = [v for v in values if v is not None]
    if not values:
        return None, False
    if len(values) == 1 and isinstance(values[0], str):
        return values[0], False
    return None, True


class _Segment:
    """Postings sorted by term: `terms` (distinct, ascending), the posting range of each
    (`starts`), and each posting's document number and term frequency."""

    __slots__ = ("docs", "starts", "terms", "tfs")

    def __init__(self, terms: I64, starts: I64, docs: I32, tfs: npt.NDArray[Any]) -> None:
        self.terms, self.starts, self.docs, self.tfs = terms, starts, docs, tfs

    @classmethod
    def of_sorted(cls, term: npt.NDArray[Any], docs: npt.NDArray[Any], tfs: npt.NDArray[Any]) -> _Segment:
        """A segment of postings already sorted by term (`term` per posting)."""
        cut = np.flatnonzero(term[1:] != term[:-1]) + 1
        starts = np.concatenate([[0], cut, [term.size]]).astype(np.int64)
        tf_type = np.uint16 if not tfs.size or int(tfs.max()) <= 0xFFFF else np.uint32
        return cls(term[starts[:-1]].astype(np.int64), starts, docs.astype(np.int32), tfs.astype(tf_type))

    @property
    def size(self) -> int:
        return int(self.docs.size)

    def postings(self, tid: int) -> tuple[I32, npt.NDArray[Any]] | None:
        i = int(np.searchsorted(self.terms, tid))
        if i == self.terms.size or self.terms[i] != tid:
            return None
        a, b = int(self.starts[i]), int(self.starts[i + 1])
        return self.docs[a:b], self.tfs[a:b]

    def term_per_posting(self) -> I32:
        return np.repeat(self.terms.astype(np.int32), np.diff(self.starts))


def _merge(segments: list[_Segment], alive: Mask, renumber: I64 | None = None) -> _Segment:
    """One segment of the postings of `segments` whose document is alive (renumbered if asked)."""
    terms = np.concatenate([s.term_per_posting() for s in segments])
    docs = np.concatenate([s.docs for s in segments])
    tfs = np.concatenate([s.tfs.astype(np.uint32, copy=False) for s in segments])
    keep = alive[docs]
    if not keep.all():
        terms, docs, tfs = terms[keep], docs[keep], tfs[keep]
    if renumber is not None:
        docs = renumber[docs]
    order = np.argsort(terms, kind="stable")  # runs already sorted by term: a merge of them
    return _Segment.of_sorted(terms[order], docs[order], tfs[order])


def _grown(a: npt.NDArray[Any], n: int, fill: Any) -> npt.NDArray[Any]:
    """a with room for at least n entries (doubling), new ones set to fill."""
    if n <= a.size:
        return a
    out = np.full(max(n, 2 * a.size, 1024), fill, dtype=a.dtype)
    out[: a.size] = a
    return out


Lists = list[tuple[float, list[tuple[I32, npt.NDArray[Any]]]]]  # per term: its weight, its postings


def _accumulate(total: F64, lists: Lists, norm: F64, first: bool) -> None:
    """Add each term's scores to the documents' totals, term by term (first: `total` is all zeros)."""
    for i, (w, postings) in enumerate(lists):
        for d, tf in postings:
            tf64 = tf.astype(np.float64)
            score = w * tf64 / (tf64 + np.take(norm, d))
            if first and i == 0:  # (a document is in one segment's postings of a term: no sum yet)
                total[d] = score
            else:
                np.add.at(total, d.astype(np.intp), score)


def top_k(scores: F64, ids: I64, k: int) -> tuple[F32, I64]:
    """The k best as sent (float32: what a coordinator merges), highest first, of equal scores the
    smaller id first."""
    sent = scores.astype(np.float32)
    if sent.size > k:
        part = np.argpartition(-sent, k - 1)[:k]
        keep = sent >= sent[part].min()  # every tie of the k-th, so ids break ties exactly
        sent, ids = sent[keep], ids[keep]
    order = np.lexsort((ids, -sent))[:k]
    return sent[order], ids[order]


class TextIndex:
    """The TEXT index of one payload field (see the module's docstring). The caller serialises
    writes (`update`) and reads, as PayloadStore's callers do under the partition's lock."""

    kind = "text"

    def __init__(self, field: str, params: ppb.TextIndexParams | None = None) -> None:
        self.field = field
        self.path = key_parts(field, "field")
        self.analyzer = Analyzer(params)
        self.params = self.analyzer.params
        self.vocab: dict[str, int] = {}  # term -> term id
        self._word_ids: dict[str, int] = {}  # lowercased word -> its term id (-1: a stopword)
        self.df = np.zeros(0, dtype=np.int64)  # term id -> documents holding it
        self.segments: list[_Segment] = []
        self._slot_of = np.zeros(0, dtype=np.int64)  # document number -> its slot
        self._length = np.zeros(0, dtype=np.int32)  # document number -> its terms
        self._alive = np.zeros(0, dtype=bool)
        self._next = 0  # document numbers given out
        self._doc_of_slot = np.zeros(0, dtype=np.int64)  # slot -> its document number (-1: none)
        self._skipped = np.zeros(0, dtype=bool)  # slot -> skipped (field present, not a string)
        self.documents = 0
        self.tokens = 0
        self.terms = 0  # terms with df > 0
        self.skipped = 0
        self._norms: tuple[float, int, F64] | None = None  # (avgdl, numbers, k1 * (1 - b + b * dl / avgdl))

    # -- writes ---------------------------------------------------------------------------------

    def _analyse(self, texts: Sequence[str]) -> tuple[I64, I64, I64]:
        """(the term ids of the texts' terms in order, the text of each, each text's length in terms);
        new terms get an id."""
        words: list[str] = []
        counts: list[int] = []
        findall = WORD.findall
        for text in texts:
            found = findall(text.lower())
            words += found
            counts.append(len(found))
        get = self._word_ids.get
        ids = list(map(get, words))
        if ids.count(None):
            for w in {w for i, w in zip(ids, words, strict=True) if i is None}:
                self._learn(w)
            ids = list(map(get, words))
        tids = np.array(ids, dtype=np.int64)
        doc = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
        lengths = np.array(counts, dtype=np.int64)
        if self.analyzer.stop:
            keep = tids >= 0
            tids, doc = tids[keep], doc[keep]
            lengths = np.bincount(doc, minlength=len(texts))
        return tids, doc, lengths

    def _learn(self, word: str) -> int:
        term = self.analyzer.term(word)
        tid = -1 if term is None else self.vocab.setdefault(term, len(self.vocab))
        self._word_ids[word] = tid
        return tid

    def update(
        self, slots: Sequence[int], olds: Sequence[PayloadDict | None], news: Sequence[PayloadDict | None]
    ) -> None:
        """Slot by slot, the document of payload olds[i] is replaced by that of news[i] (None: no
        payload; each slot once)."""
        gone: list[int] = []
        gone_texts: list[str] = []
        added: list[int] = []
        added_texts: list[str] = []
        path = self.path
        for slot, old, new in zip(slots, olds, news, strict=True):
            if old is new:
                continue
            old_text, old_skip = document_of(old, path)
            new_text, new_skip = document_of(new, path)
            if old_text == new_text and old_skip == new_skip:
                continue
            if old_skip != new_skip:
                self._set_skipped(slot, new_skip)
            if old_text is not None:
                gone.append(slot)
                gone_texts.append(old_text)
            if new_text is not None:
                added.append(slot)
                added_texts.append(new_text)
        if gone:
            self._remove(gone, gone_texts)
        before = len(self.segments)
        for a in range(0, len(added), _CHUNK):
            self._add(added[a : a + _CHUNK], added_texts[a : a + _CHUNK])
        if len(self.segments) > before + 1:  # a bulk build: its segments merged once
            self.segments[before:] = [_merge(self.segments[before:], self._alive)]
        if gone or added:
            self._settle()

    def _set_skipped(self, slot: int, skipped: bool) -> None:
        self._skipped = _grown(self._skipped, slot + 1, False)
        if self._skipped[slot] != skipped:
            self._skipped[slot] = skipped
            self.skipped += 1 if skipped else -1

    def _remove(self, slots: list[int], texts: list[str]) -> None:
        at = np.asarray(slots, dtype=np.int64)
        docs = np.full(at.size, -1, dtype=np.int64)
        known = at < self._doc_of_slot.size
        docs[known] = self._doc_of_slot[at[known]]
        held = docs >= 0
        if not held.all():
            at, docs = at[held], docs[held]
            texts = [t for t, h in zip(texts, held.tolist(), strict=True) if h]
        if not docs.size:
            return
        tids, doc, _ = self._analyse(texts)
        width = max(len(self.vocab), 1)
        distinct = np.unique(doc * width + tids) % width  # each text's distinct terms
        np.subtract.at(self.df, distinct, 1)
        self.terms -= int(np.count_nonzero(self.df[np.unique(distinct)] == 0))
        self.tokens -= int(self._length[docs].sum())
        self.documents -= int(docs.size)
        self._alive[docs] = False
        self._doc_of_slot[at] = -1

    def _add(self, slots: list[int], texts: list[str]) -> None:
        m = len(slots)
        tids, doc, lengths = self._analyse(texts)
        first = self._next
        self._next += m
        self._slot_of = _grown(self._slot_of, self._next, -1)
        self._length = _grown(self._length, self._next, 0)
        self._alive = _grown(self._alive, self._next, False)
        at = np.asarray(slots, dtype=np.int64)
        self._slot_of[first : self._next] = at
        self._length[first : self._next] = lengths
        self._alive[first : self._next] = True
        self._doc_of_slot = _grown(self._doc_of_slot, int(at.max()) + 1, -1)
        self._doc_of_slot[at] = np.arange(first, self._next)
        self.documents += m
        self.tokens += int(lengths.sum())
        self.df = _grown(self.df, len(self.vocab), 0)
        if not tids.size:
            return
        pairs, tfs = np.unique(tids * m + doc, return_counts=True)  # by term, then document
        segment = _Segment.of_sorted(pairs // m, pairs % m + first, tfs)
        self.terms += int(np.count_nonzero(self.df[segment.terms] == 0))
        self.df[segment.terms] += np.diff(segment.starts)
        self.segments.append(segment)

    def _settle(self) -> None:
        """Merge segments (log-structured), and renumber documents once most numbers are dead."""
        dead = self._next - self.documents
        if dead > 4096 and dead > self.documents:
            self._renumber()
            return
        segs = self.segments
        while len(segs) > 1 and (segs[-2].size <= 2 * segs[-1].size or len(segs) > _MAX_SEGMENTS):
            segs[-2:] = [_merge(segs[-2:], self._alive)]

    def _renumber(self) -> None:
        alive = self._alive[: self._next]
        renumber = np.cumsum(alive) - 1
        self.segments = [_merge(self.segments, self._alive, renumber)] if self.segments else []
        n = int(np.count_nonzero(alive))
        self._slot_of = self._slot_of[: self._next][alive].copy()
        self._length = self._length[: self._next][alive].copy()
        self._alive = np.ones(n, dtype=bool)
        self._next = n
        self._doc_of_slot[:] = -1
        self._doc_of_slot[self._slot_of] = np.arange(n)
        self._norms = None

    # -- reads ----------------------------------------------------------------------------------

    def stats(self, terms: Sequence[str]) -> tuple[int, int, list[int]]:
        """(documents, tokens, each term's document frequency here)."""
        get = self.vocab.get
        df = self.df
        out = []
        for t in terms:
            tid = get(t)
            out.append(int(df[tid]) if tid is not None else 0)
        return self.documents, self.tokens, out

    def _norm(self, avgdl: float) -> F64:
        """k1 * (1 - b + b * dl / avgdl) per document number (cached per avgdl)."""
        have = self._norms
        if have is not None and have[0] == avgdl and have[1] == self._next:
            return have[2]
        k1, b = self.analyzer.k1, self.analyzer.b
        norm = (k1 * (1 - b)) + (k1 * b / avgdl) * self._length[: self._next].astype(np.float64)
        self._norms = (avgdl, self._next, norm)
        return norm

    def _postings(self, tid: int) -> list[tuple[I32, npt.NDArray[Any]]]:
        """The term's postings: per segment holding it, (document numbers ascending, frequencies)."""
        return [p for s in self.segments if (p := s.postings(tid)) is not None]

    def score(
        self, terms: Sequence[str], df: Sequence[int], documents: int, tokens: int, k: int, mask: Mask, ids: I64
    ) -> tuple[F32, I64]:
        """The k best documents by BM25 with these statistics (the collection's), among the slots
        where `mask` is set: (scores as float32, their points' ids from `ids` by slot), best first,
        of equal (float32) scores the smaller id first.

        A document's score adds its terms' scores in one order (weight descending, then the term),
        however it is computed, so equal scores are equal bits on every shard. Documents are found
        as MaxScore finds them: candidates from the postings of the highest-weighted terms, scored
        in full by lookups; once the k-th best candidate beats the sum of the other terms' weights
        (a term's score is below its weight), no other document can reach the top k.
        """
        empty = np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
        if documents <= 0 or k <= 0:
            return empty
        weights: dict[str, float] = {}
        for term, f in zip(terms, df, strict=True):
            if term in self.vocab:
                f = min(max(int(f), 0), documents)  # (a write between the two phases: kept in range)
                weights[term] = weights.get(term, 0.0) + math.log(1 + (documents - f + 0.5) / (f + 0.5))
        order = sorted(weights, key=lambda t: (-weights[t], t))
        lists = [(weights[t], p) for t in order if (p := self._postings(self.vocab[t]))]
        if not lists:
            return empty
        norm = self._norm(tokens / documents if tokens > 0 else 1.0)
        rest = [*np.cumsum([w for w, _ in lists][::-1])[::-1].tolist(), 0.0]  # rest[j]: the weights from j on
        for j in range(1, len(lists) + 1):
            found = [d for _, p in lists[:j] for d, _ in p]
            if sum(d.size for d in found) * 8 > self._next:
                break  # most documents: score them all at once
            cand: I64 = (
                np.unique(np.concatenate(found)).astype(np.int64) if len(found) > 1 else found[0].astype(np.int64)
            )
            cand = cand[self._alive[cand]]
            slots = self._slot_of[cand]
            keep = mask[slots]
            cand, slots = cand[keep], slots[keep]
            if cand.size < k and j < len(lists):
                continue
            scores = self._at(cand, lists, norm)
            # (the margin: scores a float32 rounding apart could tie once sent)
            if j == len(lists) or rest[j] * (1 + 1e-6) < np.partition(scores, scores.size - k)[scores.size - k]:
                return top_k(scores, ids[slots], k)
        return self._dense(lists, norm, k, mask, ids)

    @staticmethod
    def _at(cand: I64, lists: Lists, norm: F64) -> F64:
        """The scores of the documents `cand` (ascending), by lookups in each term's postings."""
        out = np.zeros(cand.size, dtype=np.float64)
        nc = np.take(norm, cand)
        for w, postings in lists:
            for d, tf in postings:
                pos = np.minimum(np.searchsorted(d, cand), d.size - 1)
                hit = d[pos] == cand
                tf64 = tf[pos[hit]].astype(np.float64)
                out[hit] += w * tf64 / (tf64 + nc[hit])
        return out

    def _dense(self, lists: Lists, norm: F64, k: int, mask: Mask, ids: I64) -> tuple[F32, I64]:
        """Every document's score over the postings, then the top k. The most common terms (each in
        over a quarter of the documents, the last by weight) are added last, and only when the best
        documents without them, scored in full, do not show that no other document can reach the
        top k (a document's score is below its score without them plus their weights)."""
        n = self._next
        m = len(lists)
        while m > 1 and sum(d.size for d, _ in lists[m - 1][1]) * 4 > n:
            m -= 1
        total = np.zeros(n, dtype=np.float64)
        _accumulate(total, lists[:m], norm, True)
        barred = None
        if self.documents < n or not mask.all():  # dead numbers, or a filter: their scores zeroed
            barred = ~(self._alive[:n] & np.take(mask, self._slot_of[:n]))
            total[barred] = 0
        if m < len(lists):
            cand = self._reach(total, lists, m, norm, k)
            if cand is not None:
                return top_k(self._at(cand, lists, norm), ids[self._slot_of[cand]], k)
            _accumulate(total, lists[m:], norm, False)
            if barred is not None:
                total[barred] = 0
        cand = self._leaders(total, k)
        return top_k(total[cand], ids[self._slot_of[cand]], k)

    @staticmethod
    def _leaders(total: F64, k: int) -> I64:
        """Document numbers among which are the k highest totals (and their float32 ties), ascending."""
        block = 256
        if total.size <= 4 * block * k:
            return np.flatnonzero(total > 0)
        tops = total[: total.size // block * block].reshape(-1, block).max(axis=1)  # the k-th best of these
        bound = np.partition(tops, tops.size - k)[tops.size - k] * (1 - 1e-6)  # is a bound below the k-th
        return np.flatnonzero(total >= max(bound, np.finfo(np.float64).tiny))

    def _reach(self, total: F64, lists: Lists, m: int, norm: F64, k: int) -> I64 | None:
        """The documents that may reach the top k, given `total` over the first m terms (None: too
        many to score one by one)."""
        seed = self._leaders(total, k)
        if seed.size < k:
            return None
        full = self._at(seed, lists, norm)
        theta = np.partition(full, full.size - k)[full.size - k]  # below the k-th best score
        bound = theta / (1 + 1e-6) - sum(w for w, _ in lists[m:])  # (the margin: float32 ties)
        if bound <= 0:
            return None
        cand = np.flatnonzero(total >= bound)
        return cand if cand.size * 8 <= total.size else None

    def matches_all(self, terms: Sequence[str], n: int) -> Mask:
        """Over the first n slots: the documents holding every one of `terms` (none when empty)."""
        out = np.zeros(n, dtype=bool)
        vocab = self.vocab
        if not terms or any(t not in vocab for t in terms):
            return out
        postings = [self._postings(vocab[t]) for t in set(terms)]
        lists = [np.concatenate([d for d, _ in p]) if p else np.empty(0, np.int32) for p in postings]
        lists.sort(key=len)
        docs = lists[0]
        for other in lists[1:]:
            if not docs.size:
                break
            docs = docs[np.isin(docs, other, assume_unique=True)]
        docs = docs[self._alive[docs]]
        slots = self._slot_of[docs]
        out[slots[slots < n]] = True
        return out

    def stats_proto(self) -> ppb.TextIndexStats:
        """This partition's counts (describe)."""
        return ppb.TextIndexStats(documents=self.documents, terms=self.terms, skipped=self.skipped, tokens=self.tokens)

"""Text analysis for TEXT payload indexes (keyword search): strings into terms.

An analyzer (payload.proto's TextIndexParams): Unicode word tokens (runs of letters, digits and
underscores: Python's `\\w`), lowercased; then the stopwords of the chosen list dropped (compared
with the lowercased tokens); then each token stemmed by the chosen Snowball stemmer (PyStemmer).
Every shard analyses alike, so the terms a query names are the terms documents were indexed under.

Stopword lists come from bm25s.stopwords (a maintained library, also the keyword tests' reference).
"english" is bm25s's STOPWORDS_EN: the 33 words of Lucene's classic English stop set (the one
Elasticsearch's `_english_` and bm25s's `stopwords="en"` use): a an and are as at be but by for if
in into is it no not of on or such that the their then there these they this to was will with.
"""

from __future__ import annotations

import functools
import math
import re
import threading

import numpy as np
import Stemmer

from vecshard.errors import InvalidArgument
from vecshard.v1 import payload_pb2 as ppb

K1 = 1.2  # BM25's defaults (Lucene, Elasticsearch, bm25s)
B = 0.75

WORD = re.compile(r"\w+")

# A stopword list's language -> its name in bm25s.stopwords (imported when first used: bm25s pulls in
# scipy, which a shard without stopword lists does not need)
_STOPWORD_LISTS = {
    "chinese": "STOPWORDS_CHINESE",
    "danish": "STOPWORDS_DANISH",
    "dutch": "STOPWORDS_DUTCH",
    "english": "STOPWORDS_EN",
    "french": "STOPWORDS_FRENCH",
    "german": "STOPWORDS_GERMAN",
    "italian": "STOPWORDS_ITALIAN",
    "korean": "STOPWORDS_KOREAN",
    "norwegian": "STOPWORDS_NORWEGIAN",
    "portuguese": "STOPWORDS_PORTUGUESE",
    "russian": "STOPWORDS_RUSSIAN",
    "spanish": "STOPWORDS_SPANISH",
    "swedish": "STOPWORDS_SWEDISH",
    "turkish": "STOPWORDS_TURKISH",
}
STOPWORD_LANGUAGES: tuple[str, ...] = tuple(sorted(_STOPWORD_LISTS))


@functools.cache
def stopwords(language: str) -> frozenset[str]:
    """The stopword list of a language (one of STOPWORD_LANGUAGES), lowercased."""
    from bm25s import stopwords as lists

    return frozenset(w.lower() for w in getattr(lists, _STOPWORD_LISTS[language]))


STEMMERS: tuple[str, ...] = tuple(sorted(Stemmer.algorithms()))

_CACHE_WORDS = 1 << 20  # words remembered with their term (cleared when full)


def _language(value: str, known: tuple[str, ...], what: str) -> str:
    name = value.strip().lower()
    if name and name not in known:
        raise InvalidArgument(f"{what} {value!r} is not supported: use one of {', '.join(known)} (or none)")
    return name


def _float32(x: float) -> float:
    """A float32 value as the shortest decimal that reads back as it (0.9f is 0.9, not 0.899999976...)."""
    return float(str(np.float32(x)))


def filled(params: ppb.TextIndexParams | None) -> ppb.TextIndexParams:
    """`params` checked, with languages lowercased and k1 and b set (their defaults where unset).
    InvalidArgument: an unknown stemmer or stopword language (the message lists the supported ones),
    k1 < 0, b outside [0, 1]."""
    p = params if params is not None else ppb.TextIndexParams()
    stemmer = _language(p.stemmer, STEMMERS, "stemmer")
    stop = _language(p.stopwords, STOPWORD_LANGUAGES, "stopwords")
    k1 = _float32(p.k1) if p.HasField("k1") else K1
    b = _float32(p.b) if p.HasField("b") else B
    if not (math.isfinite(k1) and k1 >= 0):
        raise InvalidArgument(f"k1 must be a number >= 0 (BM25's term-frequency saturation; default {K1}), got {k1}")
    if not (0 <= b <= 1):
        raise InvalidArgument(f"b must be between 0 and 1 (BM25's length normalisation; default {B}), got {b}")
    return ppb.TextIndexParams(stemmer=stemmer, stopwords=stop, k1=k1, b=b)


def params_to_json(params: ppb.TextIndexParams) -> dict[str, object]:
    """A filled TextIndexParams as JSON (a snapshot's payload_indexes)."""
    return {
        "stemmer": params.stemmer,
        "stopwords": params.stopwords,
        "k1": _float32(params.k1),
        "b": _float32(params.b),
    }


def params_from_json(data: dict[str, object]) -> ppb.TextIndexParams:
    """The TextIndexParams `params_to_json` wrote, filled (checked again)."""
    p = ppb.TextIndexParams(stemmer=str(data.get("stemmer", "")), stopwords=str(data.get("stopwords", "")))
    for name in ("k1", "b"):
        if data.get(name) is not None:
            setattr(p, name, float(data[name]))  # type: ignore[arg-type]
    return filled(p)


def describe(params: ppb.TextIndexParams) -> str:
    """Filled params in words, for messages."""
    return (
        f"stemmer={params.stemmer or 'none'}, stopwords={params.stopwords or 'none'}, "
        f"k1={_float32(params.k1):g}, b={_float32(params.b):g}"
    )


def same_params(a: ppb.TextIndexParams, b: ppb.TextIndexParams) -> bool:
    """Whether two filled params analyse and score alike."""
    return (a.stemmer, a.stopwords, _float32(a.k1), _float32(a.b)) == (
        b.stemmer,
        b.stopwords,
        _float32(b.k1),
        _float32(b.b),
    )


class Analyzer:
    """Strings into terms, as TextIndexParams say (see the module's docstring). Thread-safe: each word's
    term is remembered, and the stemmer (PyStemmer's are not thread-safe) runs under a lock."""

    def __init__(self, params: ppb.TextIndexParams | None = None) -> None:
        self.params = filled(params)
        self.k1, self.b = _float32(self.params.k1), _float32(self.params.b)
        self.stop = stopwords(self.params.stopwords) if self.params.stopwords else frozenset()
        self._stemmer = Stemmer.Stemmer(self.params.stemmer) if self.params.stemmer else None
        self._lock = threading.Lock()
        self._terms: dict[str, str | None] = {}  # word (lowercased) -> its term (None: a stopword)

    @property
    def plain(self) -> bool:
        """True when a token is its own term (no stopwords, no stemmer)."""
        return self._stemmer is None and not self.stop

    def words(self, text: str) -> list[str]:
        """The text's word tokens, lowercased, in order."""
        return WORD.findall(text.lower())

    def term(self, word: str) -> str | None:
        """The term of one lowercased word token (None: a stopword)."""
        got = self._terms.get(word, "")
        if got != "":
            return got
        term: str | None
        if word in self.stop:
            term = None
        elif self._stemmer is None:
            term = word
        else:
            with self._lock:
                term = self._stemmer.stemWord(word)
        if len(self._terms) >= _CACHE_WORDS:
            self._terms.clear()
        self._terms[word] = term
        return term

    def analyze(self, text: str) -> list[str]:
        """The text's terms in order (stopwords dropped, stems), duplicates kept."""
        words = self.words(text)
        if self.plain:
            return words
        out = []
        for w in words:
            t = self.term(w)
            if t is not None:
                out.append(t)
        return out

    def counts(self, text: str) -> dict[str, int]:
        """Each distinct term of the text with its number of occurrences."""
        out: dict[str, int] = {}
        for t in self.analyze(text):
            out[t] = out.get(t, 0) + 1
        return out


DEFAULT = Analyzer()  # the analyzer of a `text` condition on a field without a TEXT index

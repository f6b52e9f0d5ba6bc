"""Okapi BM25 ranking over a small in-memory collection of documents (no dependencies).

Tokens are lower-cased runs of letters and digits, with English stop words dropped and a light
plural folding (``studies`` → ``study``, ``bees`` → ``bee``) applied to queries and documents
alike. The title counts twice, so a document about a topic outranks one that mentions it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BM25Index", "Document", "tokenize"]

_WORD = re.compile(r"[^\W_]+")
_STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers him his how i if in into is it its itself just me more most my
    no nor not now of off on once only or other our out over own same she should so some such than
    that the their them then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your""".split()
)


def _fold(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """The index terms of ``text``."""
    return [_fold(word) for word in _WORD.findall(text.lower()) if word not in _STOP_WORDS]


@dataclass(frozen=True)
class Document:
    """One searchable document."""

    title: str
    content: str
    link: str


class BM25Index:
    """An immutable BM25 index; build it once, query it from any task."""

    def __init__(self, documents: Iterable[Document], k1: float = 1.5, b: float = 0.75) -> None:
        self.documents: tuple[Document, ...] = tuple(documents)
        self._k1 = k1
        self._b = b
        self._term_counts: list[Counter[str]] = []
        self._lengths: list[int] = []
        document_frequency: Counter[str] = Counter()
        for document in self.documents:
            terms = tokenize(document.title) * 2 + tokenize(document.content)
            counts = Counter(terms)
            self._term_counts.append(counts)
            self._lengths.append(len(terms))
            document_frequency.update(counts.keys())
        total = len(self.documents)
        self._average_length = sum(self._lengths) / total if total else 0.0
        self._idf = {
            term: math.log(1 + (total - frequency + 0.5) / (frequency + 0.5))
            for term, frequency in document_frequency.items()
        }

    def search(self, query: str, limit: int = 5) -> list[tuple[Document, float]]:
        """The best ``limit`` documents for ``query`` with their scores, best first (score > 0)."""
        terms = set(tokenize(query))
        scored = []
        for index, counts in enumerate(self._term_counts):
            score = self._score(terms, counts, self._lengths[index])
            if score > 0:
                scored.append((score, index))
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        return [(self.documents[index], score) for score, index in scored[:limit]]

    def _score(self, terms: set[str], counts: Counter[str], length: int) -> float:
        norm = self._k1 * (1 - self._b + self._b * length / (self._average_length or 1.0))
        score = 0.0
        for term in terms:
            frequency = counts.get(term, 0)
            if frequency:
                score += self._idf[term] * frequency * (self._k1 + 1) / (frequency + norm)
        return score

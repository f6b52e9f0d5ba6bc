"""Search for deepsearch: a BM25 index over local documents and pluggable engines."""

from .bm25 import BM25Index, Document, tokenize
from .engines import (
    DEFAULT_CORPUS,
    LocalEngine,
    SearchDoc,
    SearchEngine,
    SearxngEngine,
    load_corpus,
)

__all__ = [
    "DEFAULT_CORPUS",
    "BM25Index",
    "Document",
    "LocalEngine",
    "SearchDoc",
    "SearchEngine",
    "SearxngEngine",
    "load_corpus",
    "tokenize",
]

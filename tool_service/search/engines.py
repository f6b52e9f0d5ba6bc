"""Pluggable search engines for deepsearch: the local BM25 corpus and SearXNG's JSON API.

An engine is anything with a ``name`` and ``async search(query, limit) -> list[SearchDoc]``
(:class:`SearchEngine`). Engine failures are raised as :class:`~tool_service.errors.UpstreamError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from ..errors import UpstreamError, UpstreamTimeout
from .bm25 import BM25Index, Document

__all__ = [
    "DEFAULT_CORPUS",
    "LocalEngine",
    "SearchDoc",
    "SearchEngine",
    "SearxngEngine",
    "load_corpus",
]

logger = logging.getLogger(__name__)

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "corpus"
_SUFFIXES = (".md", ".markdown", ".txt")
_MAX_DOCUMENT_CHARS = 200_000
_MAX_CONTENT_CHARS = 2_000


@dataclass(frozen=True)
class SearchDoc:
    """One search hit, in deepsearch's wire shape ``{doc_type, content, title, link}``."""

    doc_type: str
    title: str
    content: str
    link: str

    def to_dict(self) -> dict[str, str]:
        """The JSON form of the hit."""
        return {
            "doc_type": self.doc_type,
            "content": self.content,
            "title": self.title,
            "link": self.link,
        }


class SearchEngine(Protocol):
    """What deepsearch needs from an engine."""

    name: str

    async def search(self, query: str, limit: int) -> list[SearchDoc]:
        """The best ``limit`` hits for ``query``, best first."""
        ...


def load_corpus(folders: Iterable[Path]) -> list[Document]:
    """Every ``.md`` / ``.txt`` file under ``folders``; its title is its first heading or line."""
    documents = []
    for folder in folders:
        if not folder.is_dir():
            logger.warning("search corpus folder %s does not exist", folder)
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in _SUFFIXES or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")[:_MAX_DOCUMENT_CHARS]
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            title = lines[0].lstrip("#").strip() if lines else path.stem
            body = "\n".join(lines[1:]) if len(lines) > 1 else text
            link = "local://" + path.relative_to(folder).as_posix()
            documents.append(Document(title=title, content=body, link=link))
    return documents


class LocalEngine:
    """BM25 over a folder of documents (the shipped sample corpus plus ``SEARCH_CORPUS_DIR``)."""

    name = "local"

    def __init__(self, index: BM25Index) -> None:
        self.index = index

    async def search(self, query: str, limit: int) -> list[SearchDoc]:
        """Rank the corpus for ``query`` (in memory and fast: no thread needed)."""
        return [
            SearchDoc("local", document.title, document.content[:_MAX_CONTENT_CHARS], document.link)
            for document, _ in self.index.search(query, limit)
        ]


class SearxngEngine:
    """A SearXNG instance, through ``GET /search?q=...&format=json``."""

    name = "searxng"

    def __init__(self, base_url: str, http: httpx.AsyncClient, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._timeout = timeout

    async def search(self, query: str, limit: int) -> list[SearchDoc]:
        """Ask SearXNG; keep results that have a URL."""
        try:
            response = await self._http.get(
                self.base_url + "/search",
                params={"q": query, "format": "json"},
                timeout=self._timeout,
            )
            response.raise_for_status()
            payload: Any = response.json()
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("SearXNG did not answer in time") from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise UpstreamError(f"SearXNG failed: {exc!r}"[:300]) from exc
        results = payload.get("results") if isinstance(payload, dict) else None
        docs = []
        for result in results if isinstance(results, list) else []:
            if isinstance(result, dict) and isinstance(result.get("url"), str):
                docs.append(
                    SearchDoc(
                        "web",
                        str(result.get("title") or result["url"]),
                        str(result.get("content") or "")[:_MAX_CONTENT_CHARS],
                        result["url"],
                    )
                )
        return docs[:limit]

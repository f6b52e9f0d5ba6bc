"""The ``deepsearch`` tool: expand the query, search every engine, stream an answer citing sources.

Frames (genie-tool's shape), all carrying ``requestId``, ``query`` and ``messageType``:

- ``extend``: the sub-queries of a round, ``searchResult: {query: [...], docs: []}``;
- ``search``: their hits, ``searchResult: {query: [...], docs: [[doc, ...], ...]}`` where a doc is
  ``{doc_type, content, title, link}``;
- ``report``: ``answer`` deltas from the LLM, batched by ``streamMode``;
- the final ``report`` frame (``isFinal: true``) has the full ``answer`` and every query and hit.

Query expansion is deterministic: the query itself plus its clauses. Each further round (up to
``maxLoop``) refines the query with the most frequent new terms of the hits found so far, and
stops early when a round finds nothing new.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import AsyncGenerator, Sequence

import anyio
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from .errors import UpstreamError
from .llm import LLMClient, Message
from .search import SearchDoc, SearchEngine, tokenize
from .sse import Frame, StreamMode, batch_text

__all__ = ["DeepSearchRequest", "deepsearch_frames", "expand_query"]

logger = logging.getLogger(__name__)

_CLAUSE = re.compile(r"\s*(?:[,;?!]|\band\b|\bor\b|\bversus\b|\bvs\b\.?)\s*", re.IGNORECASE)
_MAX_SUB_QUERIES = 4
_HITS_PER_QUERY = 3
_MAX_ROUNDS = 3
_SOURCE_CHARS = 1_500
_SYSTEM_PROMPT = (
    "You are a careful research assistant. Answer the question using only the numbered sources. "
    "Cite the sources you use inline as [1], [2], ... If the sources do not answer the question, "
    "say so plainly."
)


class DeepSearchRequest(BaseModel):
    """``POST /v1/tool/deepsearch``; unlike the other tools it takes ``request_id``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    request_id: str = Field(validation_alias=AliasChoices("request_id", "requestId"))
    query: str = Field(min_length=1, max_length=4_000)
    max_loop: int = Field(
        default=1, ge=1, le=100, validation_alias=AliasChoices("maxLoop", "max_loop")
    )
    search_engines: list[str] = Field(default_factory=list, max_length=20)
    stream: bool = True
    stream_mode: StreamMode = Field(
        default_factory=StreamMode, validation_alias=AliasChoices("streamMode", "stream_mode")
    )


def expand_query(query: str) -> list[str]:
    """The query and its clauses, deduplicated, at most four."""
    queries = [query.strip()]
    queries += [part.strip() for part in _CLAUSE.split(query) if tokenize(part)]
    unique: dict[str, str] = {}
    for sub_query in queries:
        unique.setdefault(" ".join(tokenize(sub_query)), sub_query)
    return list(unique.values())[:_MAX_SUB_QUERIES]


def select_engines(engines: Sequence[SearchEngine], names: Sequence[str]) -> list[SearchEngine]:
    """The engines named in ``names``; all of them when none is named or known.

    Unknown names are ignored rather than refused: JoyAgent's backend sends its own engine names.
    """
    wanted = {name.lower() for name in names}
    chosen = [engine for engine in engines if engine.name in wanted]
    return chosen or list(engines)


async def deepsearch_frames(
    request: DeepSearchRequest, engines: Sequence[SearchEngine], llm: LLMClient
) -> AsyncGenerator[Frame, None]:
    """Run the search rounds, then stream the cited answer."""
    base: Frame = {"requestId": request.request_id, "query": request.query}
    all_queries: list[str] = []
    all_docs: list[list[dict[str, str]]] = []
    seen: set[str] = set()
    sources: list[SearchDoc] = []
    chosen = select_engines(engines, request.search_engines)
    sub_queries = expand_query(request.query)
    for _round in range(min(request.max_loop, _MAX_ROUNDS)):
        yield {
            **base,
            "messageType": "extend",
            "searchResult": {"query": sub_queries, "docs": []},
            "isFinal": False,
        }
        hits = await _search_all(chosen, sub_queries)
        fresh: list[list[SearchDoc]] = []
        for docs in hits:  # a hit already shown (this round or before) is not repeated
            fresh.append(_unseen(docs, seen))
            sources += fresh[-1]
        docs_json = [[doc.to_dict() for doc in docs] for docs in fresh]
        all_queries += sub_queries
        all_docs += docs_json
        yield {
            **base,
            "messageType": "search",
            "searchResult": {"query": sub_queries, "docs": docs_json},
            "isFinal": False,
        }
        new_docs = [doc for docs in fresh for doc in docs]
        if not new_docs:
            break
        sub_queries = [_refine(request.query, new_docs)]
    answer: list[str] = []
    deltas = llm.stream_chat(_prompt(request.query, sources))
    async for batch in batch_text(deltas, request.stream_mode):
        answer.append(batch)
        yield {**base, "messageType": "report", "answer": batch, "isFinal": False}
    yield {
        **base,
        "messageType": "report",
        "answer": "".join(answer),
        "searchResult": {"query": all_queries, "docs": all_docs},
        "searchFinish": True,
        "isFinal": True,
    }


async def _search_all(
    engines: Sequence[SearchEngine], queries: Sequence[str]
) -> list[list[SearchDoc]]:
    """Every query on every engine, concurrently; a failing engine is logged and skipped."""
    results: dict[tuple[int, int], list[SearchDoc]] = {}
    errors: list[UpstreamError] = []

    async def one(query_index: int, engine_index: int) -> None:
        engine = engines[engine_index]
        try:
            found = await engine.search(queries[query_index], _HITS_PER_QUERY)
        except UpstreamError as exc:
            logger.warning("search engine %s failed: %s", engine.name, exc.message)
            errors.append(exc)
            return
        results[query_index, engine_index] = found

    async with anyio.create_task_group() as group:
        for query_index in range(len(queries)):
            for engine_index in range(len(engines)):
                group.start_soon(one, query_index, engine_index)
    if errors and not any(results.values()):
        raise errors[0]
    return [
        [doc for engine_index in range(len(engines)) for doc in results.get((q, engine_index), [])]
        for q in range(len(queries))
    ]


def _unseen(docs: Sequence[SearchDoc], seen: set[str]) -> list[SearchDoc]:
    """The docs whose link is not in ``seen``, which is updated with them."""
    kept = []
    for doc in docs:
        if doc.link not in seen:
            seen.add(doc.link)
            kept.append(doc)
    return kept


def _refine(query: str, docs: Sequence[SearchDoc]) -> str:
    """The query plus the three most frequent new terms of ``docs``."""
    known = set(tokenize(query))
    counts = Counter(term for doc in docs for term in tokenize(doc.content) if term not in known)
    return " ".join([query, *(term for term, _ in counts.most_common(3))])


def _prompt(query: str, sources: Sequence[SearchDoc]) -> list[Message]:
    blocks = [
        f"[{number}] {doc.title} ({doc.link})\n{doc.content[:_SOURCE_CHARS]}"
        for number, doc in enumerate(sources, start=1)
    ]
    listing = "\n\n".join(blocks) if blocks else "(no sources were found)"
    return [
        {"role": "system", "content": _SYSTEM_PROMPT},
        {"role": "user", "content": f"Question: {query}\n\nSources:\n\n{listing}"},
    ]

"""deepsearch: query expansion, BM25 over the sample corpus, SearXNG, a streamed cited answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.helpers import serve_app
from tests.tool_service.fake_llm import FakeLLM, Reply
from tests.tool_service.support import Service, ServiceFactory
from tool_service.deepsearch import expand_query
from tool_service.search import DEFAULT_CORPUS, BM25Index, load_corpus


def _search(service: Service, query: str, **extra: object) -> list:
    body = {"request_id": "ds-1", "query": query, "maxLoop": 1, "stream": True, **extra}
    return service.stream("/v1/tool/deepsearch", body)


def test_deepsearch_ranks_the_right_sample_document_first(
    service: Service, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(chunks=["Plants use ", "chlorophyll [1]."])
    events = _search(service, "How do plants convert light into chemical energy?")
    frames = [event for event in events if isinstance(event, dict)]
    kinds = [frame["messageType"] for frame in frames]
    assert kinds[:2] == ["extend", "search"]
    assert set(kinds[2:]) == {"report"}
    extend, search = frames[0], frames[1]
    assert extend["searchResult"]["query"][0] == "How do plants convert light into chemical energy?"
    top = search["searchResult"]["docs"][0][0]
    assert top["title"] == "Photosynthesis"
    assert top["link"] == "local://photosynthesis.md"
    assert set(top) == {"doc_type", "content", "title", "link"}
    final = frames[-1]
    assert final["isFinal"] is True and final["answer"] == "Plants use chlorophyll [1]."
    assert "".join(f["answer"] for f in frames[2:-1]) == final["answer"]
    assert "[1] Photosynthesis" in fake_llm.last_prompt()
    assert events[-1] == "[DONE]"


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("why does TCP halve its congestion window after packet loss", "TCP congestion control"),
        ("how do honeybees tell others where the flowers are", "The honeybee waggle dance"),
        ("what makes corals turn white in warm water", "Coral reef bleaching"),
        ("can Python threads use several cores", "The Python global interpreter lock"),
        ("how did Rome get fresh water into the city", "Roman aqueducts"),
    ],
)
def test_bm25_finds_the_document_about_the_topic(query: str, title: str) -> None:
    index = BM25Index(load_corpus([DEFAULT_CORPUS]))
    assert index.search(query, 3)[0][0].title == title


def test_query_expansion_splits_clauses() -> None:
    queries = expand_query("black holes and coral bleaching; sourdough?")
    assert queries == [
        "black holes and coral bleaching; sourdough?",
        "black holes",
        "coral bleaching",
        "sourdough",
    ]
    assert expand_query("photosynthesis") == ["photosynthesis"]


def test_search_corpus_dir_adds_documents(
    make_service: ServiceFactory, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "zebra.md").write_text("# Zebra migration\nZebras cross the Mara river each year.\n")
    with make_service(SEARCH_CORPUS_DIR=str(corpus)) as service:
        events = _search(service, "when do zebras cross the Mara river", stream=True)
    assert events[1]["searchResult"]["docs"][0][0]["title"] == "Zebra migration"


@pytest.fixture
def searxng() -> Iterator[str]:
    """A fake SearXNG answering ``/search?format=json`` (and failing for the query 'boom')."""

    async def search(request: Request) -> JSONResponse:
        assert request.query_params["format"] == "json"
        query = request.query_params["q"]
        if query == "boom":
            return JSONResponse({"error": "down"}, status_code=503)
        results = [
            {"title": "Web: " + query, "url": "https://example.org/1", "content": "web text"},
            {"title": "no url"},
        ]
        return JSONResponse({"query": query, "results": results})

    with serve_app(Starlette(routes=[Route("/search", search)])) as server:
        yield server.url


def test_searxng_results_join_the_local_ones(
    make_service: ServiceFactory, fake_llm: FakeLLM, searxng: str
) -> None:
    with make_service(SEARXNG_URL=searxng) as service:
        events = _search(service, "photosynthesis", search_engines=["local", "searxng"])
        docs = events[1]["searchResult"]["docs"][0]
        assert {doc["doc_type"] for doc in docs} == {"local", "web"}
        assert any(doc["link"] == "https://example.org/1" for doc in docs)
        only_local = _search(service, "photosynthesis", search_engines=["local"])
        assert {d["doc_type"] for d in only_local[1]["searchResult"]["docs"][0]} == {"local"}
        failing = _search(service, "boom", search_engines=["searxng"])
        assert failing[-2]["error"]["code"] == "upstream_error"
        assert failing[-1] == "[DONE]"


def test_more_loops_refine_the_query_and_stop_when_nothing_new_is_found(
    service: Service, fake_llm: FakeLLM
) -> None:
    events = _search(service, "volcanoes", maxLoop=3)
    frames = [event for event in events if isinstance(event, dict)]
    extends = [f for f in frames if f["messageType"] == "extend"]
    assert 2 <= len(extends) <= 3
    assert extends[1]["searchResult"]["query"][0].startswith("volcanoes ")
    links = [
        d["link"]
        for f in frames
        if f["messageType"] == "search"
        for q in f["searchResult"]["docs"]
        for d in q
    ]
    assert len(links) == len(set(links))  # no document is reported twice
    assert frames[-1]["isFinal"] is True


def test_deepsearch_with_stream_false_answers_plain_json(
    service: Service, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(chunks=["Answer [1]."])
    response = service.client.post(
        "/v1/tool/deepsearch",
        json={"request_id": "ds-2", "query": "sourdough starter", "stream": False},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["isFinal"] is True and body["answer"] == "Answer [1]."
    assert body["searchResult"]["docs"][0][0]["title"] == "Sourdough fermentation"

"""The SSE decoder against the WHATWG parsing rules, including input split at any byte."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.upstream import ServerSentEvent, SSEDecoder, aiter_sse
from gateway.upstream.errors import UpstreamProtocolError

pytestmark = pytest.mark.anyio

TRICKY = (
    "\ufeff: opening comment\r\n"
    "retry: 2500\r\n"
    "id: 1\r\n"
    "data: caf\u00e9 \U0001f600\r\n"
    "data:second line\r\n"
    "\r\n"
    "event: update\r"
    "data:  two spaces\r"
    "\r"
    "id: bad\0id\n"
    "data: \u20ac\n"
    "\n"
    "event: empty\n"
    "\n"
    "data\n"
    "\n"
    "data: [DONE]\n"
    "\n"
    "data: never dispatched\n"
).encode()


def decode_all(chunks: list[bytes], decoder: SSEDecoder | None = None) -> list[ServerSentEvent]:
    decoder = decoder or SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


EXPECTED = [
    ServerSentEvent("caf\u00e9 \U0001f600\nsecond line", "message", "1", 2500),
    ServerSentEvent(" two spaces", "update", "1", None),
    ServerSentEvent("\u20ac", "message", "1", None),
    ServerSentEvent("", "message", "1", None),
    ServerSentEvent("[DONE]", "message", "1", None),
]


def test_tricky_stream_decodes_to_the_expected_events() -> None:
    assert decode_all([TRICKY]) == EXPECTED


def test_the_same_input_split_at_every_byte_boundary_gives_identical_events() -> None:
    for cut in range(len(TRICKY) + 1):
        assert decode_all([TRICKY[:cut], TRICKY[cut:]]) == EXPECTED, cut


def test_the_same_input_fed_one_byte_at_a_time_gives_identical_events() -> None:
    assert decode_all([TRICKY[i : i + 1] for i in range(len(TRICKY))]) == EXPECTED


def test_the_same_input_split_at_every_pair_of_boundaries_gives_identical_events() -> None:
    sample = TRICKY[:80]
    expected = decode_all([sample])
    for first in range(len(sample)):
        for second in range(first, len(sample) + 1):
            chunks = [sample[:first], sample[first:second], sample[second:]]
            assert decode_all(chunks) == expected, (first, second)


_LINES = st.lists(
    st.one_of(
        st.just(""),
        st.sampled_from(["data: x", "data:", "data", "event: e", "id: 7", "retry: 9", ": c"]),
        st.text(alphabet="data:ev tirly0\u20ac", max_size=12),
    ),
    max_size=30,
)


@given(_LINES, st.lists(st.integers(min_value=0, max_value=400), max_size=4))
def test_lf_streams_decode_the_same_whole_split_or_byte_by_byte(
    lines: list[str], cuts: list[int]
) -> None:
    # Whole LF-ended blocks take a fast path; one byte at a time never does: same events.
    raw = "".join(line + "\n" for line in lines).encode()
    reference = decode_all([raw[i : i + 1] for i in range(len(raw))])
    assert decode_all([raw]) == reference
    bounds = [0, *sorted(min(c, len(raw)) for c in cuts), len(raw)]
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode_all(chunks) == reference
    assert data_of(chunks) == [event.data for event in reference]


def data_of(chunks: list[bytes]) -> list[str]:
    """What ``feed_data`` gives for ``chunks``, as text."""
    decoder = SSEDecoder()
    found = [data for chunk in chunks for data in decoder.feed_data(chunk)]
    return [d.decode("utf-8", "replace") if isinstance(d, bytes) else d for d in found]


def test_feed_data_splits_whole_data_blocks_as_bytes_and_decodes_anything_else() -> None:
    decoder = SSEDecoder()
    assert decoder.feed_data(b"\xef\xbb\xbfdata: 1\n\n") == ["1"]  # the first chunk is decoded
    assert decoder.feed_data(b'data: {"a": 2}\n\ndata: caf\xc3\xa9\n\n') == [
        b'{"a": 2}',
        b"caf\xc3\xa9",
    ]
    assert decoder.feed_data(b"event: e\ndata: 3\n\n") == ["3"]
    assert decoder.feed_data(b"data: 4\n\ndata: fi") == ["4"]  # held back: text from here
    assert decoder.feed_data(b"ve\n\n") == ["five"]
    assert decoder.feed_data(b"data: \xc3") == [] and decoder.feed_data(b"\xa9\n\n") == ["\u00e9"]
    assert decoder.feed_data(b"data: 6\r\n\r\n") == ["6"]
    assert decoder.feed_data(b"data: 7\n\n") == [b"7"]


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        ("event: e\n", ServerSentEvent("x", "e", "", None)),
        ("retry: 5\n", ServerSentEvent("x", "message", "", 5)),
        ("data: a\n", ServerSentEvent("a\nx", "message", "", None)),
        ("id: 3\n", ServerSentEvent("x", "message", "3", None)),
    ],
)
def test_fields_of_a_block_begun_in_an_earlier_chunk_apply_to_its_event(
    first: str, expected: ServerSentEvent
) -> None:
    assert decode_all([first.encode(), b"data: x\n\n"]) == [expected]


@pytest.mark.parametrize("eol", ["\n", "\r", "\r\n"])
def test_lf_cr_and_crlf_line_ends_are_equivalent(eol: str) -> None:
    text = eol.join(["event: a", "data: x", "data: y", "", "data: z", "", ""])
    assert decode_all([text.encode()]) == [
        ServerSentEvent("x\ny", "a"),
        ServerSentEvent("z", "message"),
    ]


def test_a_cr_at_the_end_of_one_chunk_and_lf_at_the_start_of_the_next_is_one_line_end() -> None:
    events = decode_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert events == [ServerSentEvent("a\nb")]


def test_only_one_leading_bom_is_stripped() -> None:
    bom = "\ufeff".encode()
    events = decode_all([bom + bom + b"data: x\n\ndata: y\n\n"])
    # the second BOM belongs to the first field name, "\ufeffdata", which is ignored
    assert events == [ServerSentEvent("y")]


def test_a_bom_split_across_chunks_is_still_stripped() -> None:
    bom = "\ufeff".encode()
    assert decode_all([bom[:1], bom[1:2], bom[2:] + b"data: x\n\n"]) == [ServerSentEvent("x")]


def test_comments_are_ignored_but_reported() -> None:
    comments: list[str] = []
    events = decode_all(
        [b": ping\n:\ndata: x\n: inside\n\n"], SSEDecoder(on_comment=comments.append)
    )
    assert events == [ServerSentEvent("x")]
    assert comments == [" ping", "", " inside"]


def test_only_one_space_after_the_colon_is_removed() -> None:
    events = decode_all([b"data:none\n\ndata: one\n\ndata:  two\n\n"])
    assert [e.data for e in events] == ["none", "one", " two"]


def test_a_field_without_colon_has_an_empty_value() -> None:
    assert decode_all([b"data\ndata\n\n"]) == [ServerSentEvent("\n")]


def test_an_id_with_nul_is_ignored_and_ids_persist_across_events() -> None:
    decoder = SSEDecoder()
    events = decode_all(
        [b"id: 7\ndata: a\n\nid: 8\0\ndata: b\n\ndata: c\n\nid\ndata: d\n\n"], decoder
    )
    assert [(e.data, e.id) for e in events] == [("a", "7"), ("b", "7"), ("c", "7"), ("d", "")]
    assert decoder.last_event_id == ""


def test_retry_must_be_ascii_digits() -> None:
    decoder = SSEDecoder()
    text = "retry: 100\ndata: a\n\nretry: 1a\ndata: b\n\nretry: \u0663\ndata: c\n\nretry:\n\n"
    events = decode_all([text.encode()], decoder)
    assert [e.retry for e in events] == [100, None, None]
    assert decoder.retry == 100


def test_a_block_without_data_is_not_dispatched_and_resets_the_event_type() -> None:
    events = decode_all([b"event: lonely\nid: 3\n\ndata: x\n\n"])
    assert events == [ServerSentEvent("x", "message", "3")]


def test_an_unknown_field_is_ignored() -> None:
    assert decode_all([b"foo: bar\ndata: x\n\n"]) == [ServerSentEvent("x")]


def test_an_incomplete_event_at_the_end_is_not_dispatched() -> None:
    assert decode_all([b"data: x\n\ndata: y\n"]) == [ServerSentEvent("x")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert decode_all([b"data: a\xffb\n\n"]) == [ServerSentEvent("a\ufffdb")]


def test_an_endless_line_is_a_protocol_error() -> None:
    decoder = SSEDecoder(max_line=10)
    with pytest.raises(UpstreamProtocolError):
        decoder.feed(b"data: " + b"x" * 20)


async def test_aiter_sse_decodes_a_streamed_httpx_response() -> None:
    async def body() -> AsyncIterator[bytes]:
        for piece in (b"data: he", b"llo\r", b"\n\r\n: ping\n", b"data: [DONE]\n\n"):
            yield piece

    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body()
        )
    )
    comments: list[str] = []
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", "http://upstream.test/") as response:
            events = [e async for e in aiter_sse(response, on_comment=comments.append)]
    assert [e.data for e in events] == ["hello", "[DONE]"]
    assert comments == [" ping"]

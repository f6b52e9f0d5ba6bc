"""The upstream SSE parser follows the WHATWG rules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tool_service.code_interpreter import extract_code
from tool_service.llm import iter_sse_data


async def _lines(text: str) -> AsyncIterator[str]:
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        yield line


@pytest.mark.anyio
async def test_sse_data_is_parsed_with_or_without_the_space_across_line_endings() -> None:
    text = (
        ": comment\r\ndata: one\r\n\r\ndata:two\n\nevent: x\ndata: a\ndata: b\n\rdata: [DONE]\n\n"
    )
    assert [data async for data in iter_sse_data(_lines(text))] == ["one", "two", "a\nb", "[DONE]"]


@pytest.mark.anyio
async def test_a_last_event_without_a_blank_line_is_still_delivered() -> None:
    assert [data async for data in iter_sse_data(_lines("data: tail"))] == ["tail"]


def test_code_is_extracted_from_the_python_block_of_an_answer() -> None:
    answer = "Sure.\n```text\nnot this\n```\n```python\nprint(1)\n```\nbye"
    assert extract_code(answer) == "print(1)"
    assert extract_code("```\nx = 2\n```") == "x = 2"
    assert extract_code("print(3)") == "print(3)"

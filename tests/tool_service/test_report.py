"""The report tool: streamed from the LLM, saved as a file that can be downloaded."""

from __future__ import annotations

import httpx

from tests.tool_service.fake_llm import FakeLLM, Reply
from tests.tool_service.support import Service


def test_a_report_file_can_be_downloaded(service: Service, fake_llm: FakeLLM) -> None:
    service.client.post(
        "/v1/file_tool/upload_file",
        json={"requestId": "rep", "fileName": "facts.txt", "content": "Bees dance."},
    )
    fake_llm.reply = Reply(chunks=["# Bees\n", "They ", "dance.\n"])
    events = service.stream(
        "/v1/tool/report",
        {
            "requestId": "rep",
            "task": "Summarise the facts",
            "fileNames": ["facts.txt"],
            "fileName": "bees",
            "fileDescription": "a bee report",
            "fileType": "markdown",
        },
    )
    final = events[-2]
    assert final["isFinal"] is True
    assert final["data"] == "# Bees\nThey dance.\n"
    [info] = final["fileInfo"]
    assert info["fileName"] == "bees.md"
    download = httpx.get(info["downloadUrl"], timeout=10)
    assert download.status_code == 200
    assert download.text == "# Bees\nThey dance.\n"
    prompt = fake_llm.last_prompt()
    assert "Summarise the facts" in prompt and "Bees dance." in prompt


def test_an_html_report_is_saved_without_its_code_fence(
    service: Service, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(chunks=["```html\n", "<html><body>Hi</body></html>\n", "```"])
    response = service.client.post(
        "/v1/tool/report",
        json={"requestId": "rep", "task": "greet", "fileType": "html", "stream": False},
    )
    assert response.status_code == 200
    final = response.json()
    assert final["fileInfo"][0]["fileName"] == "report.html"
    saved = service.client.get(final["fileInfo"][0]["downloadUrl"])
    assert saved.text == "<html><body>Hi</body></html>"


def test_a_report_on_a_missing_file_is_refused_before_streaming(service: Service) -> None:
    response = service.client.post(
        "/v1/tool/report", json={"requestId": "rep", "task": "t", "fileNames": ["nope.txt"]}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"

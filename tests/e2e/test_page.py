"""The browser page against a live gateway: rendering, resume after a drop, polling, cancel."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Stack

STATUS = "#status"
WORDS_40 = " ".join(f"word{i:02d}" for i in range(40))


def ask(page: Page, query: str, agent_type: str | None = None) -> str:
    """Type ``query``, send it (to ``agent_type`` when given), and return the task id once the
    page follows it."""
    if agent_type is not None:
        page.select_option("#agent-type", agent_type)
    page.fill("#query", query)
    page.click("#send")
    page.wait_for_function("document.body.dataset.taskId")
    return str(page.evaluate("document.body.dataset.taskId"))


def wait_for_status(page: Page, status: str, timeout: float = 15_000) -> None:
    expect(page.locator(STATUS)).to_have_attribute("data-status", status, timeout=timeout)


def assert_clean_stream(page: Page) -> None:
    """Every seq applied at most once, in order, and streamed deltas matched final frames (a
    replay leaves out the deltas of messages whose final frame it sends: DESIGN §5)."""
    seqs = page.evaluate("window.agw.seqs")
    assert seqs == sorted(set(seqs)) and seqs[0] == 1
    assert page.evaluate("window.agw.view.deltaMismatches") == 0


def snapshot(stack: Stack, task_id: str) -> dict[str, object]:
    response = httpx.get(f"{stack.gateway_url}/api/tasks/{task_id}", timeout=5)
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


def completed_answer(page: Page, stack: Stack, task_id: str, timeout: float = 15_000) -> str:
    """Wait until the task completes; its result as the gateway holds it, which the page shows
    as the answer."""
    wait_for_status(page, "COMPLETED", timeout=timeout)
    result = snapshot(stack, task_id)["result"]
    assert isinstance(result, str)
    expect(page.locator("#answer")).to_have_text(result)
    return result


def test_a_query_typed_into_the_page_renders_plan_task_and_final_answer(
    page: Page, stack: Stack
) -> None:
    task_id = ask(page, "hello from the browser")

    wait_for_status(page, "COMPLETED")
    expect(page.locator("#answer")).to_have_text("hello from the browser")
    expect(page.locator("#answer")).to_have_attribute("data-final", "true")
    expect(page.locator("#plan h2")).to_have_text("Echo")
    expect(page.locator("#plan .step")).to_have_attribute("data-status", "completed")
    expect(page.locator("#tasks .task h3")).to_have_text("Echo the query")
    expect(page.locator("#connection")).to_have_attribute("data-mode", "sse")
    expect(page.locator(f"#history li[data-task-id='{task_id}']")).to_have_attribute(
        "data-status", "COMPLETED"
    )
    assert_clean_stream(page)
    assert snapshot(stack, task_id)["result"] == "hello from the browser"


def test_a_network_drop_mid_run_resumes_with_no_fragment_duplicated_or_missing(
    page: Page, stack: Stack
) -> None:
    task_id = ask(page, WORDS_40)
    page.wait_for_function("document.getElementById('answer').textContent.split(' ').length >= 8")

    # Cut the live stream, and refuse the first reconnection too: the page must back off and retry.
    page.route("**/events*", lambda route: route.abort("internetdisconnected"))
    assert stack.proxy.cut() >= 1
    page.wait_for_selector("#connection[data-failures='2']")
    page.unroute("**/events*")

    wait_for_status(page, "COMPLETED")
    expect(page.locator("#answer")).to_have_text(WORDS_40)
    expect(page.locator("#connection")).to_have_attribute("data-mode", "sse")
    assert_clean_stream(page)
    assert snapshot(stack, task_id)["result"] == WORDS_40


def test_with_sse_blocked_entirely_the_polling_fallback_completes_the_task(
    page: Page, stack: Stack
) -> None:
    page.route("**/events*", lambda route: route.abort("connectionrefused"))
    query = " ".join(f"poll{i}" for i in range(12))
    task_id = ask(page, query)

    page.wait_for_selector("#connection[data-mode='polling']")
    wait_for_status(page, "COMPLETED")
    expect(page.locator("#answer")).to_have_text(query)
    assert_clean_stream(page)
    assert snapshot(stack, task_id)["status"] == "COMPLETED"


def test_cancel_from_the_page_stops_the_task(page: Page, stack: Stack) -> None:
    task_id = ask(page, " ".join(f"long{i}" for i in range(400)))
    page.wait_for_function("document.getElementById('answer').textContent.length > 0")

    page.click("#cancel")

    wait_for_status(page, "CANCELLED")
    assert snapshot(stack, task_id)["status"] == "CANCELLED"
    expect(page.locator("#send")).to_be_enabled()
    assert_clean_stream(page)


def test_a_react_answer_grows_on_the_page_while_the_model_writes_it(
    page: Page, stack: Stack
) -> None:
    task_id = ask(page, "tell me something nice about rivers and the sea", agent_type="5")

    # Text shows as soon as the model writes it, provisionally, before its turn has ended.
    page.wait_for_function(
        "(document.querySelector('#answer .writing')?.textContent || '').split(' ').length >= 3"
    )
    early = page.evaluate("document.querySelector('#answer .writing').textContent")

    result = completed_answer(page, stack, task_id)
    assert result.startswith("You asked: tell me something nice")
    assert result.startswith(early) and len(early) < len(result)
    expect(page.locator("#answer .answer-part")).to_have_count(1)
    expect(page.locator(".writing")).to_have_count(0)
    expect(page.locator("#tasks .thought")).to_have_count(0)
    assert_clean_stream(page)


def test_a_react_thought_settles_into_the_tool_work_and_never_stays_as_the_answer(
    page: Page, stack: Stack
) -> None:
    task_id = ask(page, "compute 17 * 23", agent_type="5")

    result = completed_answer(page, stack, task_id)
    assert result.startswith("Done: Error: tool code_interpreter")
    thought = page.locator("#tasks .task .thought")
    expect(thought).to_have_count(1)
    expect(thought).to_have_text("I will use code_interpreter to work on: compute 17 * 23")
    expect(page.locator("#tasks .task .tool-result summary")).to_have_text("tool code_interpreter")
    expect(page.locator(".writing")).to_have_count(0)
    assert "I will use" not in page.evaluate("document.getElementById('answer').textContent")
    assert_clean_stream(page)


def test_in_deep_think_each_steps_turns_settle_in_its_card_and_the_summary_is_the_answer(
    page: Page, stack: Stack
) -> None:
    task_id = ask(page, "compute 17 * 23", agent_type="3")

    result = completed_answer(page, stack, task_id, timeout=30_000)
    assert result.startswith("## Summary: compute 17 * 23")
    card = page.locator("#tasks .task")
    expect(card).to_have_count(1)
    expect(card.locator(".thought")).to_have_text(
        "I will use code_interpreter to work on: Write and run Python code to calculate: "
        "compute 17 * 23"
    )
    expect(card.locator(".summary")).to_have_text(re.compile(r"^Done: Error: tool code_inter"))
    expect(page.locator(".writing, .writing-turn")).to_have_count(0)
    assert_clean_stream(page)

"""JoyAgent-JDGenie's own React UI against the gateway, in Chromium: what a person sees.

The UI is the production build in ``../shared/joyagent-ui`` (beside the repository), served by
its own ``serve.py`` pointed at a real gateway with the built-in agents on llm_stub and
tool_service. Each test types a query, sends it in ReAct or deep-think mode and checks the page:
no application error, no "calling a tool" item when no tool was called, the thought box growing
while the model writes (sampled in the page every 50 ms), the answer shown being the task's
result (read from the native API), and the input back to idle.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from gateway.app import create_app
from gateway.settings import Settings
from gateway.tasks import TaskRegistry
from tests.e2e.contract_agents import ANSWER, STEP_ANSWER, SUMMARY, register_contract_agents
from tests.gateway.agents.support import gateway_settings, running_upstreams
from tests.helpers import free_port, serve_app, wait_http_ok

pytestmark = pytest.mark.slow  # the model writes at a watchable pace: seconds a test

UI_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "joyagent-ui"
GPT = "/web/api/v1/gpt/queryAgentStreamIncr"
IDLE = "希望 Genie 为你做哪些任务呢\uff1f"  # the last character is a full-width "?"
CALLING_A_TOOL = "正在调用工具"
CRASH = "Unexpected Application Error!"
PACE = "[[stub:tps=30]]"  # the model writes 30 tokens a second: slow enough to watch
QUERIES = {
    "no_tool": f"hello there, how are you today {PACE}",
    "code": f"calculate 17 * 23 {PACE}",
    "search": f"search for photosynthesis {PACE}",
}
TOOL_ITEMS = {"code": ("正在执行代码",), "search": ("正在搜索", "正在总结")}  # its item says
TWO_STEPS = f"calculate 17 * 23 then search for photosynthesis {PACE}"  # the plan has two steps
DONE = "已完成"  # a plan item: "completed" and the step's name
PLAN_BOX = 'div[class="w-full px-12 py-8 rounded-[12px] mt-[24px] bg-[#F2F3F7]"]'

# Sampled in the page every 50 ms: the text length of every "思考过程" (thought) box, of the
# planner's thought box (deep-think), and whether the answer is shown yet.
SAMPLER = """
(() => {
  const texts = () => [...document.querySelectorAll("span")]
    .filter((s) => s.textContent === "思考过程")
    .map((s) => s.parentElement.nextElementSibling.textContent.length);
  const plan = () => {
    const box = document.querySelector(
      'div[class="w-full px-12 py-8 bg-[#F2F3F7] rounded-[12px] mt-[24px]"]');
    return box ? box.textContent.length : 0;
  };
  window.__samples = [];
  setInterval(() => {
    if (window.__samples.length < 4000) {
      window.__samples.push({thoughts: texts(), plan: plan(), answered: !!answer()});
    }
  }, 50);
  window.__answer = answer;
  function answer() {
    return document.querySelector(
      'div[class="w-full"] > div[class="mb-[8px]"] > div[class="mb-[8px]"]');
  }
})();
"""


@dataclass
class JoyAgent:
    """The UI's URL and the gateway's."""

    ui_url: str
    gateway_url: str


@contextlib.contextmanager
def serve_ui(port: int, backend: str) -> Iterator[str]:
    """JoyAgent's UI served by its own ``serve.py`` against ``backend``; yields its URL."""
    server = UI_DIR / "serve.py"
    if not server.is_file():
        pytest.fail(f"JoyAgent's UI is missing: {server.resolve()}", pytrace=False)
    args = [sys.executable, str(server), "--port", str(port), "--backend", backend]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(url + "/", proc=proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def joyagent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JoyAgent]:
    """Gateway (built-in agents, CORS for the UI's origin, a 0.3 s heartbeat) on real upstreams,
    and the UI."""
    ui_port = free_port()
    origin = f"http://127.0.0.1:{ui_port}"
    with running_upstreams(tmp_path_factory.mktemp("joyagent-ui")) as upstreams:
        settings = gateway_settings(
            upstreams.settings, cors_origins=(origin,), compat_heartbeat_interval=0.3
        )  # heartbeat packets arrive during every run
        with serve_app(create_app(settings)) as gateway, serve_ui(ui_port, gateway.url) as ui:
            yield JoyAgent(ui, gateway.url)


@pytest.fixture(scope="module")
def live_text() -> Iterator[JoyAgent]:
    """A gateway whose agents 3 and 5 print DESIGN §3's live-text messages, and the UI."""
    ui_port = free_port()
    registry = TaskRegistry()
    register_contract_agents(registry)
    settings = Settings(
        cors_origins=(f"http://127.0.0.1:{ui_port}",), compat_heartbeat_interval=0.3
    )
    with serve_app(create_app(settings, registry=registry)) as gateway:
        with serve_ui(ui_port, gateway.url) as ui:
            yield JoyAgent(ui, gateway.url)


@dataclass
class Run:
    """One query sent from the UI, after the UI went back to idle."""

    page: Page
    errors: list[str]
    task: dict[str, Any]  # the task as the native API lists it
    samples: list[dict[str, Any]]

    @property
    def text(self) -> str:
        return str(self.page.evaluate("document.body.innerText"))

    @property
    def thoughts(self) -> list[str]:
        """The texts of the thought boxes, in page order."""
        script = """[...document.querySelectorAll("span")]
            .filter((s) => s.textContent === "思考过程")
            .map((s) => s.parentElement.nextElementSibling.innerText)"""
        return list(self.page.evaluate(script))

    @property
    def answer(self) -> str:
        return str(self.page.evaluate("window.__answer().innerText"))

    @property
    def plan_box(self) -> dict[str, list[str]]:
        """The "任务计划" (task plan) box: its headings (the stages) and its numbered steps."""
        script = """((selector) => {
            const box = document.querySelector(selector);
            const texts = (css) => [...(box ? box.querySelectorAll(css) : [])]
                .map((e) => e.innerText);
            return {headings: texts('div[class^="h-[22px]"]'),
                    steps: texts('div[class="leading-[22px]"]')};
        })"""
        return dict(self.page.evaluate(script, PLAN_BOX))

    @property
    def step_groups(self) -> list[dict[str, Any]]:
        """Each plan step's group: its title (``task``) and the text of each of its items."""
        script = """[...document.querySelectorAll('div[class="font-[500]"]')].map((title) => ({
            task: title.innerText,
            items: [...title.parentElement.children].slice(1).map((item) => item.innerText)}))"""
        return list(self.page.evaluate(script))


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(SAMPLER)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


def ask(page: Page, joyagent: JoyAgent, query: str, *, deep_think: bool) -> Run:
    """Open the UI, send ``query`` (web mode; deep-think if asked), wait until it is idle."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(joyagent.ui_url)
    box = page.locator("textarea")
    page.get_by_text("网页模式", exact=True).click()
    if deep_think:
        page.get_by_text("深度研究", exact=True).click()
    box.fill(query)
    with page.expect_response(lambda r: r.url.endswith(GPT) and r.request.method == "POST") as sent:
        box.press("Enter")
    response = sent.value
    task_id = response.headers["x-task-id"]
    request_id = (response.request.post_data_json or {})["requestId"]
    expect(box).to_have_attribute("placeholder", "任务进行中")
    answer = page.locator('div[class="w-full"] > div[class="mb-[8px]"] > div[class="mb-[8px]"]')
    crash = page.get_by_text(CRASH)
    expect(answer.or_(crash)).to_be_visible(timeout=60_000)
    expect(crash).to_have_count(0)
    expect(box).to_have_attribute("placeholder", IDLE)
    listed = httpx.get(f"{joyagent.gateway_url}/api/tasks", params={"ids": task_id}, timeout=5)
    (task,) = listed.json()["tasks"]
    assert task["requestId"] == request_id, "the UI's requestId names the task"
    return Run(page, errors, task, page.evaluate("window.__samples"))


def native_messages(joyagent: JoyAgent, task_id: str) -> list[dict[str, Any]]:
    """The task's messages, read from the native API page by page."""
    messages: list[dict[str, Any]] = []
    after = 0
    with httpx.Client(base_url=joyagent.gateway_url, timeout=5) as client:
        for _ in range(100):
            page = client.get(f"/api/tasks/{task_id}", params={"after": after, "limit": 1000})
            batch = page.json()["messages"]
            if not batch:
                return messages
            messages += batch
            after = page.json()["nextAfter"]
    raise AssertionError("the task's log did not end")


def lines(text: str) -> list[str]:
    """The lines of an item's text, whitespace collapsed."""
    return [" ".join(line.split()) for line in text.splitlines()]


def partial_lengths(lengths: list[int]) -> set[int]:
    """The lengths a box had while it was neither empty nor complete."""
    final = lengths[-1] if lengths else 0
    return {n for n in lengths if 0 < n < final}


def last_thought_lengths(run: Run) -> list[int]:
    """The text length of the last thought box in each sample that had it, in order."""
    count = len(run.samples[-1]["thoughts"])
    return [s["thoughts"][count - 1] for s in run.samples if len(s["thoughts"]) >= count]


def assert_what_a_person_sees(run: Run, scenario: str) -> None:
    assert CRASH not in run.text
    assert run.errors == []
    assert run.task["status"] == "COMPLETED"
    assert run.answer.split() == run.task["result"].split(), "the answer shown is the result"
    # The built-in tools show their own item (as JoyAgent's do): no generic "calling a tool".
    assert CALLING_A_TOOL not in run.text
    if scenario != "no_tool":
        assert any(words in run.text for words in TOOL_ITEMS[scenario]), "the tool's item"


@pytest.mark.parametrize("scenario", list(QUERIES))
def test_react_mode_shows_the_answer_as_the_result_and_returns_to_idle(
    page: Page, joyagent: JoyAgent, scenario: str
) -> None:
    run = ask(page, joyagent, QUERIES[scenario], deep_think=False)

    assert_what_a_person_sees(run, scenario)
    thoughts = run.thoughts
    assert thoughts[-1].split() == run.task["result"].split(), "its text streamed as a thought"
    if scenario != "no_tool":
        assert len(thoughts) == 2, "one thought before the tool call, one for the answer"


@pytest.mark.parametrize("scenario", list(QUERIES))
def test_deep_think_mode_renders_plan_steps_and_summary_without_crashing(
    page: Page, joyagent: JoyAgent, scenario: str
) -> None:
    run = ask(page, joyagent, QUERIES[scenario], deep_think=True)

    assert_what_a_person_sees(run, scenario)
    plan = [s["plan"] for s in run.samples]
    assert len(partial_lengths(plan)) >= 2, f"the planner's thought grew while written: {plan}"
    summary = last_thought_lengths(run)
    assert len(partial_lengths(summary)) >= 2, f"the summary grew while written: {summary}"
    box = run.plan_box
    assert box["headings"] and all(h.strip() for h in box["headings"]), f"no empty bullet: {box}"


def test_deep_think_shows_the_plan_and_each_step_answer_and_plan_item_once_in_its_step(
    page: Page, joyagent: JoyAgent
) -> None:
    run = ask(page, joyagent, TWO_STEPS, deep_think=True)

    assert_what_a_person_sees(run, "code")
    messages = native_messages(joyagent, run.task["taskId"])
    plan = next(m["plan"] for m in messages if m["messageType"] == "plan")
    answers = [
        " ".join(m["taskSummary"].split())
        for m in messages
        if m["messageType"] == "task_summary" and m["isFinal"]
    ]
    assert len(plan["steps"]) == len(answers) == 2
    box = run.plan_box
    assert box["headings"] == [plan["title"]], f"one heading, the plan's title: {box}"
    assert box["steps"] == [f"{i}.{step}" for i, step in enumerate(plan["steps"], 1)]
    groups = run.step_groups
    assert [g["task"] for g in groups] == plan["steps"]
    for group, answer in zip(groups, answers, strict=True):
        items = group["items"]
        assert [item for item in items if item.startswith(DONE)] == [f"{DONE}\n{group['task']}"], (
            f"one plan item in a step, naming that step: {items}"
        )
        assert sum(answer in lines(item) for item in items) == 1, f"{answer!r} once: {items}"


def test_react_thought_box_grows_while_the_model_writes(page: Page, joyagent: JoyAgent) -> None:
    run = ask(page, joyagent, QUERIES["no_tool"], deep_think=False)

    assert_what_a_person_sees(run, "no_tool")
    lengths = last_thought_lengths(run)
    assert len(partial_lengths(lengths)) >= 2, f"the thought grew while written: {lengths}"


@pytest.mark.parametrize("with_tool", [False, True], ids=["no_tool", "tool"])
def test_live_react_turns_each_grow_one_thought_and_the_answer_is_the_result(
    page: Page, live_text: JoyAgent, with_tool: bool
) -> None:
    query = "use a tool: what does stream mean" if with_tool else "what does stream mean"
    run = ask(page, live_text, query, deep_think=False)

    assert run.errors == [] and run.task["status"] == "COMPLETED"
    assert run.answer == run.task["result"] == ANSWER
    assert run.text.count(CALLING_A_TOOL) == int(with_tool), "a tool item only for a tool call"
    assert len(run.thoughts) == (2 if with_tool else 1) and run.thoughts[-1] == ANSWER
    lengths = last_thought_lengths(run)
    assert len(partial_lengths(lengths)) >= 2, f"the thought grew while written: {lengths}"


def test_live_plan_turns_grow_their_thoughts_and_the_step_summary_is_shown(
    page: Page, live_text: JoyAgent
) -> None:
    run = ask(page, live_text, "what does stream mean", deep_think=True)

    assert run.errors == [] and run.task["status"] == "COMPLETED"
    assert run.answer == run.task["result"] == SUMMARY
    assert run.text.count(STEP_ANSWER) == 1, "the step's answer, once: as its settled thought"
    plan = [s["plan"] for s in run.samples]
    assert len(partial_lengths(plan)) >= 2, f"the planner's thought grew while written: {plan}"
    for index in range(3):  # the step's thought, the step's answer, the summary
        lengths = [s["thoughts"][index] for s in run.samples if len(s["thoughts"]) > index]
        assert len(partial_lengths(lengths)) >= 2, f"thought {index} grew: {lengths}"

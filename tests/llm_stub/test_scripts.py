"""The stub's deterministic roles: planner steps, executor tool choice, summaries, plain answers."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import orjson

from llm_stub import respond
from llm_stub.scripts import MAX_TOOL_CALLS, plan_steps

PLANNER = {"role": "system", "content": "You plan. [agw:planner]"}
EXECUTOR = {"role": "system", "content": "[agw:executor] You execute one step."}
REACT = {"role": "system", "content": "[agw:react]"}
SUMMARY = {"role": "system", "content": "[agw:summary]"}


def tool(name: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties or {}}
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


BUILTINS = [tool("code_interpreter"), tool("deepsearch"), tool("report")]
ECHO = tool("everything__echo", {"message": {"type": "string"}})
ADD = tool("everything__add", {"a": {"type": "number"}, "b": {"type": "integer"}})


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<stub>", "exec"), {})
    return out.getvalue()


def test_planner_plans_one_step_per_category_in_order_of_appearance() -> None:
    query = "Find the latest GDP figures, then plot them with python and write a report"
    reply = respond([PLANNER, user(query)], [tool("planning")])
    assert reply.finish_reason == "tool_calls" and reply.tool_call is not None
    assert reply.tool_call.name == "planning"
    args = reply.tool_call.arguments
    assert args["command"] == "create"
    assert args["title"] == "Find the latest GDP figures, then plot them"
    steps = args["steps"]
    assert len(steps) == 3
    assert "search" in steps[0].lower() and "code" in steps[1].lower() and "report" in steps[2]
    assert reply.content.startswith(
        'To answer "Find the latest GDP figures, then plot them" I will'
    )


def test_planner_maps_mcp_words_to_an_echo_step() -> None:
    for query in ("Use mcp to say hi", "echo hello", "please add 2 and 3"):
        (step,) = plan_steps(query)
        assert "echo" in step


def test_planner_falls_back_to_two_generic_steps() -> None:
    steps = plan_steps("Tell me about tea")
    assert len(steps) == 2 and all("Tell me about tea" in s for s in steps)


def test_planner_never_plans_more_than_five_steps() -> None:
    query = "code search report echo compute research document mcp " * 3
    assert len(plan_steps(query)) <= 5


def test_planner_keyword_words_do_not_match_inside_other_words() -> None:
    # "summary" is not "sum", "address" is not "add", "codec" is not "code"
    assert len(plan_steps("Give me a summary of the address codec")) == 2


def test_planner_answers_in_text_without_the_planning_tool() -> None:
    reply = respond([PLANNER, user("search for tea")])
    assert reply.tool_call is None and "1. Search for the latest information" in reply.content


def test_executor_picks_code_interpreter_with_a_runnable_program() -> None:
    reply = respond([EXECUTOR, user("Calculate the sum of 1, 2 and 3.5")], BUILTINS)
    assert reply.tool_call is not None and reply.tool_call.name == "code_interpreter"
    assert reply.tool_call.arguments["task"] == "Calculate the sum of 1, 2 and 3.5"
    assert "sum: 6.5" in run(reply.tool_call.arguments["code"])
    assert reply.content.startswith("I will use code_interpreter")


def test_an_arithmetic_question_is_computed_by_code_and_answered_with_its_value() -> None:
    query = "What is 17 * 23? compute it"
    reply = respond([REACT, user(query)], BUILTINS)
    assert reply.tool_call is not None and reply.tool_call.name == "code_interpreter"
    printed = run(reply.tool_call.arguments["code"])
    assert printed == "17 * 23 = 391\n"

    call = {"id": "c1", "type": "function", "function": {"name": "code_interpreter"}}
    messages = [
        REACT,
        user(query),
        {"role": "assistant", "content": reply.content, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "exit code 0\n" + printed},
    ]
    answer = respond(messages, BUILTINS)
    assert answer.tool_call is None and answer.content == "17 * 23 = 391"


def test_arithmetic_in_other_notations_is_computed_as_written() -> None:
    for query, printed in (
        ("calculate (2 + 3) ^ 2", "(2 + 3) ** 2 = 25\n"),
        ("compute 10 / 4 - 1 in python", "10 / 4 - 1 = 1.5\n"),
        ("what is 6\u00d77? calculate", "6*7 = 42\n"),  # the multiplication sign
    ):
        reply = respond([EXECUTOR, user(query)], BUILTINS)
        assert reply.tool_call is not None
        assert run(reply.tool_call.arguments["code"]) == printed, query


def test_executor_picks_deepsearch_and_report_by_keyword() -> None:
    search = respond([EXECUTOR, user("Search for the latest Python news")], BUILTINS)
    report = respond([REACT, user("Write a report on tea")], BUILTINS)
    assert search.tool_call is not None and search.tool_call.name == "deepsearch"
    assert search.tool_call.arguments == {"query": "Search for the latest Python news"}
    assert report.tool_call is not None and report.tool_call.name == "report"
    assert report.tool_call.arguments == {
        "task": "Write a report on tea",
        "fileName": "report.md",
        "fileType": "markdown",
    }


def test_executor_follows_the_planner_steps() -> None:
    query = "Look up the latest rust release, compute 2 + 3 in python, echo it and write a report"
    tools = [*BUILTINS, ECHO]
    chosen = []
    for step in plan_steps(query):
        reply = respond([EXECUTOR, user(step)], tools)
        assert reply.tool_call is not None
        chosen.append(reply.tool_call.name)
    assert chosen == ["deepsearch", "code_interpreter", "everything__echo", "report"]


def test_executor_calls_a_named_mcp_tool_with_schema_built_arguments() -> None:
    echo = respond([REACT, user("Please echo hello world")], [*BUILTINS, ECHO, ADD])
    add = respond([REACT, user("add 2 and 5")], [*BUILTINS, ECHO, ADD])
    assert echo.tool_call is not None and echo.tool_call.name == "everything__echo"
    assert echo.tool_call.arguments == {"message": "Please echo hello world"}
    assert add.tool_call is not None and add.tool_call.name == "everything__add"
    assert add.tool_call.arguments == {"a": 2, "b": 5}


def test_missing_numbers_default_to_one_two_three() -> None:
    reply = respond([REACT, user("add things")], [ADD])
    assert reply.tool_call is not None and reply.tool_call.arguments == {"a": 1, "b": 2}


def test_executor_answers_plainly_when_no_tool_matches() -> None:
    reply = respond([EXECUTOR, user("Say something nice")], BUILTINS)
    assert reply.tool_call is None and reply.finish_reason == "stop"
    assert reply.content.startswith("You asked: Say something nice")


def test_executor_answers_done_with_the_tool_result_after_a_tool_message() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "deepsearch", "arguments": "{}"}}
    result = "x" * 150 + " the tool said many things " + "y" * 200
    messages = [
        EXECUTOR,
        user("Search for tea"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": result},
    ]
    reply = respond(messages, BUILTINS)
    assert reply.tool_call is None and reply.finish_reason == "stop"
    assert reply.content == "Done: " + result[:200] + "…"


def test_executor_makes_no_more_than_three_tool_calls_per_conversation() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "deepsearch", "arguments": "{}"}}
    history: list[dict[str, Any]] = [EXECUTOR]
    for i in range(MAX_TOOL_CALLS):
        history += [
            user(f"search step {i}"),
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ]
    reply = respond([*history, user("search once more")], BUILTINS)
    assert reply.tool_call is None


def test_tool_choice_none_disables_tools() -> None:
    reply = respond([EXECUTOR, user("Search for tea")], BUILTINS, tool_choice="none")
    assert reply.tool_call is None


def test_summary_is_markdown_built_from_the_query_and_earlier_messages() -> None:
    messages = [
        SUMMARY,
        user("What is the best tea?"),
        {"role": "assistant", "content": "I searched for tea rankings."},
        {"role": "tool", "tool_call_id": "c", "content": "Oolong ranks first."},
        user("Summarise the best tea"),
    ]
    content = respond(messages).content
    assert content.startswith("## Summary: Summarise the best tea")
    assert "- Oolong ranks first." in content and "- I searched for tea rankings." in content


def test_no_marker_and_a_code_request_gives_a_fenced_python_program() -> None:
    content = respond([user("Write python code that adds 40 and 2")]).content
    program = content.split("```python\n", 1)[1].split("```", 1)[0]
    assert "sum: 42" in run(program)


def test_no_marker_gives_a_deterministic_echo_answer() -> None:
    first = respond([user("How tall is 3 and 4? [[stub:tps=0]]")])
    second = respond([user("How tall is 3 and 4? [[stub:tps=0]]")])
    assert first == second
    assert first.content.startswith("You asked: How tall is 3 and 4?\n")
    assert "add up to 7" in first.content


def test_list_content_parts_are_read_as_text() -> None:
    parts = [{"type": "text", "text": "Search for"}, {"type": "text", "text": "green tea"}]
    reply = respond([EXECUTOR, {"role": "user", "content": parts}], BUILTINS)
    assert reply.tool_call is not None
    assert orjson.dumps(reply.tool_call.arguments) == b'{"query":"Search for\\ngreen tea"}'

"""The terminal renderer of ``agent-gateway run``: messages as readable lines, a progress line.

A model turn's text is shown as it is written (``  > …``) and settled by its final frame
(DESIGN §3): a thought stays among the tool work, an answer is printed as the answer.
"""

from __future__ import annotations

import shutil
import time
from typing import Any, TextIO

import orjson

__all__ = ["WRITING", "TerminalRenderer", "abbreviate"]

WRITING = "  > "
"""The prefix of a model turn's text while it is written (not yet a thought or the answer)."""
_STEP_MARKS = {"completed": "[x]", "in_progress": "[>]", "failed": "[!]", "blocked": "[!]"}


def abbreviate(value: Any, limit: int = 200) -> str:
    """One line of at most ``limit`` characters."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TerminalRenderer:
    """Renders messages as readable lines; keeps a progress line on a terminal's stderr."""

    def __init__(self, out: TextIO, err: TextIO, as_json: bool = False) -> None:
        self.out, self.err, self.as_json = out, err, as_json
        self.tty = err.isatty() and out.isatty()
        self.started = time.monotonic()
        self.open_stream: str | None = None  # messageId of the text being streamed inline
        self.streamed: dict[str, str] = {}
        self.provisional: set[str] = set()  # model turns whose final frame has not come yet
        self.dirty = False  # something went to the terminal inside the open provisional stream
        self.plan_steps: list[str] = []
        self.plan_status: list[str] = []
        self.answer = ""
        self.count = 0
        self.progress_text = ""

    # -- output helpers -------------------------------------------------------------------
    def _write(self, text: str) -> None:
        self._clear_progress()
        self.out.write(text)
        self.out.flush()

    def _line(self, text: str) -> None:
        self._end_inline()
        self._write(text + "\n")

    def _end_inline(self) -> None:
        if self.open_stream is not None:
            self.open_stream = None
            self._write("\n")

    def _clear_progress(self) -> None:
        if self.tty and self.progress_text:
            self.err.write("\r\x1b[2K")
            self.progress_text = ""

    def end_line(self) -> None:
        """Finish a line of streamed text left open (before the final status)."""
        self._end_inline()

    def notice(self, text: str) -> None:
        """A connection notice or the final status, on stderr."""
        self._clear_progress()
        if self.open_stream is not None and self.tty:
            self.err.write("\n")
            self.dirty = True
        self.err.write(text + "\n")
        self.err.flush()

    def progress(self, status: str, seq: int, mode: str) -> None:
        """Redraw the progress line (terminals only, and never inside a streamed line)."""
        if not self.tty or self.open_stream is not None:
            return
        elapsed = time.monotonic() - self.started
        self._clear_progress()
        self.progress_text = (
            f"{status} · {self.count} messages · seq {seq} · {elapsed:.1f}s · {mode}"
        )
        self.err.write(self.progress_text)
        self.err.flush()

    # -- messages ---------------------------------------------------------------------------
    def message(self, message: dict[str, Any], raw: str) -> None:
        """Render one message (each is seen once, in seq order)."""
        self.count += 1
        if self.as_json:
            self._write(raw.replace("\n", " ") + "\n")
            return
        kind = message.get("messageType")
        if kind == "plan":
            self._plan(message.get("plan") or {})
        elif kind == "task":
            self._line(f"\n== {abbreviate(message.get('task'), 300)}")
        elif str(message.get("messageId")) in self.provisional or (
            kind == "tool_thought" and not message.get("isFinal")
        ):
            self._provisional(message)
        elif kind in ("plan_thought", "tool_thought"):
            field = "planThought" if kind == "plan_thought" else "toolThought"
            self._text(message, field, "  (thinking) ")
        elif kind == "agent_stream":
            self._text(message, "result", "")
        elif kind == "tool_result":
            tool = message.get("toolResult") or {}
            name = tool.get("toolName", "?")
            param = abbreviate(tool.get("toolParam", ""), 80)
            self._line(f"  -> {name}({param}): {abbreviate(tool.get('toolResult', ''))}")
        elif kind in ("code", "markdown", "html", "deep_search", "file"):
            if message.get("isFinal"):
                self._line(f"  [{kind}] {abbreviate(self._map_text(message.get('resultMap')))}")
        elif kind == "task_summary":
            mid = str(message.get("messageId"))
            final_copy = message.get("isFinal") and mid not in self.streamed
            if not (final_copy and message.get("taskSummary") == self.answer):
                self._text(message, "taskSummary", "  summary: ")
        elif kind == "result":
            result = message.get("result")
            text = result if isinstance(result, str) else abbreviate(result, 4000)
            if text and text != self.answer:
                self._line(f"\nAnswer:\n{text}")
            files = (message.get("resultMap") or {}).get("fileList") or []
            for info in files:
                if isinstance(info, dict):
                    self._line(f"  file: {info.get('fileName')} {info.get('downloadUrl') or ''}")
        elif kind == "error":
            self._end_inline()
        elif kind == "reset":
            self.notice("(earlier history was trimmed by the gateway; showing what remains)")

    @staticmethod
    def _map_text(result_map: Any) -> Any:
        if not isinstance(result_map, dict):
            return result_map
        for key in ("codeOutput", "answer", "data", "code"):
            if isinstance(result_map.get(key), str) and result_map[key]:
                return result_map[key]
        names = [f.get("fileName") for f in result_map.get("fileInfo") or [] if isinstance(f, dict)]
        return ", ".join(str(n) for n in names) if names else result_map

    def _plan(self, plan: dict[str, Any]) -> None:
        steps = [str(s) for s in plan.get("steps") or []]
        status = [str(s) for s in plan.get("stepStatus") or []]
        status += ["not_started"] * (len(steps) - len(status))
        if steps != self.plan_steps:
            lines = [f"Plan: {plan.get('title') or ''}".rstrip()]
            lines += [self._step(i, s, status[i]) for i, s in enumerate(steps)]
            self._line("\n".join(lines))
        else:
            for i, (old, new) in enumerate(zip(self.plan_status, status, strict=False)):
                if old != new:
                    self._line(self._step(i, steps[i], new))
        self.plan_steps, self.plan_status = steps, status

    @staticmethod
    def _step(index: int, step: str, status: str) -> str:
        return f"  {_STEP_MARKS.get(status, '[ ]')} {index + 1}. {abbreviate(step, 160)}"

    def _provisional(self, message: dict[str, Any]) -> None:
        """A model turn's text, written as it arrives under ``WRITING`` before anyone knows
        whether it is a thought or the answer (DESIGN §3); its final frame settles it. A
        thought stays where it is, among the tool work that follows. An answer is printed as
        the answer; on a terminal the provisional lines are erased first (when nothing was
        printed after them and they fit on the screen)."""
        mid = str(message.get("messageId"))
        kind = message.get("messageType")
        if not message.get("isFinal"):
            if mid not in self.provisional:
                self.provisional.add(mid)
                self.dirty = False
            self._text(message, "toolThought", WRITING)
            return
        self.provisional.discard(mid)
        if kind == "tool_thought":
            self._text(message, "toolThought", WRITING)
            return
        value = message.get("taskSummary" if kind == "task_summary" else "result")
        text = value if isinstance(value, str) else abbreviate(value)
        if not self._erase(mid):
            self._end_inline()
        self.streamed[mid] = text
        if kind == "task_summary":
            self._line(f"  summary: {text}")
        else:
            self._line(f"\nAnswer:\n{text}")
            self.answer = text

    def _erase(self, mid: str) -> bool:
        """Erase the open provisional stream ``mid`` from a terminal; False where it cannot."""
        if not self.tty or self.open_stream != mid or self.dirty:
            return False
        columns, lines = shutil.get_terminal_size()
        shown = (WRITING + self.streamed.get(mid, "")).split("\n")
        rows = sum(max(1, -(-len(line) // max(1, columns))) for line in shown)
        if rows >= lines:
            return False
        self._write("\r" + "\x1b[1A" * (rows - 1) + "\x1b[J")
        self.open_stream = None
        return True

    def _text(self, message: dict[str, Any], field: str, prefix: str) -> None:
        """Streamed text: deltas inline as they come; the final frame completes or corrects."""
        mid = str(message.get("messageId"))
        value = message.get(field)
        text = value if isinstance(value, str) else abbreviate(value)
        shown = self.streamed.get(mid)
        if self.open_stream != mid:
            self._end_inline()
            if shown is not None:  # interleaved with another stream: continue on a fresh line
                self._write(prefix)
        if shown is None:
            self._write(prefix)
            shown = ""
        if message.get("isFinal"):
            rest = text[len(shown) :] if text.startswith(shown) else "\n" + prefix + text
            self._write(rest + "\n")
            self.open_stream = None
            self.streamed[mid] = text
            if message.get("messageType") == "agent_stream":
                self.answer = text
        else:
            self._write(text)
            self.open_stream = mid
            self.streamed[mid] = shown + text

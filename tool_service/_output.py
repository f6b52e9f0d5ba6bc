"""Reading a sandbox run's output: decoded as it comes, capped, bounded by the wall clock."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from .errors import CodeTimeout, SandboxError
from .settings import SandboxSettings

__all__ = ["Ended", "read_output"]

_READ_SIZE = 64 * 1024
_POLL_INTERVAL = 0.1
_EXIT_GRACE = 0.2


@dataclass(frozen=True)
class Ended:
    """The run's first process exited with ``returncode``; ``truncated``: output was capped."""

    returncode: int
    truncated: bool


async def read_output(
    process: asyncio.subprocess.Process, settings: SandboxSettings
) -> AsyncGenerator[str | Ended, None]:
    """Yield the text ``process`` writes (stdout and stderr merged), then one :class:`Ended`.

    Output past ``settings.max_output_bytes`` is drained but dropped, with a note. Raises
    :class:`CodeTimeout` when the wall-clock limit passes first (the caller kills the run).
    """
    if process.stdout is None:
        raise SandboxError("the sandbox has no output pipe")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.timeout
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    budget = settings.max_output_bytes
    truncated = False
    exited_at: float | None = None
    timeout = CodeTimeout(f"the code ran longer than {settings.timeout:g} s and was killed")
    while True:
        now = loop.time()
        if now >= deadline:
            raise timeout
        # The run ends when its first process exits, even if a process it left behind still
        # holds the pipe open (only possible with SANDBOX=unsafe-none): drained briefly, then
        # the caller kills it.
        if exited_at is None and process.returncode is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > _EXIT_GRACE:
            break
        try:
            data = await asyncio.wait_for(
                process.stdout.read(_READ_SIZE), min(deadline - now, _POLL_INTERVAL)
            )
        except TimeoutError:
            continue
        if not data:
            break
        if truncated:
            continue  # keep draining so the code never blocks on a full pipe
        if len(data) > budget:
            data, truncated = data[:budget], True
        budget -= len(data)
        text = decoder.decode(data)
        if truncated:
            text += decoder.decode(b"", final=True)
            text += f"\n[output truncated after {settings.max_output_bytes} bytes]\n"
        if text:
            yield text
    try:
        returncode = await asyncio.wait_for(process.wait(), max(deadline - loop.time(), 0.01))
    except TimeoutError:
        raise timeout from None
    tail = "" if truncated else decoder.decode(b"", final=True)
    if tail:
        yield tail
    yield Ended(returncode, truncated)

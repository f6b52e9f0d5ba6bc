"""``LocalLog``: readers that wait and readers that park with a push callback."""

from __future__ import annotations

import asyncio

import pytest

from gateway.protocol import StoredMessage
from gateway.store._log import MAX_PUSHING, LocalLog

pytestmark = pytest.mark.anyio


def message(seq: int, finish: bool = False) -> StoredMessage:
    return StoredMessage(seq, b'{"seq":%d}' % seq, finish)


async def settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_parked_reader_is_handed_each_message_by_the_appender_and_not_woken() -> None:
    log = LocalLog()
    pushed: list[int] = []
    parked = asyncio.create_task(log.park(lambda m: pushed.append(m.seq) is None, 30))
    await settled()
    for seq in (1, 2, 3):
        log.add(message(seq))
        assert pushed == list(range(1, seq + 1))  # at once, by add itself
    await settled()
    assert not parked.done()  # still parked: nothing woke its task
    assert log.parkable(3) and not log.parkable(2)  # only a reader that has read everything
    parked.cancel()


async def test_a_push_that_declines_ends_the_park_and_waiting_readers_still_wake() -> None:
    log = LocalLog()
    parked = asyncio.create_task(log.park(lambda m: m.seq < 2, 30))
    waiting = asyncio.create_task(log.wait_beyond(0, 30))
    await settled()
    log.add(message(1))
    await settled()
    assert waiting.done() and not parked.done()
    log.add(message(2))  # declined: the reader goes back to reading for itself
    await asyncio.wait_for(parked, 1)


async def test_a_park_ends_at_its_time_limit_on_the_end_and_on_release() -> None:
    log = LocalLog()
    await asyncio.wait_for(log.park(lambda m: True, 0.05), 2)  # the time limit
    released = asyncio.create_task(log.park(lambda m: True, 30))
    await settled()
    log.release()  # e.g. the task was handed over: readers look elsewhere
    await asyncio.wait_for(released, 1)
    ended = asyncio.create_task(log.park(lambda m: True, 30))
    await settled()
    log.finished = True  # a writer that lost its task ends the log without a message
    log.wake()
    await asyncio.wait_for(ended, 1)
    await asyncio.wait_for(log.park(lambda m: True, 30), 1)  # an ended log parks no one


async def test_the_finish_message_is_pushed_and_ends_the_park() -> None:
    log = LocalLog()
    pushed: list[StoredMessage] = []

    def push(m: StoredMessage) -> bool:
        pushed.append(m)
        return not m.finish

    parked = asyncio.create_task(log.park(push, 30))
    await settled()
    log.add(message(1))
    log.add(message(2, finish=True))
    await asyncio.wait_for(parked, 1)
    assert [m.seq for m in pushed] == [1, 2] and not log.parkable(2)


async def test_only_a_few_readers_push_at_once_the_others_wait_their_turn() -> None:
    log = LocalLog()
    parks = [asyncio.create_task(log.park(lambda m: True, 30)) for _ in range(MAX_PUSHING)]
    await settled()
    assert not log.parkable(0) and not log.parkable(1)
    parks[0].cancel()
    await settled()
    assert log.parkable(0)
    for park in parks:
        park.cancel()


async def test_messages_added_together_are_pushed_in_order_and_wake_each_waiter_once() -> None:
    log = LocalLog()
    pushed: list[int] = []
    parked = asyncio.create_task(log.park(lambda m: pushed.append(m.seq) is None, 30))
    declining: list[int] = []
    declined = asyncio.create_task(log.park(lambda m: declining.append(m.seq) or m.seq < 2, 30))
    waiting = asyncio.create_task(log.wait_beyond(0, 30))
    await settled()
    log.extend([message(1), message(2), message(3)])  # one flush's messages
    assert pushed == [1, 2, 3] and declining == [1, 2]  # a declined push ends that park
    assert log.last_seq == 3 and [m.seq for m in log.since(1, 10)] == [2, 3]
    await settled()
    assert waiting.done() and declined.done() and not parked.done()
    log.extend([message(4), message(5, finish=True)])
    await asyncio.wait_for(parked, 1)
    assert pushed == [1, 2, 3, 4, 5] and log.finished

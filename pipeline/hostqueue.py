"""Fair, bounded concurrent work over many hosts: per-host queues and time budgets.

A plain thread pool hands the next item to whichever worker is free, so the items of one
slow host (a server that drips a byte a second) end up holding every worker while they wait
for that host's politeness slots, and every other host waits behind them. Here each host
has its own queue and an item is started only when its host has a free slot, so a slow host
occupies at most ``per_host`` workers. Two budgets bound a run: after ``stage_budget_s`` no
new item starts at all, and a host whose requests have used ``host_budget_s`` in total
starts no more. Items not started are returned, to be left pending for the next run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

STAGE_BUDGET = "deferred-stage-budget"  # the stage's time budget was spent
HOST_BUDGET = "deferred-host-budget"  # this item's host had used its time budget


@dataclass
class Deferred(Generic[Item]):
    """Items left for the next run, by reason (STAGE_BUDGET or HOST_BUDGET)."""

    items: dict[str, list[Item]] = field(default_factory=dict)

    def add(self, reason: str, item: Item) -> None:
        self.items.setdefault(reason, []).append(item)

    def counts(self) -> dict[str, int]:
        return {reason: len(items) for reason, items in self.items.items() if items}

    def __len__(self) -> int:
        return sum(len(items) for items in self.items.values())


def run_per_host(
    items: Sequence[Item],
    host_of: Callable[[Item], Hashable],
    work: Callable[[Item], Result],
    *,
    concurrency: int,
    per_host: int,
    stage_budget_s: float | None = None,
    host_budget_s: float | None = None,
    deferred: Deferred[Item] | None = None,
    clock: Callable[[], float] = time.monotonic,
    thread_name_prefix: str = "host",
) -> Iterator[tuple[Item, Result]]:
    """Run ``work`` on ``items`` concurrently, fairly across hosts; yield ``(item, result)``
    as each finishes. ``work`` must not raise (wrap it). Items left unstarted by a budget are
    added to ``deferred``. Hosts take turns in first-seen order, so the result is
    deterministic for one host and fair across many."""
    queues: dict[Hashable, deque[Item]] = {}
    for item in items:
        queues.setdefault(host_of(item), deque()).append(item)
    if not queues:
        return
    deferred = deferred if deferred is not None else Deferred()
    started = clock()
    in_flight: dict[Hashable, int] = dict.fromkeys(queues, 0)
    used_s: dict[Hashable, float] = dict.fromkeys(queues, 0.0)
    lock = threading.Lock()
    turn = deque(queues)  # round-robin order of hosts with work left

    def timed(host: Hashable, item: Item) -> Result:
        begin = clock()
        try:
            return work(item)
        finally:
            with lock:
                used_s[host] += clock() - begin

    def defer_rest(host: Hashable, reason: str) -> None:
        while queues[host]:
            deferred.add(reason, queues[host].popleft())

    futures: dict[Future[Result], tuple[Hashable, Item]] = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency),
                            thread_name_prefix=thread_name_prefix) as pool:
        while turn or futures:
            over_stage = stage_budget_s is not None and clock() - started >= stage_budget_s
            blocked = 0
            while turn and len(futures) < concurrency and blocked < len(turn):
                host = turn[0]
                turn.rotate(-1)
                if over_stage:
                    defer_rest(host, STAGE_BUDGET)
                elif host_budget_s is not None and used_s[host] >= host_budget_s:
                    defer_rest(host, HOST_BUDGET)
                elif in_flight[host] >= per_host:
                    blocked += 1
                    continue
                else:
                    item = queues[host].popleft()
                    in_flight[host] += 1
                    futures[pool.submit(timed, host, item)] = (host, item)
                    blocked = 0
                if not queues[host]:
                    turn.remove(host)
            if not futures:
                continue
            # Wake up at the stage deadline too, to defer what is left without waiting.
            timeout = None
            if stage_budget_s is not None and turn:
                timeout = max(0.0, stage_budget_s - (clock() - started)) + 0.01
            done, _ = wait(list(futures), timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                host, item = futures.pop(future)
                in_flight[host] -= 1
                yield item, future.result()

"""An asyncio event loop in virtual time whose sockets are an in-memory network.

The loop is asyncio's own selector loop; only two things differ. Its ``time()`` is a number it
keeps: when nothing is ready, its loop pass does not sleep until the next timer, it moves the
clock to it (as the ``looptime`` package does; written here because the loop must also own the
network below). That pass is asyncio's own, without the selector (nothing is ever ready there) and
with timers kept as ``(when, order, handle)`` tuples: same-time timers run in the order they were set.
And its ``getaddrinfo``, ``create_connection``, ``create_server``, ``start_tls``
and ``run_in_executor`` go to :class:`~.memnet.Network`, the world the seed drives. websockets,
httpx (through anyio) and the shell then run unchanged, and one seed is one exact run.

A host that blocks the loop is :meth:`VirtualLoop.block`: the clock jumps while nothing runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import itertools
import operator
import selectors
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .memnet import LIFE

if TYPE_CHECKING:
    from .memnet import Network

__all__ = ["Idle", "VirtualLoop"]


_NOW = operator.attrgetter("now")
START = 1000.0  # virtual seconds at the start (not 0: code that treats 0.0 as "never" stays honest)


class Idle(RuntimeError):
    """Nothing is scheduled and nothing can happen: the simulated process would wait forever."""


class _VirtualSelector(selectors.BaseSelector):
    """Registers what asyncio registers (its self-pipe); never reports it ready (the loop pass never asks it)."""

    def __init__(self) -> None:
        self._keys: dict[Any, selectors.SelectorKey] = {}
        self.loop: VirtualLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        if timeout is None:
            raise Idle(f"nothing scheduled at virtual {self.loop.time():.3f} s: the loop would wait forever")
        if timeout > 0:
            self.loop.now += timeout
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class VirtualLoop(asyncio.SelectorEventLoop):
    """asyncio's loop with a virtual clock and :class:`~.memnet.Network` for its sockets."""

    virtual_time = True  # OrderFlow.start() reads it: no real-time corrections on this loop's clock

    def __init__(self, network: Network) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = START
        self._clock_resolution = 1e-9
        self.network = network
        # time() is asyncio's most called method (thousands of times a seed): read ``now`` without a Python frame
        self.time = functools.partial(_NOW, self)  # type: ignore[method-assign]
        self.steps = 0  # callbacks run: a measure of work, and a guard against a loop that spins
        self._order = itertools.count()  # ties between timers due at the same time: first set, first run
        self.dead: set[int] = set()  # killed processes (LIFE values): their callbacks are dropped
        self._dropped: list[asyncio.Handle] = []  # ... kept till the end: nothing of theirs is collected mid-run
        self._kept: list[asyncio.Task[Any]] = []  # a killed process's unfinished tasks, for the same reason
        self._tasks_of: dict[int, weakref.WeakSet[asyncio.Task[Any]]] = {}  # LIFE -> its tasks, weakly held
        self._failed: list[asyncio.Task[Any]] = []  # a killed process's tasks that had raised with nobody to tell
        self.blocks: list[tuple[float, float]] = []  # (when, seconds) the loop was held: timers ran that late
        network.loop = self

    def time(self) -> float:
        return self.now

    def block(self, seconds: float) -> None:
        """The running callback holds the loop for ``seconds`` (a slow plugin): time passes, nothing runs."""
        self.blocks.append((self.now, seconds))
        self.now += seconds

    def kill_process(self, life: int) -> None:
        """kill -9 of process ``life``: none of its callbacks runs again, the kernel resets its sockets."""
        self.dead.add(life)
        tasks = self._tasks_of.pop(life, ())
        self._kept += [task for task in tasks if not task.done()]  # never finalized mid-run
        self._failed += [task for task in tasks if _unread_failure(task)]
        self.network.kill_process(life)

    def create_task(self, coro: Any, *, name: str | None = None,  # type: ignore[override]
                    context: contextvars.Context | None = None) -> asyncio.Task[Any]:
        task = super().create_task(coro, name=name, context=context)
        life = context.get(LIFE, 0) if context is not None else LIFE.get()
        self._tasks_of.setdefault(life, weakref.WeakSet()).add(task)  # weakly: what nobody holds is still collected
        return task

    def unread_failures(self) -> list[str]:
        """What the tasks that ended with an exception nobody read raised, sorted: asyncio reports those only when
        they are collected, which a run's large collector thresholds may put after its verdict."""
        tasks = [*self._failed, *(task for life in self._tasks_of.values() for task in life if _unread_failure(task))]
        return sorted(f"task {task.get_name()}: {task.exception()!r}" for task in tasks)

    def revive(self) -> None:
        """At the end of a run, after the verdict: the killed processes' callbacks run again, so their tasks can be
        cancelled and finish (in a running loop) instead of being finalized whenever they are collected."""
        self.dead.clear()
        self._ready.extend(handle for handle in self._dropped if not handle._cancelled)  # type: ignore[attr-defined]
        self._dropped.clear()
        self._kept.clear()

    def blocked_since(self, since: float) -> float:
        """Seconds the loop was held since ``since``: a deadline may fire that much late, and rightly."""
        return sum(seconds for when, seconds in self.blocks if when + seconds > since)

    # The timers: asyncio's own loop pass, for virtual time. ``_scheduled`` holds ``(when, order, handle)``
    # (tuples compare in C; TimerHandle's ``__lt__`` is Python), timers due at the same time run in the
    # order they were set, and no selector is asked: the clock moves to the next timer when nothing is ready.

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any,  # type: ignore[override]
                context: Any = None) -> asyncio.TimerHandle:
        timer = asyncio.TimerHandle(when, callback, args, self, context)
        heapq.heappush(self._scheduled, (when, next(self._order), timer))  # type: ignore[attr-defined]
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def _run_once(self) -> None:
        scheduled: list[tuple[float, int, asyncio.TimerHandle]] = self._scheduled  # type: ignore[attr-defined]
        ready = self._ready  # type: ignore[attr-defined]
        if self._timer_cancelled_count > 100 and self._timer_cancelled_count * 2 > len(scheduled):  # type: ignore[attr-defined]
            for _, _, timer in scheduled:
                if timer._cancelled:  # type: ignore[attr-defined]
                    timer._scheduled = False  # type: ignore[attr-defined]
            scheduled[:] = [entry for entry in scheduled if not entry[2]._cancelled]  # type: ignore[attr-defined]
            heapq.heapify(scheduled)
            self._timer_cancelled_count = 0
        self.steps += len(ready)
        if not ready and not self._stopping:  # type: ignore[attr-defined]
            while scheduled and scheduled[0][2]._cancelled:  # type: ignore[attr-defined]
                self._timer_cancelled_count -= 1
                heapq.heappop(scheduled)[2]._scheduled = False  # type: ignore[attr-defined]
            if not scheduled:
                raise Idle(f"nothing scheduled at virtual {self.now:.3f} s: the loop would wait forever")
            if scheduled[0][0] > self.now:
                self.now = scheduled[0][0]
        end = self.now + 1e-9
        while scheduled and scheduled[0][0] < end:
            timer = heapq.heappop(scheduled)[2]
            timer._scheduled = False  # type: ignore[attr-defined]
            ready.append(timer)
        popleft, dead = ready.popleft, self.dead
        for _ in range(len(ready)):
            handle = popleft()
            if handle._cancelled:
                continue
            if dead and handle._context.get(LIFE, 0) in dead:
                self._dropped.append(handle)
                continue
            handle._run()
        handle = None  # breaks a cycle when a callback raised
        self.network.after_step()

    # The network: all of it is the world's

    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0,
                          flags: int = 0) -> list[Any]:
        return await self.network.resolve(host, port)

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,
                                port: Any = None, **kwargs: Any) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        if kwargs.get("sock") is not None:
            raise NotImplementedError("the simulated network has no real sockets")
        return await self.network.connect(protocol_factory, host, port)

    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,
                            port: Any = None, **kwargs: Any) -> Any:
        return self.network.listen(protocol_factory, host, port)

    async def start_tls(self, transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol, sslcontext: Any,
                        **kwargs: Any) -> asyncio.Transport:
        return await self.network.tls(transport, protocol)

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        # No threads: what a thread would do (a checkpoint's fsync) is done now, so the run stays one sequence.
        future = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future


def _unread_failure(task: asyncio.Task[Any]) -> bool:
    """``task`` ended with an exception that nobody has read (asyncio's own flag for "never retrieved")."""
    return task.done() and not task.cancelled() and task._log_traceback  # type: ignore[attr-defined]

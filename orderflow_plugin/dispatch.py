"""The one place an event becomes hook calls and a signal send.

Order, fixed: first every hook implementation in pluggy's order (``tryfirst`` ones, then the
most recently registered first, then ``trylast``), then every signal receiver in the order
they connected. A hook or receiver that raises is isolated: counted, logged with its name
(at most once per ``report_interval`` per plugin, with how often it failed meanwhile),
reported through ``on_error``, and the event still reaches everyone else. ``async def``
receivers get the events in order on a task of their own, through a bounded queue.

Each call is timed alone: the time spent reporting a failing or slow call (the log, the
``on_error`` hooks) counts against nobody, neither the call reported nor the next one.
``plugin_errors`` counts every failure and every event dropped for an async receiver;
``slow_calls`` counts every call over the budget, apart, so a GC pause on a loaded machine
is no error to alert on. Both include the reports the log holds back.

A call's time is its wall time less the time its thread waited for a CPU meanwhile (Linux's
run-queue wait, :mod:`~orderflow_plugin.runwait`): a hook preempted by another process on a
loaded machine is not slow (issue #25). The wait is read when a call is over the budget, against
a mark taken at most one budget before the call started (one read per budget while hooks run),
so a call of its own up to twice the budget may pass unreported while the machine is loaded; a
slower one never does.

Lifecycle hooks are called through pluggy (``manager.hook.<name>(...)``, ``call_historic``
for historic ones), so hookcall monitoring and tracing see them; the isolation and timing
happen inside that call, where pluggy calls each plugin's hook through the manager's
``hook_runner`` (see :class:`~orderflow_plugin.plugins.PluginHooks`). The per-trade hooks
(``on_trade``, ``on_metric``) take a call list cached from ``get_hookimpls()`` instead:
pluggy's call costs more than the hook.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from blinker import NamedSignal

from .errors import HookFailed, HookTooSlow, PluginError
from .plugins import PluginManager, implementation
from .runwait import run_wait
from .signals import HOOK_SIGNALS, signal_for_hook

__all__ = ["Dispatcher"]

logger = logging.getLogger(__name__)

_Call = tuple[str, Callable[..., Any], tuple[str, ...]]
_PER_TRADE = frozenset({"on_trade", "on_metric"})  # called from the cached list, not through pluggy


class Dispatcher:
    """Deliver events to the plugins of ``manager`` and the receivers of our signals."""

    def __init__(
        self,
        manager: PluginManager,
        sender: object,
        *,
        slow_hook_ms: float = 5.0,
        report_interval: float = 60.0,
        async_queue_size: int = 10_000,
    ) -> None:
        self.manager = manager
        self.sender = sender
        self.plugin_errors = 0
        self.slow_calls = 0
        self.dropped_async = 0
        self._budget = slow_hook_ms / 1000.0
        self.clock: Callable[[], float] = time.perf_counter  # OrderFlow.start() sets its loop's clock
        # Whether that clock is real: in virtual time (the simulation) the machine's run-queue wait is not the
        # clock's, and subtracting it would make a seed's reports depend on the machine's load.
        self.real_time = True
        self._report_interval = report_interval
        self._queue_size = async_queue_size
        self._calls: dict[str, tuple[_Call, ...]] = {}
        self._emitters: dict[tuple[str, str], Callable[[Any], None]] = {}  # (hook, argname) -> its emit function
        self._version = -1
        self._last_report: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._workers: dict[Any, _AsyncReceiver] = {}
        self._receivers: dict[NamedSignal, tuple[int, tuple[Any, ...]]] = {}  # signal -> (its version, receivers)
        # The run-queue wait mark: when (perf_counter), how much (run_wait()) and on which thread it was taken.
        self._marked_at = -float("inf")
        self._mark_wait = 0.0
        self._mark_thread = 0
        manager.hook_runner = self._run  # one dispatcher per manager: the latest one reports

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook``, then send the parallel signal.

        A historic hook (``on_startup``) is also remembered by pluggy for plugins registered later.
        """
        if hook in _PER_TRADE:
            clock = self.clock
            for name, function, argnames in self._hook_calls(hook):
                start = clock()
                if start - self._marked_at > self._budget:
                    self._mark(start)
                try:
                    function(*[kwargs[arg] for arg in argnames])
                except Exception as exc:
                    self._reported(name, hook, clock() - start, exc)
                    continue
                elapsed = clock() - start
                if elapsed > self._budget:
                    self._reported(name, hook, elapsed)
        else:
            caller = getattr(self.manager.hook, hook)
            if caller.is_historic():
                caller.call_historic(kwargs=kwargs)
            else:
                caller(**kwargs)
        signal = signal_for_hook(hook)
        if signal.receivers:  # muted() empties the cached receiver list, as blinker's send() sends to nobody
            self._send(signal, hook, kwargs)

    def emit_one(self, hook: str, argname: str, value: Any) -> None:
        """:meth:`emit` for the per-trade hooks that take one argument (``on_trade``, ``on_metric``).

        Same order, isolation and timing; no keyword dict unless a signal receiver listens.
        """
        (self._emitters.get((hook, argname)) or self.emitter(hook, argname))(value)

    def emitter(self, hook: str, argname: str) -> Callable[[Any], None]:
        """``emit_one`` for one hook as a function of the value alone: what the pipeline calls per trade."""
        emit = self._emitters.get((hook, argname))  # the argname is what signal receivers get the value as
        if emit is not None:
            return emit
        cached, manager, signal = self._calls, self.manager, HOOK_SIGNALS[hook]
        reported, send, hook_calls, budget = self._reported, self._send, self._hook_calls, self._budget

        def emit(value: Any) -> None:
            calls = cached.get(hook) if self._version == manager.version else None
            if calls is None:
                calls = hook_calls(hook)
            clock = self.clock
            start = clock()  # one clock read per call: each call ends where the next one's time starts
            for name, function, argnames in calls:
                if start - self._marked_at > budget:
                    self._mark(start)
                try:
                    if argnames:
                        function(value)
                    else:
                        function()
                except Exception as exc:
                    reported(name, hook, clock() - start, exc)
                    start = clock()  # reporting is nobody's time: the next call starts after it
                    continue
                end = clock()
                if end - start > budget:
                    reported(name, hook, end - start)
                    end = clock()
                start = end
            if signal.receivers:  # muted() empties the cached receiver list, as blinker's send() sends to nobody
                send(signal, hook, {argname: value}, start)  # the receivers' time starts where the hooks' ended

        self._emitters[hook, argname] = emit
        return emit

    async def aclose(self, timeout: float = 1.0) -> None:
        """Let async receivers drain their queues for up to ``timeout`` s, then stop their tasks."""
        workers = list(self._workers.values())
        self._workers.clear()
        if workers:
            await asyncio.wait([asyncio.ensure_future(w.queue.join()) for w in workers], timeout=timeout)
        for worker in workers:
            worker.task.cancel()
        await asyncio.gather(*(w.task for w in workers), return_exceptions=True)

    def _run(self, name: str, hook: str, function: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
        """Call one plugin's hook isolated and timed: every call pluggy makes runs through here."""
        clock = self.clock
        start = clock()  # read again for each call: the previous call's report is not this one's time
        if start - self._marked_at > self._budget:
            self._mark(start)
        try:
            result = function(*args, **kwargs)
        except Exception as exc:
            self._reported(name, hook, clock() - start, exc)
            return None
        elapsed = clock() - start
        if elapsed > self._budget:
            self._reported(name, hook, elapsed)
        return result

    def _hook_calls(self, hook: str) -> tuple[_Call, ...]:
        if self._version != self.manager.version:
            self._calls.clear()
            self._version = self.manager.version
        calls = self._calls.get(hook)
        if calls is None:
            impls = getattr(self.manager.hook, hook).get_hookimpls()
            calls = tuple((impl.plugin_name, implementation(impl), tuple(impl.argnames)) for impl in reversed(impls))
            self._calls[hook] = calls
        return calls

    def _send(self, signal: NamedSignal, hook: str, kwargs: dict[str, Any], start: float | None = None) -> None:
        """Send to the receivers, each call timed from ``start`` (the clock's time when the caller's last call
        ended: one read less per event) or from now."""
        cached = self._receivers.get(signal)
        if cached is None or cached[0] != signal.version:  # type: ignore[attr-defined]
            cached = self._receivers[signal] = (signal.version,  # type: ignore[attr-defined]
                                                signal.held_receivers(self.sender))  # type: ignore[attr-defined]
        clock = self.clock
        sender = self.sender
        if start is None:
            start = clock()
        for held, is_async in cached[1]:
            receiver = held()
            if receiver is None:  # collected since: blinker has let it go, so the next event asks blinker again
                self._receivers.pop(signal, None)
                continue
            if is_async:
                self._enqueue(receiver, hook, kwargs)
                start = clock()
                continue
            if start - self._marked_at > self._budget:
                self._mark(start)
            try:
                receiver(sender, **kwargs)
            except Exception as exc:
                self._reported(_receiver_name(receiver), hook, clock() - start, exc)
                start = clock()  # reporting is nobody's time
                continue
            end = clock()
            if end - start > self._budget:
                self._reported(_receiver_name(receiver), hook, end - start)
                end = clock()
            start = end

    def _enqueue(self, receiver: Callable[..., Any], hook: str, kwargs: dict[str, Any]) -> None:
        worker = self._workers.get(receiver)
        if worker is None:
            try:
                worker = _AsyncReceiver(receiver, self.sender, self._queue_size, self._failed)
            except RuntimeError:
                name = _receiver_name(receiver)
                message = f"{name} is async but {hook} was sent with no running event loop; event dropped"
                self.plugin_errors += 1
                self._report(name, "loop", PluginError(name, message), hook)
                return
            self._workers[receiver] = worker
        try:
            worker.queue.put_nowait((hook, kwargs))
        except asyncio.QueueFull:
            self.dropped_async += 1
            self.plugin_errors += 1
            name = _receiver_name(receiver)
            self._report(name, "queue", PluginError(
                name, f"{name} is {self._queue_size} events behind; {hook} event dropped ({self.dropped_async} so far)"
            ))

    def _reported(self, name: str, hook: str, elapsed: float, exc: Exception | None = None) -> None:
        """Report one call that raised ``exc`` or took ``elapsed`` s over the budget (or both)."""
        if exc is not None:
            self._failed(name, hook, exc)
        if elapsed > self._budget:
            own = elapsed - self._waited()  # less the time the machine ran other processes in its place
            if own > self._budget:
                self._slow(name, hook, own)

    def _mark(self, now: float) -> None:
        """Take the run-queue wait mark that a slow call started at most one budget after."""
        self._marked_at = now
        self._mark_wait = run_wait() if self.real_time else 0.0  # _waited() reads no wait in virtual time
        self._mark_thread = threading.get_native_id()

    def _waited(self) -> float:
        """Seconds this thread waited for a CPU since the mark (0 if the mark was taken on another thread)."""
        if threading.get_native_id() != self._mark_thread or not self.real_time:
            return 0.0
        return max(0.0, run_wait() - self._mark_wait)

    def _failed(self, name: str, hook: str, exc: Exception) -> None:
        self.plugin_errors += 1
        error = HookFailed(name, hook, exc)
        error.__cause__ = exc
        suppressed = self._may_log(name, hook)
        if suppressed is not None:
            again = f" ({suppressed} more failures since the last report)" if suppressed else ""
            logger.error("%s%s; the event still reached the other plugins", error, again, exc_info=exc)
        if hook != "on_error":  # a failing error hook must not feed itself
            self.emit("on_error", error=error, where=f"plugin:{name}.{hook}")

    def _slow(self, name: str, hook: str, elapsed: float) -> None:
        self.slow_calls += 1
        self._report(name, "slow", HookTooSlow(name, hook, elapsed, self._budget), hook)

    def _report(self, name: str, kind: str, error: PluginError, hook: str = "") -> None:
        """Log and emit ``error`` at most once per report interval per plugin and kind (the caller counts it)."""
        if self._may_log(name, kind) is None:
            return
        logger.warning("%s", error)
        if hook != "on_error":
            self.emit("on_error", error=error, where=f"plugin:{name}.{hook or kind}")

    def _may_log(self, name: str, kind: str) -> int | None:
        """How many reports were held back since the last one, or None to hold this one back."""
        key = (name, kind)
        now = self.clock()
        last = self._last_report.get(key)
        if last is not None and now - last < self._report_interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last_report[key] = now
        return self._suppressed.pop(key, 0)


class _AsyncReceiver:
    """One ``async def`` receiver: a bounded queue and the task that awaits it in order.

    ``sender`` is what the receiver is called with; ``failed(name, hook, exc)`` reports a call that raised.
    """

    def __init__(self, receiver: Callable[..., Any], sender: Any, queue_size: int,
                 failed: Callable[[str, str, Exception], None]) -> None:
        loop = asyncio.get_running_loop()  # RuntimeError when there is none
        self.receiver = receiver
        self.sender = sender
        self.failed = failed
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(queue_size)
        self.task = loop.create_task(self._run(), name=f"orderflow receiver {_receiver_name(receiver)}")

    async def _run(self) -> None:
        while True:
            hook, kwargs = await self.queue.get()
            try:
                await self.receiver(self.sender, **kwargs)
            except Exception as exc:
                self.failed(_receiver_name(self.receiver), hook, exc)
            finally:
                self.queue.task_done()


def _receiver_name(receiver: Callable[..., Any]) -> str:
    module = getattr(receiver, "__module__", None) or "?"
    return f"{module}.{getattr(receiver, '__qualname__', repr(receiver))}"

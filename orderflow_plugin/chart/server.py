"""The chart's web server: Starlette routes on uvicorn, bound to 127.0.0.1 unless told otherwise.

``GET /`` is the page, ``GET /static/...`` its vendored script and style, ``GET /api/state`` the
same state a page gets on connect (for scripts and tests), ``WS /ws`` the live messages. Nothing
here changes the stream: the WebSocket ignores what a page sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from decimal import Decimal
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from .feed import ChartFeed

__all__ = ["LOOPBACK", "chart_app", "serve"]

logger = logging.getLogger("orderflow_plugin.chart")
LOOPBACK = "127.0.0.1"
_STATIC = resources.files("orderflow_plugin.chart") / "static"


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, default=lambda v: str(v) if isinstance(v, Decimal) else None, separators=(",", ":"))


def chart_app(feed: ChartFeed) -> Starlette:
    """The ASGI app serving ``feed``'s page and messages."""
    static = str(_STATIC)

    async def page(request: Any) -> Response:
        return FileResponse(f"{static}/index.html", media_type="text/html")

    async def state(request: Any) -> Response:
        return JSONResponse(json.loads(_dumps(feed.hello())))

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        queue = feed.subscribe()
        reader = asyncio.ensure_future(_drain(websocket))  # a page only reads: what it sends is dropped
        try:
            while not reader.done():
                try:
                    message = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    if queue not in feed.pages:  # it fell behind and was dropped: start it over
                        await websocket.close(code=1013, reason="fell behind; reconnect for a fresh state")
                        return
                    continue
                await websocket.send_text(_dumps(message))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            feed.unsubscribe(queue)
            reader.cancel()

    return Starlette(routes=[
        Route("/", page),
        Route("/api/state", state),
        WebSocketRoute("/ws", socket),
        Mount("/static", app=StaticFiles(directory=static), name="static"),
    ])


async def _drain(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()


async def serve(feed: ChartFeed, *, host: str = LOOPBACK, port: int = 8000,
                started: asyncio.Event | None = None) -> None:
    """Serve ``feed`` until cancelled; ``started`` is set once the socket listens (``feed.port`` is then known)."""
    import uvicorn

    config = uvicorn.Config(chart_app(feed), host=host, port=port, log_level="warning", lifespan="off",
                            ws="websockets-sansio" if _has_sansio() else "websockets")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # the bind failed: say why
                return
            await asyncio.sleep(0.02)
        feed.port = server.servers[0].sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        if started is not None:
            started.set()
        await asyncio.shield(task)
    finally:
        server.should_exit = True  # uvicorn closes its sockets and connections itself
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _has_sansio() -> bool:
    try:
        import uvicorn.protocols.websockets.websockets_sansio_impl  # noqa: F401
    except ImportError:
        return False
    return True

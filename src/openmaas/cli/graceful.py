"""A uvicorn server that drains before it exits."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import uvicorn

from openmaas.app import OpenMaaSApp

__all__ = ["GracefulServer"]


class GracefulServer(uvicorn.Server):
    """uvicorn that drains on SIGTERM/SIGINT: not ready at once, new requests 503, in-flight
    ones finish; it exits when they have (``clean``) or after ``drain_seconds`` (forced).
    A second signal forces the exit at once."""

    def __init__(self, config: uvicorn.Config, app: OpenMaaSApp, drain_seconds: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_seconds = drain_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self.clean = True

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._drain is not None or self.should_exit:
            self.clean = False  # a second signal, or one before serving started
            self.should_exit = self.force_exit = True
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        self.clean = await self._app.drain(self._drain_seconds)
        self.force_exit = not self.clean
        self.should_exit = True

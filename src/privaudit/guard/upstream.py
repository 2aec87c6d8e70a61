"""The proxy's connection to the model server: a small pool of keep-alive HTTP/1.1 connections.

httpx's pool was the largest cost of the request path: with a few dozen requests in flight its
bookkeeping walks every connection for every request, and under a burst that is quadratic. The guard
sends one kind of request (a POST of JSON to one fixed server) and reads one kind of answer, so it
speaks HTTP/1.1 itself on asyncio transports and parses answers with httptools (uvicorn's own parser).

A connection is reused only after a complete answer the server did not mark ``Connection: close``.
A reused connection the server has closed meanwhile (its keep-alive timeout) fails before any answer
byte arrives; that request is sent once more on a fresh connection (the server never saw it).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import httptools
import orjson


class UpstreamError(Exception):
    """The model server could not be reached or answered something that is not HTTP."""


class Answer:
    """What the proxy reads of an upstream answer (the parts of httpx.Response it uses)."""

    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.content = body

    def json(self) -> Any:
        return orjson.loads(self.content)


class _Reader:
    """httptools callbacks for one answer."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.done = False
        self.close = False
        self.started = False
        self.keep_alive = False

    def on_headers_complete(self) -> None:
        # Read here, not after the message: httptools (llhttp) answers False once a message is complete,
        # which silently made every request open a new connection to the model server.
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_begin(self) -> None:
        self.started = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"connection" and value.strip().lower() == b"close":
            self.close = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class _Connection(asyncio.Protocol):
    """One kept-alive connection, read by callbacks: httptools parses each chunk as it arrives and the
    waiting request is woken once, when its answer is complete (asyncio streams cost several
    coroutine hops per read on the request path)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: _Reader | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answer, waiter = self.answer, self.waiter
        if answer is None or waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step, never reuse it
            return
        try:
            answer.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            waiter.set_exception(UpstreamError(f"{type(exc).__name__}: {exc}"))
            self.close()
            return
        if answer.done:
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            started = self.answer is not None and self.answer.started
            waiter.set_exception(UpstreamError("the model server closed the connection mid-answer") if started
                                 else _Stale())

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """POSTs to one server over at most ``size`` kept-alive connections (the caller bounds concurrency)."""

    def __init__(self, base_url: str, size: int) -> None:
        url = urlsplit(base_url)
        self.tls = url.scheme == "https"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if self.tls else 80)
        self.prefix = url.path.rstrip("/")
        host_header = url.hostname if url.port is None else f"{url.hostname}:{url.port}"
        auth = ""
        if url.username is not None:  # credentials in the URL become Basic auth, as httpx sends them
            pair = f"{unquote(url.username)}:{unquote(url.password or '')}".encode()
            auth = f"Authorization: Basic {base64.b64encode(pair).decode()}\r\n"
        self._head = f"Host: {host_header}\r\n{auth}Content-Type: application/json\r\nAccept: application/json\r\n"
        self._ssl = ssl.create_default_context() if self.tls else None
        self.size = size
        self._idle: deque[_Connection] = deque()

    async def post(self, path: str, body: bytes, request_id: str, timeout: float) -> Answer:
        try:
            async with asyncio.timeout(timeout):  # a timer on this task, not a task of its own (wait_for)
                return await self._post(path, body, request_id)
        except TimeoutError:
            raise UpstreamError(f"no answer within {timeout:g} s") from None

    async def _post(self, path: str, body: bytes, request_id: str) -> Answer:
        request = (f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}X-Request-ID: {request_id}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
        while self._idle:
            conn = self._idle.pop()
            if conn.lost:
                continue
            try:
                return await self._exchange(conn, request)
            except _Stale:
                continue  # closed by the server while idle: the request never reached it
        return await self._exchange(await self._open(), request, fresh=True)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self.host, self.port, ssl=self._ssl)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        return conn

    async def _exchange(self, conn: _Connection, request: bytes, fresh: bool = False) -> Answer:
        answer = conn.answer = _Reader()
        waiter = conn.waiter = asyncio.get_running_loop().create_future()
        try:
            assert conn.transport is not None
            conn.transport.write(request)
            await waiter
        except _Stale:
            conn.close()
            if fresh:
                raise UpstreamError("the model server closed the connection before answering") from None
            raise
        except BaseException:  # an error, or cancelled (timeout): the connection is in an unknown state
            conn.close()
            raise
        finally:
            conn.answer = conn.waiter = None
        if answer.close or not answer.keep_alive or conn.lost or len(self._idle) >= self.size:
            conn.close()
        else:
            self._idle.append(conn)
        return Answer(answer.parser.get_status_code(), b"".join(answer.chunks))

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()


class _Stale(Exception):
    pass

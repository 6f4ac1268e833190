"""The gateway's forwarding client (live.upstream) against scripted raw-socket servers."""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager

import pytest

from live.upstream import UpstreamError, UpstreamPool
from tests.live.harness import run

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


@asynccontextmanager
async def _engine(script, **pool_kw):
    """A server running ``script(reader, writer, n)`` per connection (n: 0, 1, ...) and a
    pool to it; yields (pool, number of connections so far)."""
    count = 0

    async def handle(r, w):
        nonlocal count
        n = count
        count += 1
        try:
            await script(r, w, n)
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    pool = UpstreamPool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", **pool_kw)
    try:
        yield pool, lambda: count
    finally:
        await pool.close()
        server.close()


async def _read_request(r) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await r.readexactly(length)


def test_keep_alive_reuses_one_connection_and_sends_the_body():
    async def go():
        seen = []

        async def script(r, w, n):
            while True:
                try:
                    seen.append(await _read_request(r))
                except asyncio.IncompleteReadError:
                    return
                w.write(OK)

        async with _engine(script) as (pool, conns):
            for i in range(3):
                resp = await pool.post("/v1/completions", b'{"i": %d}' % i)
                assert resp.status == 200
                assert resp.headers["content-type"] == "application/json"
                assert await resp.read() == b"{}"
                resp.release()
            assert conns() == 1
            assert seen[2].startswith(b"POST /v1/completions HTTP/1.1\r\n")
            assert seen[2].endswith(b'\r\n\r\n{"i": 2}')
    run(go())


def test_chunked_stream_arrives_piece_by_piece():
    async def go():
        release = asyncio.Event()

        async def script(r, w, n):
            await _read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                    b"8\r\ndata: 1\n\r\n")
            await w.drain()
            await release.wait()
            w.write(b"8\r\ndata: 2\n\r\n0\r\n\r\n")
            await w.drain()

        async with _engine(script) as (pool, _):
            resp = await pool.post("/v1/completions", b"{}")
            assert await resp.readany() == b"data: 1\n"  # before the rest was sent
            release.set()
            assert await resp.readany() == b"data: 2\n"
            assert await resp.readany() == b""
            resp.release()
    run(go())


def test_a_connection_the_engine_closed_while_idle_is_replaced_transparently():
    async def go():
        async def script(r, w, n):
            await _read_request(r)
            w.write(OK)
            await w.drain()
            if n == 0:
                return  # closes after one answer without saying so (an idle timeout)
            while True:
                try:
                    await _read_request(r)
                except asyncio.IncompleteReadError:
                    return
                w.write(OK)

        async with _engine(script) as (pool, conns):
            for _ in range(2):
                resp = await pool.post("/x", b"{}")
                assert (resp.status, await resp.read()) == (200, b"{}")
                resp.release()
                await asyncio.sleep(0.05)
            assert conns() == 2
    run(go())


def test_cut_response_raises_and_the_connection_is_not_reused():
    async def go():
        async def script(r, w, n):
            await _read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")

        async with _engine(script) as (pool, _):
            resp = await pool.post("/x", b"{}")
            with pytest.raises(UpstreamError, match="before the response ended"):
                await resp.read()
            resp.release()
            assert pool._idle == []
    run(go())


def test_silent_engine_times_out_and_unreachable_engine_is_named():
    async def go():
        async def script(r, w, n):
            await _read_request(r)
            await asyncio.sleep(5)

        async with _engine(script, read_s=0.1) as (pool, _):
            with pytest.raises(TimeoutError, match=r"sent nothing for 0\.1 s"):
                await pool.post("/x", b"{}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        pool = UpstreamPool(f"http://127.0.0.1:{dead}")
        with pytest.raises(UpstreamError, match=f"cannot connect to http://127.0.0.1:{dead}"):
            await pool.post("/x", b"{}")
    run(go())


def test_error_body_read_is_bounded_and_https_is_refused():
    async def go():
        async def script(r, w, n):
            await _read_request(r)
            w.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 1000\r\n\r\n" + b"e" * 1000)

        async with _engine(script) as (pool, _):
            resp = await pool.post("/x", b"{}")
            assert resp.status == 400
            assert await resp.read(10) == b"e" * 10
            resp.release()
    run(go())
    with pytest.raises(ValueError, match="plain http"):
        UpstreamPool("https://127.0.0.1:1")

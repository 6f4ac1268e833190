"""The gateway's lean HTTP/1.1 server (live.http_server), spoken to over real sockets."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from live.http_server import HttpServer, Response, StreamResponse, json_response
from tests.live.harness import run


async def _raw(port: int, data: bytes, *, until_close: bool = True,
               expect: int | None = None) -> bytes:
    """Send raw bytes; read until the server closes (or ``expect`` bytes arrived)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    await w.drain()
    out = b""
    while True:
        chunk = await asyncio.wait_for(r.read(65536), 5)
        if not chunk:
            break
        out += chunk
        if not until_close and expect is not None and len(out) >= expect:
            break
    w.close()
    return out


def _server(**kw) -> HttpServer:
    s = HttpServer(**kw)

    async def echo(req):
        return json_response({"method": req.method, "path": req.path, "query": req.query,
                              "len": len(req.body), "ua": req.headers.get("x-test")})

    async def stream(req):
        resp = StreamResponse(200, {"content-type": "text/event-stream"})
        await resp.prepare(req)
        for i in range(3):
            await resp.write(f"data: {i}\n\n".encode())
        await resp.write_eof(b"data: [DONE]\n\n")
        return resp

    async def boom(req):
        raise ValueError("bad thing")

    s.add("POST", "/echo", echo)
    s.add("GET", "/echo", echo)
    s.add("GET", "/stream", stream)
    s.add("GET", "/boom", boom)
    return s


def test_keep_alive_requests_headers_query_and_body():
    async def go():
        s = _server()
        port = await s.listen()
        try:
            conn = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=conn) as http:
                for i in range(3):
                    async with http.post(f"http://127.0.0.1:{port}/echo?a=1&b={i}",
                                         data=b"x" * (10 + i), headers={"X-Test": "t"}) as r:
                        assert r.status == 200
                        assert await r.json() == {"method": "POST", "path": "/echo",
                                                  "query": {"a": "1", "b": str(i)},
                                                  "len": 10 + i, "ua": "t"}
            assert len(s._conns) <= 1
        finally:
            await s.close()
    run(go())


def test_stream_is_chunked_and_complete():
    async def go():
        s = _server()
        port = await s.listen()
        try:
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{port}/stream") as r:
                assert r.headers["transfer-encoding"] == "chunked"
                assert await r.read() == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
        finally:
            await s.close()
    run(go())


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
    (b"DELETE /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
    (b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 500),
    (b"this is not http\r\n\r\n", 400),
])
def test_errors_are_openai_json(request_bytes, status):
    async def go():
        s = _server()
        port = await s.listen()
        try:
            out = await _raw(port, request_bytes)
            head, _, body = out.partition(b"\r\n\r\n")
            assert head.startswith(f"HTTP/1.1 {status} ".encode())
            err = json.loads(body)["error"]
            assert err["code"] == status and err["message"]
            if status == 405:
                assert b"allow: GET, POST" in head
            if status == 500:
                assert "ValueError: bad thing" in err["message"]
        finally:
            await s.close()
    run(go())


def test_body_over_limit_gets_413_and_the_connection_closes():
    async def go():
        s = _server(max_body_bytes=100)
        port = await s.listen()
        try:
            declared = await _raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Length: 101\r\n\r\n" + b"x" * 101)
            assert declared.startswith(b"HTTP/1.1 413 ")
            assert b"exceeds 100 bytes" in declared
            chunked = await _raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n"
                                       b"50\r\n" + b"x" * 80 + b"\r\n50\r\n" + b"y" * 80
                                       + b"\r\n0\r\n\r\n")
            assert chunked.startswith(b"HTTP/1.1 413 ")
        finally:
            await s.close()
    run(go())


def test_pipelined_requests_are_answered_in_order_and_head_has_no_body():
    async def go():
        s = _server()
        port = await s.listen()
        try:
            req = (b"GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"HEAD /echo?n=2 HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /echo?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = await _raw(port, req)
            assert out.count(b"HTTP/1.1 200 OK") == 3
            assert out.index(b'"n": "1"') < out.index(b'"n": "3"')
            assert b'"n": "2"' not in out  # HEAD: head only
            assert out.rstrip().endswith(b"}")
            assert b"connection: close" in out.split(b"HTTP/1.1 200 OK")[3]
        finally:
            await s.close()
    run(go())


def test_expect_100_continue():
    async def go():
        s = _server()
        port = await s.listen()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                    b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
            await w.drain()
            assert await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5) == \
                b"HTTP/1.1 100 Continue\r\n\r\n"
            w.write(b"hello")
            out = await asyncio.wait_for(r.read(), 5)
            assert out.startswith(b"HTTP/1.1 200 ") and b'"len": 5' in out
            w.close()
        finally:
            await s.close()
    run(go())


def test_client_disconnect_cancels_the_handler():
    async def go():
        s = HttpServer()
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def slow(req):
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return Response(200, b"late")

        s.add("GET", "/slow", slow)
        port = await s.listen()
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await w.drain()
            await asyncio.wait_for(started.wait(), 5)
            w.close()
            await asyncio.wait_for(cancelled.wait(), 5)
        finally:
            await s.close()
    run(go())


def test_idle_keep_alive_connections_are_closed():
    async def go():
        s = _server(keepalive_s=0.05)
        port = await s.listen()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            out = await asyncio.wait_for(r.read(), 5)  # returns when the server closes
            assert out.startswith(b"HTTP/1.1 200 ")
            w.close()
        finally:
            await s.close()
    run(go())

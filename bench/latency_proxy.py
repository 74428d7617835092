"""An HTTP/1.1 proxy on loopback that adds a fixed latency per request and an optional bandwidth cap.

    python bench/latency_proxy.py --upstream http://127.0.0.1:PORT --latency-ms 20 [--mib-per-s 100] [--workers 2]

prints ``PORT <n>`` once listening and serves until stdin closes. For the S3 phase of the
benchmark (``bench/s3_run.py``): the moto server answers at once, a bucket in another region
does not. Every request waits ``--latency-ms`` before it is forwarded (one round trip, as a
request costs on a real link; the connection set-up is not charged separately), and the answer's
body is paced at ``--mib-per-s`` shared by all connections, when given.

One process serves every connection on one core: under a loaded machine it became the test bed's
ceiling (``bench/s3_ceiling.py``: ~100-200 MiB/s at load 12, its CPU 1.3-2.2 ms per MiB).
``--workers N`` forks N processes that accept on the one listening socket (the kernel spreads the
connections); the bandwidth cap is then split evenly between them (approximately shared).

Kept apart from ``tests/faults/s3_fault_proxy.py`` (which injects faults): bench code does not
import from tests/. Keep-alive towards the client; one upstream connection per client
connection, reused while the upstream keeps it open.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
from urllib.parse import urlparse


class Pacer:
    """A token bucket shared by every connection: ``rate`` bytes a second, bursts of 256 KiB."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.allowance = 0.0
        self.last = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, size: int) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                self.allowance = min(256 * 1024.0, self.allowance + (now - self.last) * self.rate)
                self.last = now
                if self.allowance >= min(size, 256 * 1024):
                    self.allowance -= size
                    return
                await asyncio.sleep((min(size, 256 * 1024) - self.allowance) / self.rate)


class Proxy:
    def __init__(self, upstream: str, latency: float, rate: float | None) -> None:
        parsed = urlparse(upstream)
        self.host, self.port = parsed.hostname, parsed.port
        self.latency = latency
        self.pacer = Pacer(rate) if rate else None
        self.requests = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                request = await read_message(reader, request=True, writer=writer)
                if request is None:
                    return
                self.requests += 1
                await asyncio.sleep(self.latency)
                method = request.start.split(" ")[0]
                for attempt in (1, 2):  # a kept-alive upstream connection may have been closed meanwhile
                    if upstream is None:
                        upstream = await asyncio.open_connection(self.host, self.port)
                    up_reader, up_writer = upstream
                    try:
                        up_writer.write(request.start.encode() + b"\r\n"
                                        + b"".join(f"{k}: {v}\r\n".encode() for k, v in request.headers)
                                        + b"\r\n" + request.raw_body)
                        await up_writer.drain()
                        response = await read_message(up_reader, request=False, method=method)
                        if response is None:
                            raise ConnectionError("upstream closed")
                        break
                    except (ConnectionError, asyncio.IncompleteReadError):
                        up_writer.close()
                        upstream = None
                        if attempt == 2:
                            raise
                if (response.header("connection") or "").lower() == "close":
                    upstream[1].close()
                    upstream = None
                writer.write(response.head(method))
                body = b"" if method == "HEAD" else response.body
                if self.pacer is None:
                    writer.write(body)
                else:
                    view = memoryview(body)
                    for start in range(0, len(view), 64 * 1024):
                        piece = view[start : start + 64 * 1024]
                        await self.pacer.take(len(piece))
                        writer.write(piece)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            if upstream is not None:
                upstream[1].close()
            writer.close()


class Message:
    def __init__(self, start: str, headers: list[tuple[str, str]], raw_body: bytes, body: bytes) -> None:
        self.start, self.headers, self.raw_body, self.body = start, headers, raw_body, body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def head(self, method: str) -> bytes:
        skip = {"connection", "keep-alive", "transfer-encoding"}
        if method != "HEAD":
            skip.add("content-length")
        headers = [(k, v) for k, v in self.headers if k.lower() not in skip]
        if method != "HEAD":
            headers.append(("Content-Length", str(len(self.body))))
        return self.start.encode() + b"\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n"


async def read_message(reader: asyncio.StreamReader, request: bool, method: str = "",
                       writer: asyncio.StreamWriter | None = None) -> Message | None:
    """One HTTP/1.1 message, its body read whole (by Content-Length, chunked, or to the close)."""
    try:
        start = await reader.readuntil(b"\r\n")
    except asyncio.IncompleteReadError:
        return None
    headers = []
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        headers.append((name.strip(), value.strip()))
    if request and writer is not None and any(k.lower() == "expect" and v.lower() == "100-continue"
                                              for k, v in headers):
        headers = [(k, v) for k, v in headers if k.lower() != "expect"]
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    message = Message(start.decode("latin-1").rstrip("\r\n"), headers, b"", b"")
    length = message.header("content-length")
    chunked = (message.header("transfer-encoding") or "").lower() == "chunked"
    status = 0 if request else int(message.start.split(" ")[1])
    if not request and (method == "HEAD" or status in (204, 304) or 100 <= status < 200):
        return message
    if chunked:
        raw, body = bytearray(), bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            raw += size_line
            size = int(size_line.split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            raw += data
            body += data[:-2]
            if size == 0:
                while data != b"\r\n":
                    data = await reader.readuntil(b"\r\n")
                    raw += data
                break
        message.raw_body, message.body = bytes(raw), bytes(body)
        if request:  # forwarded as received: keep the framing header
            pass
    elif length is not None:
        message.body = message.raw_body = await reader.readexactly(int(length))
    elif not request:
        message.body = message.raw_body = await reader.read()
    return message


async def serve(options: argparse.Namespace, listening: socket.socket, parent: int | None) -> None:
    rate = options.mib_per_s * 1024 * 1024 / max(1, options.workers)
    proxy = Proxy(options.upstream, options.latency_ms / 1000, rate or None)
    server = await asyncio.start_server(proxy.serve, sock=listening, limit=1 << 20)
    if parent is None:  # the first process: reports the port, serves until stdin closes
        print(f"PORT {listening.getsockname()[1]}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    else:  # a forked worker: serves while its parent lives
        while os.getppid() == parent:
            await asyncio.sleep(0.5)
    server.close()
    print(f"requests {proxy.requests}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--mib-per-s", type=float, default=0.0, help="bandwidth cap shared by all connections (0: none)")
    parser.add_argument("--workers", type=int, default=1, help="processes accepting on the one socket")
    options = parser.parse_args()
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(512)
    listening.setblocking(False)
    children = []
    for _ in range(max(1, options.workers) - 1):
        parent = os.getpid()
        child = os.fork()
        if child == 0:
            sys.stdin.close()
            asyncio.run(serve(options, listening, parent))
            os._exit(0)
        children.append(child)
    try:
        asyncio.run(serve(options, listening, None))
    finally:
        for child in children:
            os.kill(child, signal.SIGTERM)
            os.waitpid(child, 0)


if __name__ == "__main__":
    main()

"""An HTTP/1.1 proxy on loopback that adds a fixed latency per request and an optional bandwidth cap.

    python bench/latency_proxy.py --upstream http://127.0.0.1:PORT --latency-ms 20 [--mib-per-s 100]
                                  [--conn-mib-per-s 25] [--workers 2] [--copy]

prints ``PORT <n>`` once listening and serves until stdin closes. For the S3 phase of the
benchmark (``bench/s3_run.py``): the moto server answers at once, a bucket in another region
does not. Every request waits ``--latency-ms`` after its head arrived before it is forwarded (one
round trip, as a request costs on a real link; the connection set-up is not charged separately),
and the answer's body is paced at ``--mib-per-s`` shared by all connections, when given.

``--conn-mib-per-s`` caps each connection instead, both ways (the bodies of uploads and of
answers): what one TCP connection to a bucket in another region carries, bounded by its window
over the round trip and by S3's own per-connection rate. A real S3 restore is limited there, not by
a shared link (restic's users needed 32 connections to reach 0.68 GB/s, ~21 MB/s each), so this is
the cap under which more connections pay. Paced bodies are still spliced, a piece of 256 KiB at a
time.

Only the HTTP heads are parsed. A body with a ``Content-Length`` (every S3 object, range and
upload of boto3 and restic) is moved between the two sockets with ``os.splice`` through a pipe:
the bytes stay in the kernel, the proxy pays a few system calls per MiB instead of parsing and
copying each byte through Python (the asyncio version before this cost 1.1-2.2 ms of CPU per MiB
and, on one core, became the test bed's ceiling: ``bench/s3_ceiling.py``). Chunked bodies and bodies
read to the close are copied through a buffer, as is everything with ``--copy`` (the comparison);
a body under a bandwidth cap is spliced a piece at a time, each piece after its pacers allow it. A connection is served by a
thread (blocking sockets: ``splice`` releases the GIL); ``--workers N`` forks N processes that
accept on the one listening socket (the kernel spreads the connections); the bandwidth cap is
then split evenly between them (approximately shared).

Kept apart from ``tests/faults/s3_fault_proxy.py`` (which injects faults): bench code does not
import from tests/. Keep-alive towards the client; one upstream connection per client
connection, reused while the upstream keeps it open.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import os
import select
import signal
import socket
import sys
import threading
import time
from urllib.parse import urlparse

MAX_HEAD = 1 << 20
PIECE = 64 * 1024
#: A paced spliced body moves this much between two waits of its pacers.
PACED_PIECE = 256 * 1024
PIPE_SIZE = 1 << 20
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection"}


class Pacer:
    """A token bucket: ``rate`` bytes a second, bursts of 256 KiB; shared by every connection of a
    process (``--mib-per-s``) or one per connection (``--conn-mib-per-s``)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.allowance = 0.0
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self, size: int) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                self.allowance = min(256 * 1024.0, self.allowance + (now - self.last) * self.rate)
                self.last = now
                if self.allowance >= min(size, 256 * 1024):
                    self.allowance -= size
                    return
                time.sleep((min(size, 256 * 1024) - self.allowance) / self.rate)


class Stream:
    """A blocking socket with the bytes received past the last head or line (a body's first bytes)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def read_until(self, mark: bytes, limit: int = MAX_HEAD) -> bytes | None:
        """Up to and including ``mark``; None at a clean end of stream before any byte."""
        start = 0
        while True:
            found = self.buffer.find(mark, start)
            if found >= 0:
                end = found + len(mark)
                out = bytes(self.buffer[:end])
                del self.buffer[:end]
                return out
            if len(self.buffer) > limit:
                raise ValueError("head too long")
            start = max(0, len(self.buffer) - len(mark) + 1)
            data = self.sock.recv(PIECE)
            if not data:
                if self.buffer:
                    raise ConnectionError("truncated message")
                return None
            self.buffer += data

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            data = self.sock.recv(max(PIECE, size - len(self.buffer)))
            if not data:
                raise ConnectionError("truncated body")
            self.buffer += data
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    def read_to_end(self) -> bytes:
        while True:
            data = self.sock.recv(PIECE)
            if not data:
                break
            self.buffer += data
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


class Head:
    def __init__(self, raw: bytes) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        self.start = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers.append((name.strip(), value.strip()))

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def encode(self, skip: set[str] = frozenset(), extra: list[tuple[str, str]] = ()) -> bytes:
        headers = [(k, v) for k, v in self.headers if k.lower() not in skip] + list(extra)
        return (self.start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1")


class Proxy:
    def __init__(self, upstream: str, latency: float, rate: float | None, splice: bool = True,
                 conn_rate: float | None = None) -> None:
        parsed = urlparse(upstream)
        self.address = (parsed.hostname, parsed.port)
        self.latency = latency
        self.pacer = Pacer(rate) if rate else None
        self.conn_rate = conn_rate
        self.connection = threading.local()  # .pacer: this connection's own (--conn-mib-per-s)
        self.splice = splice and hasattr(os, "splice")
        self.counter = itertools.count()  # next() is atomic under the GIL; the count is printed at the end
        self.spliced_bytes = 0
        self.copied_bytes = 0

    def serve(self, client_sock: socket.socket) -> None:
        client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection.pacer = Pacer(self.conn_rate) if self.conn_rate else None
        client = Stream(client_sock)
        upstream: Stream | None = None
        pipe = None
        try:
            if self.splice:
                pipe = os.pipe()
                try:
                    fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                except OSError:
                    pass
            while True:
                raw = client.read_until(b"\r\n\r\n")
                if raw is None:
                    return
                request = Head(raw)
                next(self.counter)
                method = request.start.split(" ")[0]
                if (request.header("expect") or "").lower() == "100-continue":
                    request.headers = [(k, v) for k, v in request.headers if k.lower() != "expect"]
                    client_sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                time.sleep(self.latency)
                has_body = request.header("content-length") not in (None, "0") or \
                    (request.header("transfer-encoding") or "").lower() == "chunked"
                for attempt in (1, 2):  # a kept-alive upstream connection may have been closed meanwhile
                    if upstream is not None and _closed_by_peer(upstream):
                        upstream.sock.close()
                        upstream = None
                    if upstream is None:
                        sock = socket.create_connection(self.address)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        upstream = Stream(sock)
                    try:
                        upstream.sock.sendall(request.encode())
                        self.forward_body(request, client, upstream.sock, pipe, request=True)
                        raw = upstream.read_until(b"\r\n\r\n")
                        if raw is None:
                            raise ConnectionError("upstream closed")
                        while raw.split(b" ", 2)[1].startswith(b"1"):  # an interim answer: not forwarded
                            raw = upstream.read_until(b"\r\n\r\n")
                            if raw is None:
                                raise ConnectionError("upstream closed")
                        break
                    except (ConnectionError, OSError):
                        upstream.sock.close()
                        upstream = None
                        if attempt == 2 or has_body:  # a body already sent cannot be sent again
                            raise
                response = Head(raw)
                status = int(response.start.split(" ")[1])
                upstream_closes = (response.header("connection") or "").lower() == "close" or \
                    response.start.startswith("HTTP/1.0")
                bodyless = method == "HEAD" or status in (204, 304)
                chunked = (response.header("transfer-encoding") or "").lower() == "chunked"
                if bodyless or chunked or response.header("content-length") is not None:
                    client_sock.sendall(response.encode(HOP_BY_HOP))
                    if not bodyless:
                        self.forward_body(response, upstream, client_sock, pipe, request=False)
                else:  # the body ends with the connection: read it whole, send it with its length
                    body = upstream.read_to_end()
                    upstream_closes = True
                    client_sock.sendall(response.encode(HOP_BY_HOP | {"content-length"},
                                                        [("Content-Length", str(len(body)))]))
                    self.send(client_sock, body)
                if upstream_closes:
                    upstream.sock.close()
                    upstream = None
        except (ConnectionError, OSError, ValueError, IndexError):
            pass
        finally:
            if upstream is not None:
                upstream.sock.close()
            if pipe is not None:
                os.close(pipe[0])
                os.close(pipe[1])
            client_sock.close()

    def forward_body(self, head: Head, source: Stream, target: socket.socket, pipe, request: bool) -> None:
        """The body that follows ``head`` from ``source`` to ``target``: by Content-Length (spliced
        unless ``--copy``; paced piece by piece under a cap), or chunk by chunk with its framing (copied)."""
        if (head.header("transfer-encoding") or "").lower() == "chunked":
            while True:
                line = source.read_until(b"\r\n", 4096)
                if line is None:
                    raise ConnectionError("truncated chunk")
                size = int(line.split(b";")[0], 16)
                if size == 0:  # the last chunk, then trailers up to an empty line
                    while line != b"\r\n":
                        self.send(target, line, paced=not request)
                        line = source.read_until(b"\r\n", 4096)
                        if line is None:
                            raise ConnectionError("truncated trailers")
                    self.send(target, line, paced=not request)
                    return
                self.send(target, line + source.read_exactly(size + 2), paced=not request)
        length = int(head.header("content-length") or 0)
        if length < 0:
            raise ValueError("negative length")
        buffered = bytes(source.buffer[:length])
        del source.buffer[: len(buffered)]
        if buffered:
            self.send(target, buffered, paced=not request)
        remaining = length - len(buffered)
        if remaining and pipe is not None:
            self.splice_body(source.sock, target, pipe, remaining, self._pacers(paced=not request))
        elif remaining:
            self.copy_body(source.sock, target, remaining, paced=not request)

    def _pacers(self, paced: bool) -> list[Pacer]:
        """What a body waits for: this connection's cap (both ways), the shared one (answers only)."""
        pacers = [self.connection.pacer] if getattr(self.connection, "pacer", None) else []
        if paced and self.pacer is not None:
            pacers.append(self.pacer)
        return pacers

    def splice_body(self, source: socket.socket, target: socket.socket, pipe, remaining: int,
                    pacers: list[Pacer] = ()) -> None:
        read_end, write_end = pipe
        self.spliced_bytes += remaining
        step = PACED_PIECE if pacers else PIPE_SIZE
        while remaining:
            for pacer in pacers:
                pacer.take(min(remaining, step))
            moved = os.splice(source.fileno(), write_end, min(remaining, step), flags=os.SPLICE_F_MOVE)
            if moved == 0:
                raise ConnectionError("truncated body")
            remaining -= moved
            while moved:
                moved -= os.splice(read_end, target.fileno(), moved,
                                   flags=os.SPLICE_F_MOVE | (os.SPLICE_F_MORE if remaining else 0))

    def copy_body(self, source: socket.socket, target: socket.socket, remaining: int, paced: bool) -> None:
        buffer = bytearray(PIECE)
        view = memoryview(buffer)
        while remaining:
            got = source.recv_into(view, min(remaining, PIECE))
            if got == 0:
                raise ConnectionError("truncated body")
            remaining -= got
            self.send(target, view[:got], paced=paced)

    def send(self, target: socket.socket, data, paced: bool = True) -> None:
        self.copied_bytes += len(data)
        pacers = self._pacers(paced)
        if not pacers:
            target.sendall(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), PIECE):
            piece = view[start : start + PIECE]
            for pacer in pacers:
                pacer.take(len(piece))
            target.sendall(piece)


def _closed_by_peer(stream: Stream) -> bool:
    """True when a kept-alive upstream connection was closed (or sent something unasked) while idle."""
    if stream.buffer:
        return True
    readable, _, _ = select.select([stream.sock], [], [], 0)
    return bool(readable)


def serve(options: argparse.Namespace, listening: socket.socket, parent: int | None) -> None:
    rate = options.mib_per_s * 1024 * 1024 / max(1, options.workers)
    proxy = Proxy(options.upstream, options.latency_ms / 1000, rate or None, splice=not options.copy,
                  conn_rate=options.conn_mib_per_s * 1024 * 1024 or None)
    stop = threading.Event()
    if parent is None:  # the first process: reports the port, serves until stdin closes
        print(f"PORT {listening.getsockname()[1]}", flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    listening.settimeout(0.5)
    while not stop.is_set() and (parent is None or os.getppid() == parent):
        try:
            client, _ = listening.accept()
        except TimeoutError:
            continue
        except OSError:
            break
        client.settimeout(None)
        threading.Thread(target=proxy.serve, args=(client,), daemon=True).start()
    print(f"requests {next(proxy.counter)} spliced {proxy.spliced_bytes} copied {proxy.copied_bytes}",
          file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--mib-per-s", type=float, default=0.0, help="bandwidth cap shared by all connections (0: none)")
    parser.add_argument("--conn-mib-per-s", type=float, default=0.0,
                        help="bandwidth cap of each connection, both ways (0: none)")
    parser.add_argument("--workers", type=int, default=1, help="processes accepting on the one socket")
    parser.add_argument("--copy", action="store_true", help="copy every body through Python (no splice)")
    options = parser.parse_args()
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(512)
    children = []
    for _ in range(max(1, options.workers) - 1):
        parent = os.getpid()
        child = os.fork()
        if child == 0:
            sys.stdin.close()
            serve(options, listening, parent)
            os._exit(0)
        children.append(child)
    try:
        serve(options, listening, None)
    finally:
        for child in children:
            os.kill(child, signal.SIGTERM)
            os.waitpid(child, 0)


if __name__ == "__main__":
    main()

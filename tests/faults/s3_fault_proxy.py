"""A fault-injecting HTTP proxy on loopback, in front of the moto server (issue 13's S3 campaign).

    python s3_fault_proxy.py --upstream http://127.0.0.1:PORT --seed 7 --rate 0.1

prints ``PORT <n>`` once listening and serves until stdin closes. A separate process, so the
test process (which forks the CLI) runs no threads of its own.

Every request is delayed by a random latency, then, with probability ``rate``, meets one fault
drawn from a seeded generator (requests from several threads arrive in an order the seed does
not fix, so the run is seeded, not replayable request by request):

- ``500``: ``InternalError`` with S3's XML body, nothing forwarded;
- ``503``: ``SlowDown`` with S3's XML body, nothing forwarded;
- ``reset-before``: the connection is reset (RST) before forwarding;
- ``reset-after``: forwarded (moto applied it), then the connection is reset: the client never
  learns that its write succeeded;
- ``stall``: nothing answered for ``--stall`` seconds, then the connection is reset (with a
  stall past botocore's 60 s read timeout, the client's timeout fires first);
- ``truncate``: forwarded, then the headers with the true Content-Length and only part of the
  body, then the connection is closed (a HEAD or an empty body gets ``reset-after`` instead).

Control, on the same port (S3 bucket names cannot start with ``_``): ``POST /_faults/outage/on``
resets every request until ``POST /_faults/outage/off``; ``POST /_faults/rate/<r>`` changes the
rate; ``POST /_faults/next/<fault>/<method>`` gives the next request of that method (GET, PUT,
...) that fault, whatever the rate (deterministic tests); ``GET /_faults/stats`` returns the
counts as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import sys
from collections import Counter
from urllib.parse import urlparse

FAULTS = ("500", "503", "reset-before", "reset-after", "stall", "truncate")
ERROR_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
              '<RequestId>faultproxy</RequestId><HostId>faultproxy</HostId></Error>')


class Proxy:
    def __init__(self, upstream: str, seed: int, rate: float, latency: tuple[float, float], stall: float) -> None:
        parsed = urlparse(upstream)
        self.host, self.port = parsed.hostname, parsed.port
        self.rng = random.Random(seed)
        self.rate = rate
        self.latency = latency
        self.stall = stall
        self.outage = False
        self.forced: dict[str, str] = {}  # method -> the fault its next request meets
        self.stats: Counter = Counter()

    # -- one connection, many requests ------------------------------------------------------
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await read_message(reader, request=True, writer=writer)
                if request is None:
                    return
                if not await self.handle(request, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            reset(writer)
        finally:
            if not writer.is_closing():
                writer.close()

    async def handle(self, request: "Message", writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must end."""
        method, target = request.start.split(" ")[:2]
        if target.startswith("/_faults/"):
            return await self.control(method, target, writer)
        self.stats["requests"] += 1
        if self.outage:
            self.stats["outage-reset"] += 1
            reset(writer)
            return False
        await asyncio.sleep(self.rng.uniform(*self.latency))
        fault = self.rng.choice(FAULTS) if self.rng.random() < self.rate else None
        fault = self.forced.pop(method, fault)
        if fault in ("500", "503"):
            self.stats[fault] += 1
            code, message = ("InternalError", "We encountered an internal error. Please try again.") \
                if fault == "500" else ("SlowDown", "Please reduce your request rate.")
            body = ERROR_BODY.format(code=code, message=message).encode()
            status = "500 Internal Server Error" if fault == "500" else "503 Slow Down"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
                         f"x-amz-request-id: faultproxy\r\n\r\n".encode() + body)
            await writer.drain()
            return True
        if fault == "reset-before":
            self.stats[fault] += 1
            reset(writer)
            return False
        if fault == "stall":
            self.stats[fault] += 1
            await asyncio.sleep(self.stall)
            reset(writer)
            return False
        response = await self.forward(request)
        if fault == "truncate" and (method == "HEAD" or not response.body):
            fault = "reset-after"
        if fault == "reset-after":
            self.stats[fault] += 1
            reset(writer)
            return False
        if fault == "truncate":
            self.stats[fault] += 1
            cut = self.rng.randrange(len(response.body))
            writer.write(response.head(method) + response.body[:cut])
            await writer.drain()
            reset(writer)
            return False
        self.stats["forwarded"] += 1
        writer.write(response.head(method) + (b"" if method == "HEAD" else response.body))
        await writer.drain()
        return True

    async def forward(self, request: "Message") -> "Message":
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            headers = [(k, v) for k, v in request.headers if k.lower() not in ("connection", "keep-alive")]
            headers.append(("Connection", "close"))
            writer.write(request.start.encode() + b"\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers)
                         + b"\r\n" + request.raw_body)
            await writer.drain()
            method = request.start.split(" ")[0]
            response = await read_message(reader, request=False, method=method)
            if response is None:
                raise ConnectionError("upstream closed without answering")
            return response
        finally:
            writer.close()

    async def control(self, method: str, target: str, writer: asyncio.StreamWriter) -> bool:
        parts = target.strip("/").split("/")
        if parts[1:] == ["outage", "on"]:
            self.outage = True
        elif parts[1:] == ["outage", "off"]:
            self.outage = False
        elif len(parts) == 4 and parts[1] == "next" and parts[2] in FAULTS:
            self.forced[parts[3]] = parts[2]
        elif len(parts) == 3 and parts[1] == "rate":
            self.rate = float(parts[2])
        body = json.dumps({"outage": self.outage, "rate": self.rate, **self.stats}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        return True


class Message:
    def __init__(self, start: str, headers: list[tuple[str, str]], raw_body: bytes, body: bytes) -> None:
        self.start, self.headers, self.raw_body, self.body = start, headers, raw_body, body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def head(self, method: str) -> bytes:
        """The response's status line and headers for the client: the body re-framed with its length
        (a HEAD keeps the object's Content-Length)."""
        skip = {"connection", "keep-alive", "transfer-encoding"}
        if method != "HEAD":
            skip.add("content-length")
        headers = [(k, v) for k, v in self.headers if k.lower() not in skip]
        if method != "HEAD":
            headers.append(("Content-Length", str(len(self.body))))
        return self.start.encode() + b"\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n"


async def read_message(reader: asyncio.StreamReader, request: bool, method: str = "",
                       writer: asyncio.StreamWriter | None = None) -> Message | None:
    """One HTTP/1.1 message: a request (body by Content-Length or chunked, forwarded as sent) or a
    response read to the end of its body (the upstream closes after it)."""
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
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client sends its body after this
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
                while data != b"\r\n":  # trailers, then the empty line
                    data = await reader.readuntil(b"\r\n")
                    raw += data
                break
        message.raw_body, message.body = bytes(raw), bytes(body)
    elif length is not None:
        message.body = message.raw_body = await reader.readexactly(int(length))
    elif not request:
        message.body = message.raw_body = await reader.read()
    return message


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a dropped connection looks to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--latency", default="0.001,0.02", help="min,max seconds added to every request")
    parser.add_argument("--stall", type=float, default=2.0)
    options = parser.parse_args()
    low, high = (float(x) for x in options.latency.split(","))
    proxy = Proxy(options.upstream, options.seed, options.rate, (low, high), options.stall)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin or dies
    server.close()


if __name__ == "__main__":
    asyncio.run(main())

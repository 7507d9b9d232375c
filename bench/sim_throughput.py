"""How many aggTrade messages per second the simulator serves when a client reads as fast as it can.

The simulator runs in its own process (`orderflow sim --asap --loop`) on the bundled real tape,
looped. This process is a deliberately cheap reader: it does the WebSocket handshake, then only
walks frame headers to count messages, so the number measures the simulator, not a client.
For reference it also runs a plain `websockets` client for the same count.

Run: .venv/bin/python bench/sim_throughput.py [--messages 1000000]
Target (issue #3): at least 150,000 messages/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe
from _sim import simulator

UPGRADE = (
    b"GET /ws/btcusdt@aggTrade HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Counter(asyncio.Protocol):
    """Counts server text frames by walking their headers; nothing else."""

    def __init__(self, wanted: int, done: asyncio.Future[tuple[int, int]]) -> None:
        self.wanted, self.done = wanted, done
        self.buffer = bytearray()
        self.upgraded = False
        self.count = 0
        self.bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(UPGRADE)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            del buffer[: end + 4]
            self.upgraded = True
        position, size = 0, len(buffer)
        while size - position >= 2:
            length = buffer[position + 1] & 0x7F
            header = 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                header = 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                header = 10
            if size - position < header + length:
                break
            if buffer[position] & 0x0F == 1:
                self.count += 1
            position += header + length
        del buffer[:position]
        if self.count >= self.wanted and not self.done.done():
            self.done.set_result((self.count, self.bytes))


async def raw_reader(port: int, messages: int) -> tuple[float, int, int]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, int]] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: Counter(messages, done), "127.0.0.1", port)
    started = time.perf_counter()
    count, size = await done
    elapsed = time.perf_counter() - started
    transport.close()
    return elapsed, count, size


async def websockets_reader(port: int, messages: int) -> float:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/btcusdt@aggTrade", max_queue=None) as ws:
        started = time.perf_counter()
        for _ in range(messages):
            await ws.recv()
        return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, clock ticks at 100 Hz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    with simulator("--asap", "--loop") as sim:
        cpu_before = cpu_seconds(sim.pid)
        elapsed, count, size = asyncio.run(raw_reader(sim.port, args.messages))
        sim_cpu = cpu_seconds(sim.pid) - cpu_before
        ws_messages = min(args.messages, 300_000)
        ws_elapsed = asyncio.run(websockets_reader(sim.port, ws_messages))
    rate = count / elapsed
    print(f"machine: {describe()}")
    print("simulator (separate process, bundled real BTCUSDT tape looped, as fast as the reader reads):")
    print(f"  {count:,} messages, {size / 1e6:.1f} MB in {elapsed:.2f} s = {rate:,.0f} messages/s "
          f"({size / elapsed / 1e6:.1f} MB/s); simulator CPU {sim_cpu:.2f} s ({sim_cpu / count * 1e6:.2f} µs/message)")
    print(f"  for reference, a plain websockets client reading {ws_messages:,}: "
          f"{ws_messages / ws_elapsed:,.0f} messages/s")
    print(f"  reader peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"target >= 150,000 messages/s: {'met' if rate >= 150_000 else 'NOT met'}")


if __name__ == "__main__":
    main()

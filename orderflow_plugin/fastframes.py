"""The fast frame reader: whole data frames cut straight out of each read, websockets kept for the rest.

With ``reader="fast"`` (the ``connector.reader`` setting), websockets still does the handshake
and every control frame (ping, pong, close), but a whole unmasked text or binary frame of at most
``max_size`` bytes (every frame Binance sends) is cut out of the read by :meth:`FastFrames._scan`,
without websockets' per-frame objects. Anything else (a fragment, a reserved bit, a mask, a 64-bit
length, an oversized frame) hands the rest of the connection back to websockets, which reports it
as before. websockets only ever sees whole frames, so its parser stays at a frame boundary. One
difference: websockets closes a text frame that is not UTF-8 with 1007; the fast reader passes it
to the decoder, which reports it as a bad frame and the connection goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.client import ClientProtocol
from websockets.protocol import State

__all__ = ["FastFrames"]

_MAX_HEAD = 65536  # bytes of HTTP response the fast reader holds while looking for its end
_WHOLE_DATA = (0x81, 0x82)  # FIN + text, FIN + binary, no reserved bits: one frame, one message


class FastFrames:
    """The fast reader's part of :class:`~orderflow_plugin.wsconnection.WsConnection`, which it is mixed into.

    A mixin rather than an object of its own so that ``_scan`` reaches the connection's state
    without one more attribute hop per read.
    """

    # The connection's state, set up by WsConnection.__init__
    on_frames: Callable[[Any, list[bytes], float], int]  # (connection, one read's frames, when read) -> taken
    max_size: int
    protocol: ClientProtocol
    paused: bool
    _now: float  # when the bytes being scanned were read (or released by resume)
    fast: bool  # the fast reader is cutting data frames (from the end of the 101 response on)
    _head: bytes | None  # the HTTP response, until it is whole (None: the websockets reader, or done)
    _buffer: bytes  # the start of a frame not yet whole, or what a pause held back
    _feed: Callable[[bytes], None]  # websockets parses the bytes; the connection acts on its events

    def _read_head(self, data: bytes) -> None:
        """Fast reader: give websockets the HTTP response alone; the frames after it are ours."""
        head = self._head + data  # type: ignore[operator]
        end = head.find(b"\r\n\r\n")
        if end < 0 and len(head) <= _MAX_HEAD:
            self._head = head
            return
        self._head = None
        if end < 0:  # no end of headers in 64 KiB: websockets rejects what it cannot parse
            self._feed(head)
            return
        self._feed(head[:end + 4])
        rest = head[end + 4:]
        if self.protocol.state is State.OPEN:
            self.fast = True
            if rest:
                self._scan(rest)
        elif rest:  # not a 101: the body belongs to the response websockets reports
            self._feed(rest)

    def _scan(self, data: bytes) -> None:
        """Fast reader: hand the whole data frames in the buffer to ``on_frames``, a run at a time (up to a control
        frame, or the end of what was read); control frames to websockets."""
        buffer = self._buffer + data if self._buffer else data
        size = len(buffer)
        position = 0
        max_size = self.max_size
        frames: list[bytes] = []  # the run of data frames not yet handed over, from ``run_at`` on
        run_at = 0
        while size - position >= 2:
            first = buffer[position]
            length = buffer[position + 1]  # a set mask bit makes it >= 128: handed over below
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = (buffer[start] << 8) | buffer[start + 1]
                start += 2
            elif length > 126:
                if not frames or self._hand(frames, buffer, run_at):
                    self._hand_over(buffer[position:])
                return
            end = start + length
            if end > size:
                break
            if first in _WHOLE_DATA and length <= max_size:
                if not frames:
                    run_at = position
                frames.append(buffer[start:end])
                position = end
            elif first & 0x0F >= 0x08 and first & 0x80 and not first & 0x70:  # a control frame: websockets'
                if frames:  # the data frames before it first, as they came
                    if not self._hand(frames, buffer, run_at):
                        return
                    frames = []
                self._feed(buffer[position:end])
                position = end
                if self.protocol.state is not State.OPEN:  # a close: websockets finishes the connection
                    self._hand_over(buffer[position:])
                    return
            else:  # a fragment, a reserved bit, an oversized frame: websockets reads (and judges) the rest
                if not frames or self._hand(frames, buffer, run_at):
                    self._hand_over(buffer[position:])
                return
        if frames and not self._hand(frames, buffer, run_at):
            return
        self._buffer = buffer[position:] if position < size else b""

    def _hand(self, frames: list[bytes], buffer: bytes, run_at: int) -> bool:
        """Hand ``frames`` (whole data frames, from ``run_at`` in ``buffer``) over; False when the reader paused
        before taking them all: the rest of ``buffer``, from the first frame not taken, waits for resume()."""
        while True:
            taken = self.on_frames(self, frames, self._now)  # one read, one time: no clock read per frame
            if self.paused:
                self._buffer = buffer[_skip(buffer, run_at, taken):]
                return False
            if taken >= len(frames):
                return True
            # Asked to pause but not paused (the transport is closing): the rest goes on, as it would have.
            run_at, frames = _skip(buffer, run_at, taken), frames[taken:]

    def _hand_over(self, data: bytes) -> None:
        """Stop the fast reader; websockets parses ``data`` (which starts at a frame) and all that follows."""
        self.fast = False
        self._buffer = b""
        if data:
            self._feed(data)


def _skip(buffer: bytes, position: int, count: int) -> int:
    """Where the frame after ``count`` whole data frames from ``position`` starts (their lengths are < 64 KiB)."""
    for _ in range(count):
        length = buffer[position + 1]
        if length == 126:
            position += 4 + ((buffer[position + 2] << 8) | buffer[position + 3])
        else:
            position += 2 + length
    return position

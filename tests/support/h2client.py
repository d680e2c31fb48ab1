"""A raw HTTP/2 client (the `h2` library over a plain socket) for what a gRPC client library will
not do: send undecodable frames, reset streams by the thousand, never read, or vanish mid-call."""

from __future__ import annotations

import collections
import socket
import struct
import time
from collections.abc import Iterable, Sequence

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

Header = tuple[str, str]


def grpc_frame(payload: bytes) -> bytes:
    """One length-prefixed gRPC message (uncompressed)."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def grpc_headers(path: str, authority: str, extra: Iterable[Header] = ()) -> list[Header]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]


class H2Client:
    """One HTTP/2 connection. `window` is the initial flow-control window this client offers
    (a small one with no WINDOW_UPDATE makes a client that never reads)."""

    def __init__(self, address: str, *, window: int | None = None, timeout: float = 10.0) -> None:
        host, _, port = address.rpartition(":")
        self.authority = address
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.events: list[h2.events.Event] = []
        self.remote_settings: dict[int, int] = {}
        self.closed = False

    def ignore_stream_limit(self) -> None:
        """Open streams past the server's SETTINGS_MAX_CONCURRENT_STREAMS, as a flood would
        (h2 itself refuses to; its settings keep each value in a deque of pending changes)."""
        code = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
        self.conn.remote_settings._settings[code] = collections.deque([2**31 - 1])

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def start(self, path: str, payload: bytes | None, metadata: Sequence[Header] = ()) -> int:
        """Open a stream with a gRPC call; `payload` None sends headers only (no END_STREAM)."""
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = grpc_headers(path, self.authority, metadata)
        self.conn.send_headers(stream_id, headers, end_stream=False)
        if payload is not None:
            self.send_body(stream_id, grpc_frame(payload))
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, body: bytes) -> None:
        """DATA carrying exactly `body` (already framed, or deliberately not), in frames the
        peer's window and frame size allow, then END_STREAM."""
        while body:
            room = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if room <= 0:
                self.flush()
                self.read(until=1.0)
                continue
            piece, body = body[:room], body[room:]
            self.conn.send_data(stream_id, piece)
        self.conn.end_stream(stream_id)
        self.flush()

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id)
        self.flush()

    def read(self, until: float | None = None) -> list[h2.events.Event]:
        """Read what arrived (one recv); acknowledges nothing beyond what h2 does itself."""
        if until is not None:
            self.sock.settimeout(until)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        except OSError:
            self.closed = True
            return []
        if not data:
            self.closed = True
            return []
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # grpc follows its GOAWAY with a PING, which h2 refuses once the connection is closed;
            # the events of this read are lost with the exception, so find the GOAWAY ourselves.
            self.closed = True
            events = _goaways(data)
        for event in events:
            if isinstance(event, h2.events.RemoteSettingsChanged):
                for code, setting in event.changed_settings.items():
                    self.remote_settings[int(code)] = setting.new_value
        self.flush()
        self.events.extend(events)
        return events

    def read_until_closed(self, stream_ids: set[int], timeout: float) -> dict[int, list[Header]]:
        """Trailers (or trailers-only headers) of each stream, reading until all ended."""
        ended: dict[int, list[Header]] = {}
        headers: dict[int, list[Header]] = {}
        end = time.monotonic() + timeout
        while stream_ids - ended.keys() and time.monotonic() < end and not self.closed:
            for event in self.read(until=max(0.05, end - time.monotonic())):
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    headers.setdefault(event.stream_id, []).extend(event.headers)
                if isinstance(event, h2.events.StreamEnded):
                    ended[event.stream_id] = headers.get(event.stream_id, [])
                elif isinstance(event, h2.events.StreamReset):
                    ended[event.stream_id] = [("reset", str(event.error_code))]
            self.flush()
        return ended

    def abort(self) -> None:
        """Vanish: close the socket with RST, no GOAWAY, streams in flight."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.closed = True

    def close(self) -> None:
        if not self.closed:
            try:
                self.conn.close_connection()
                self.flush()
            except OSError:
                pass
            self.sock.close()
            self.closed = True


def _goaways(data: bytes) -> list[h2.events.Event]:
    """ConnectionTerminated events for the GOAWAY frames whole in `data`."""
    events: list[h2.events.Event] = []
    offset = 0
    while offset + 9 <= len(data):
        frame, length = hyperframe.frame.Frame.parse_frame_header(
            memoryview(data[offset : offset + 9])
        )
        body = data[offset + 9 : offset + 9 + length]
        if len(body) < length:
            break
        if isinstance(frame, hyperframe.frame.GoAwayFrame):
            frame.parse_body(memoryview(body))
            event = h2.events.ConnectionTerminated()
            event.error_code = h2.errors._error_code_from_int(frame.error_code)
            event.last_stream_id = frame.last_stream_id
            event.additional_data = frame.additional_data
            events.append(event)
        offset += 9 + length
    return events

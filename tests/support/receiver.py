"""A real HTTP receiver on 127.0.0.1 for webhook tests: records every request and
answers from a script (status codes, optional delay), then 200. A ``gate`` (a
threading.Event) holds every answer until it is set, to keep requests in flight."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request was complete
    wall: float = 0.0  # time.time() then, to compare with timestamps the server stored


class Receiver:
    def __init__(self, script=(), delay: float = 0.0, body: bytes = b"ok", headers=None, gate=None):
        self.requests: list[Received] = []
        #: Requests whose sender hung up before the whole body arrived (a killed
        #: dispatcher): not recorded, not answered, as a real server would drop them.
        self.torn = 0
        self.script = list(script)
        self.delay = delay
        self.gate = gate
        self.reply_body = body
        self.reply_headers = headers or {}
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if len(body) < length:
                    with receiver.lock:
                        receiver.torn += 1
                    self.close_connection = True
                    return
                with receiver.lock:
                    receiver.requests.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                            time.time(),
                        )
                    )
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.arrived.notify_all()
                if receiver.gate is not None:
                    receiver.gate.wait()
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                for name, value in receiver.reply_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(receiver.reply_body)))
                self.end_headers()
                self.wfile.write(receiver.reply_body)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                # A sender that hangs up before the answer (a killed dispatcher) is part
                # of what the tests do; anything else is still reported.
                import sys

                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.gate is not None:
            self.gate.set()  # no handler left hanging
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver got {len(self.requests)} requests, expected {count}")
                self.arrived.wait(left)
            return list(self.requests)

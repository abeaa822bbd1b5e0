"""A real HTTP receiver on 127.0.0.1, in a thread, that answers from a script and keeps
every request it was sent, verified with ``standardwebhooks`` as a receiver would."""

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


@dataclass
class Received:
    headers: dict
    body: bytes
    at: float


@dataclass
class Receiver:
    """``script``: one answer per request, in order, then ``200``. An answer is a status
    code, ``("slow", seconds)`` (then 200), or ``"hang"``, held until ``release`` is set."""

    script: list = field(default_factory=list)
    body: bytes = b"ok"
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    got: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                received = Received(dict(self.headers), self.rfile.read(length), time.monotonic())
                receiver.requests.append(received)
                receiver.got.set()
                answer = receiver.script.pop(0) if receiver.script else 200
                if answer == "hang":
                    receiver.release.wait(60)
                    answer = 200
                elif isinstance(answer, tuple):
                    time.sleep(answer[1])
                    answer = 200
                try:
                    self.send_response(answer)
                    self.send_header("content-length", str(len(receiver.body)))
                    self.end_headers()
                    self.wfile.write(receiver.body)
                except OSError:
                    pass  # the sender is gone (timed out or killed)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def verified(self, secret: str) -> list[dict]:
        """Each request's envelope, after ``Webhook(secret).verify`` accepted it."""
        return [Webhook(secret).verify(r.body, r.headers) for r in self.requests]

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.requests]

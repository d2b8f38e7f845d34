"""The local lab's app tier: healthy only while PostgreSQL and Redis answer.

GET /healthz returns 200 and {"postgres": "ok", "redis": "ok"} when both
accept a connection on 127.0.0.1, else 503 naming what is down. Standard
library only, so the lab needs nothing beyond Debian's python3.
"""

import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, PG_PORT, REDIS_PORT = (int(a) for a in sys.argv[1:4])


def reachable(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return "ok"
    except OSError as e:
        return f"down: {e.strerror or e}"


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        state = {"postgres": reachable(PG_PORT), "redis": reachable(REDIS_PORT)}
        body = json.dumps(state).encode()
        healthy = all(v == "ok" for v in state.values())
        self.send_response(200 if healthy else 503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Health).serve_forever()

"""A stand-in for LaunchDarkly's big-segment endpoints over HTTPS, for scripts/test-sync-install.sh.

    python3 fake_ld_https.py CERT KEY SDK_KEY PORT_FILE

Serves on 127.0.0.1 (a free port, written to PORT_FILE once listening):
  GET /sdk/big-segments/revisions        one patch: beta.g1 includes the hash of "user-key"
  GET /sdk/big-segments/revisions?after= []
  GET /big-segments                      an SSE stream of comments, one a second, held open
Any request without `Authorization: SDK_KEY` gets 401. Runs until killed.
"""

import base64
import hashlib
import http.server
import json
import os
import ssl
import sys
import time
import urllib.parse

CERT, KEY, SDK_KEY, PORT_FILE = sys.argv[1:5]
USER_HASH = base64.b64encode(hashlib.sha256(b"user-key").digest()).decode()
PATCH = {
    "environmentId": "env-test",
    "segmentId": "beta.g1",
    "version": "1700000000000",
    "previousVersion": "",
    "changes": {
        "included": {"add": [USER_HASH], "remove": []},
        "excluded": {"add": [], "remove": []},
    },
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("fake-ld: " + (fmt % args) + "\n")

    def send(self, status, body, content_type="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.headers.get("Authorization") != SDK_KEY:
            return self.send(401, '{"message":"bad key"}')
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/sdk/big-segments/revisions":
            return self.send(200, json.dumps([] if "after" in query else [PATCH]))
        if url.path == "/big-segments":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    time.sleep(1)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                return
        return self.send(404, '{"message":"not found"}')


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        sock, addr = super().get_request()
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        # A client refusing the certificate ends its handshake: expected in the test.
        sys.stderr.write(f"fake-ld: connection from {client_address} failed: {sys.exc_info()[1]}\n")


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server = Server(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()

#!/usr/bin/env python3
"""A misbehaving Ethereum JSON-RPC endpoint: a proxy in front of a real node
that misbehaves as told.

    faultnode.py CONTROL UPSTREAM_URL

Listens on a free port of 127.0.0.1 and prints it on stdout. Before each
request it reads the mode from the file CONTROL (one word; missing or empty
means "forward"):

    forward   pass the request to UPSTREAM_URL and its answer back
    slow:S    wait S seconds, then forward (a node slower than any timeout)
    error     a JSON-RPC error object (code -32000) with the request's id
    http500   HTTP 500 with an empty body
    garbage   200 bytes of random binary
    badjson   a JSON object cut off in the middle
    wrongid   the upstream answer with another id
    refuse    close the connection without answering
    huge      a 33 MiB answer (over the client's 32 MiB limit)

Each request is served in its own thread, so a slow answer does not hold
up the others. Nothing is logged on stdout after the port.
"""
import http.server
import json
import os
import socketserver
import sys
import time
import urllib.request

control, upstream = sys.argv[1], sys.argv[2]


def mode():
    try:
        with open(control) as f:
            m = f.read().strip()
    except FileNotFoundError:
        m = ""
    return m or "forward"


def forward(body):
    req = urllib.request.Request(upstream, data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, data):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        m = mode()
        try:
            rid = json.loads(body).get("id", 0)
        except ValueError:
            rid = 0
        if m.startswith("slow:"):
            time.sleep(float(m[5:]))
            m = "forward"
        if m == "forward":
            self.reply(200, forward(body))
        elif m == "error":
            self.reply(200, json.dumps({"jsonrpc": "2.0", "id": rid, "error": {
                "code": -32000, "message": "the node is not feeling well"}}).encode())
        elif m == "http500":
            self.reply(500, b"")
        elif m == "garbage":
            self.reply(200, os.urandom(200))
        elif m == "badjson":
            self.reply(200, b'{"jsonrpc":"2.0","id":%d,"result":"0x' % rid)
        elif m == "wrongid":
            a = json.loads(forward(body))
            a["id"] = rid + 1000
            self.reply(200, json.dumps(a).encode())
        elif m == "refuse":
            self.close_connection = True
            self.connection.close()
        elif m == "huge":
            pad = b" " * (33 << 20)
            self.reply(200, pad + json.dumps({"jsonrpc": "2.0", "id": rid,
                                              "result": "0x1"}).encode())
        else:
            self.reply(400, b"unknown fault mode")

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout) while we were slow: expected


s = Server(("127.0.0.1", 0), Handler)
print(s.server_address[1], flush=True)
s.serve_forever()

#!/usr/bin/env python3
"""A recording JSON-RPC proxy: makes seeds for fuzz-rpc.

    rpc-record.py OUT UPSTREAM_URL

Listens on a free port of 127.0.0.1 (printed on stdout, then serves until
killed), forwards every POST to UPSTREAM_URL and appends each answer to OUT
in fuzz-rpc's input format: answers separated by NUL bytes, the request id
replaced by @ID@. OUT must start with the mode byte (the caller writes it).
"""
import http.server
import re
import socket
import sys
import urllib.request

out_path, upstream = sys.argv[1], sys.argv[2]
first = [True]


class Proxy(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = urllib.request.Request(upstream, data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = r.read()
        rec = re.sub(rb'"id"\s*:\s*\d+', b'"id":@ID@', answer, count=1)
        with open(out_path, "ab") as f:
            if not first[0]:
                f.write(b"\0")
            f.write(rec)
        first[0] = False
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


s = http.server.HTTPServer(("127.0.0.1", 0), Proxy)
print(s.server_address[1], flush=True)
s.serve_forever()

#!/usr/bin/env python3
"""A stand-in for the dstack guest agent's key API. FOR TESTS ONLY.

The real agent runs inside a dstack TEE and derives keys from the app's
root key, which the KMS hands it after remote attestation; its simulator is
a Rust binary. This stand-in answers `POST /GetKey` the way the agent does
so that tally's dstack: key source can be tested here, on a Unix socket (or
TCP, for the http:// form of DSTACK_SIMULATOR_ENDPOINT):

  request   {"path": P, "purpose": "", "algorithm": "secp256k1"}
  200       {"key": "<64 hex>", "signature_chain": ["<hex>", "<hex>"]}
  400       {"error": "..."}

key = HKDF-SHA256(salt "RATLS", IKM = the app root key, info = P's bytes),
32 bytes, as the agent derives it. With the simulator's published app key
(the default below, "k256_key" of dstack's sdk/simulator/appkeys.json) the
path /encryption/db gives ce74bf62...116424 (`--self-test` checks this and
RFC 5869's test vectors). The signature chain here is a placeholder, not a
signature: tally does not check it, and nothing here attests anything.

--mode makes it answer as a broken or hostile agent can: 400 with an
error, 500, garbage, a key that is not hex, a short key, a JSON answer
without a key, a chunked answer, no answer at all (hang), or a closed
connection.

Only the Python standard library is used.
"""
import argparse
import hashlib
import hmac
import json
import os
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

# dstack sdk/simulator/appkeys.json, "k256_key": the simulator's app key.
SIMULATOR_APP_KEY = "d6e88992cdeeee35fe70b5db61ab66cdb191fb9b6ec9313757ef162dd7214d5d"
KNOWN_PATH = "/encryption/db"
KNOWN_KEY = "ce74bf621800ada4674765daccaf3a8b444d3212dbe97eecb220fed46f116424"

MODES = ["ok", "400", "500", "garbage", "nonhex", "short", "long", "nokey",
         "chunked", "hang", "close"]


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 extract-then-expand."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


def derive(app_key: bytes, path: str) -> bytes:
    return hkdf_sha256(b"RATLS", app_key, path.encode(), 32)


def self_test() -> int:
    # RFC 5869 A.1 and A.3 (SHA-256).
    v1 = hkdf_sha256(bytes.fromhex("000102030405060708090a0b0c"),
                     bytes.fromhex("0b" * 22),
                     bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), 42).hex()
    ok = v1 == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                "34007208d5b887185865")
    v3 = hkdf_sha256(b"", bytes.fromhex("0b" * 22), b"", 42).hex()
    ok = ok and v3 == ("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
                       "9d201395faa4b61a96c8")
    k = derive(bytes.fromhex(SIMULATOR_APP_KEY), KNOWN_PATH).hex()
    ok = ok and k == KNOWN_KEY
    print("hkdf rfc5869 A.1/A.3 and %s -> %s: %s" % (KNOWN_PATH, k,
                                                     "ok" if ok else "FAILED"))
    return 0 if ok else 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet; requests go to --log
        pass

    def send_json(self, status, obj, chunked=False):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 7):
                part = body[i:i + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_GET(self):
        self.send_json(405, {"error": "method not allowed"})

    def do_POST(self):
        srv = self.server
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        if srv.log:
            with open(srv.log, "a") as f:
                f.write(json.dumps({"target": self.path,
                                    "content_type": self.headers.get("Content-Type"),
                                    "body": raw.decode("utf-8", "replace")}) + "\n")
        if self.path != "/GetKey":
            self.send_json(404, {"error": "no such method: %s" % self.path})
            return
        try:
            req = json.loads(raw)
            path = req["path"]
            if not isinstance(path, str):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self.send_json(400, {"error": "invalid request body"})
            return
        mode = srv.mode
        if mode == "hang":
            time.sleep(srv.hang)
            return
        if mode == "close":
            self.close_connection = True
            self.request.shutdown(socket.SHUT_RDWR)
            return
        if mode == "400":
            self.send_json(400, {"error": "app is not allowed to get keys: "
                                          "stand-in refusal"})
            return
        if mode == "500":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "garbage":
            body = b"\x00\xffnot json at all {"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        key = derive(srv.app_key, path).hex()
        chain = [hmac.new(srv.app_key, b"placeholder-%d" % i + path.encode(),
                          hashlib.sha256).hexdigest() for i in range(2)]
        if mode == "nonhex":
            key = "zz" + key[2:]
        elif mode == "short":
            key = key[:62]
        elif mode == "long":
            key = key + "00"
        if mode == "nokey":
            self.send_json(200, {"signature_chain": chain})
            return
        self.send_json(200, {"key": key, "signature_chain": chain},
                       chunked=(mode == "chunked"))


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--socket", help="Unix socket path to listen on")
    ap.add_argument("--tcp", help="HOST:PORT to listen on (PORT 0: any; "
                                  "the port is printed)")
    ap.add_argument("--app-key", default=SIMULATOR_APP_KEY,
                    help="app root key, 64 hex (default: the simulator's)")
    ap.add_argument("--mode", choices=MODES, default="ok")
    ap.add_argument("--hang", type=float, default=30.0,
                    help="seconds a hanging answer waits")
    ap.add_argument("--log", help="append each request here (JSON lines)")
    ap.add_argument("--derive", metavar="PATH",
                    help="print the key for PATH and exit")
    ap.add_argument("--self-test", action="store_true",
                    help="check HKDF and the simulator's known value")
    a = ap.parse_args()
    app_key = bytes.fromhex(a.app_key)
    if a.self_test:
        return self_test()
    if a.derive is not None:
        print(derive(app_key, a.derive).hex())
        return 0
    if a.socket:
        try:
            os.unlink(a.socket)
        except FileNotFoundError:
            pass
        srv = UnixServer(a.socket, Handler)
        where = a.socket
    elif a.tcp:
        host, port = a.tcp.rsplit(":", 1)
        srv = TcpServer((host, int(port)), Handler)
        where = "port %d" % srv.server_address[1]
    else:
        ap.error("--socket or --tcp is needed")
    srv.app_key, srv.mode, srv.hang, srv.log = app_key, a.mode, a.hang, a.log
    print("ready %s" % where, flush=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        # Until stdin closes or a signal: the test owns our lifetime.
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    srv.shutdown()
    if a.socket:
        try:
            os.unlink(a.socket)
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

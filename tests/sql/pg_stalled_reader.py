"""A PostgreSQL client that stops reading: it authenticates (MD5), sends
one query and then never reads the socket again, with a small receive
buffer so the server's writes block soon.

Usage: pg_stalled_reader.py SPEC.json, where SPEC is
{"host", "port", "user", "password", "query"}. Prints {"sent": true} once
the query is sent, then waits for its standard input to close.
"""
import hashlib
import json
import socket
import struct
import sys


def main():
    spec = json.load(open(sys.argv[1]))
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((spec["host"], spec["port"]))

    def exact(n):
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                raise SystemExit("server closed the connection")
            out += chunk
        return out

    def message():
        head = exact(5)
        (length,) = struct.unpack("!I", head[1:])
        return head[:1], exact(length - 4)

    user = spec["user"]
    params = b"user\0" + user.encode() + b"\0database\0glasshouse\0\0"
    s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    kind, body = message()
    if kind != b"R" or struct.unpack("!I", body[:4])[0] != 5:
        raise SystemExit(f"expected an MD5 password request, got {kind!r}")
    inner = hashlib.md5((spec["password"] + user).encode()).hexdigest()
    outer = "md5" + hashlib.md5(inner.encode() + body[4:8]).hexdigest()
    password = outer.encode() + b"\0"
    s.sendall(b"p" + struct.pack("!I", 4 + len(password)) + password)
    while True:
        kind, body = message()
        if kind == b"E":
            raise SystemExit(f"refused: {body!r}")
        if kind == b"Z":
            break
    query = spec["query"].encode() + b"\0"
    s.sendall(b"Q" + struct.pack("!I", 4 + len(query)) + query)
    print(json.dumps({"sent": True}), flush=True)
    sys.stdin.read()


main()

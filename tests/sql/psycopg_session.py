"""Runs statements on one psycopg 3 connection (extended query protocol,
as the JDBC driver sends them), commands without rows (SET) included, and
prints one JSON line per statement.

Usage: psycopg_session.py SPEC.json, where SPEC is
{"host", "port", "user", "password", "statements": [SQL, ...]}.
Output: {"connect_error": MSG} if the connection is refused, else one line
per statement: {"status": TAG, "columns": [...] or null, "rows": [[...], ...]}
or {"error": MSG, "sqlstate": CODE}.
"""
import json
import sys

import psycopg


def main():
    spec = json.load(open(sys.argv[1]))
    try:
        conn = psycopg.connect(
            host=spec["host"], port=spec["port"], user=spec["user"],
            password=spec["password"], dbname="glasshouse", autocommit=True,
            connect_timeout=10,
        )
    except psycopg.OperationalError as e:
        print(json.dumps({"connect_error": str(e)}))
        return
    with conn:
        for q in spec["statements"]:
            try:
                cur = conn.execute(q)
                if cur.description is None:
                    print(json.dumps({"status": cur.statusmessage, "columns": None, "rows": []}))
                    continue
                cols = [d.name for d in cur.description]
                rows = [[v if v is None or isinstance(v, (bool, int, float, str)) else str(v) for v in r]
                        for r in cur.fetchall()]
                print(json.dumps({"status": cur.statusmessage, "columns": cols, "rows": rows}))
            except psycopg.Error as e:
                print(json.dumps({"error": str(e), "sqlstate": e.sqlstate}))


main()

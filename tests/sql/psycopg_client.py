"""Runs queries through the PostgreSQL wire protocol with psycopg 3 (libpq,
extended query protocol) and prints one JSON line per query.

Usage: psycopg_client.py SPEC.json, where SPEC is
{"host", "port", "user", "password", "queries": [SQL, ...]}; a query may
be {"idle": SECONDS} instead: the connection stays silent that long
(printed as {"idled": SECONDS}).
Output: {"connect_error": MSG} if the connection is refused, else one line
per query: {"columns": [...], "rows": [[...], ...]} or
{"error": MSG, "sqlstate": CODE}. Every query runs on the same connection,
so an error followed by a result shows the server kept serving it.
"""
import json
import sys
import time

import psycopg


def cell(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


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
        for q in spec["queries"]:
            if isinstance(q, dict):
                time.sleep(q["idle"])
                print(json.dumps({"idled": q["idle"]}))
                continue
            try:
                cur = conn.execute(q)
                cols = [d.name for d in cur.description]
                rows = [[cell(v) for v in r] for r in cur.fetchall()]
                print(json.dumps({"columns": cols, "rows": rows}))
            except psycopg.Error as e:
                print(json.dumps({"error": str(e), "sqlstate": e.sqlstate}))


main()

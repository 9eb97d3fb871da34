"""Runs queries through Arrow Flight SQL with the ADBC Flight SQL driver and
prints one JSON line per query.

Usage: adbc_client.py SPEC.json, where SPEC is
{"uri": "grpc://HOST:PORT", "token": TOKEN or null, "queries": [SQL, ...]}.
Output: one line per query: {"columns": [...], "types": [...], "rows": [[...]]}
or {"error": MSG} (also for every query when the connection is refused).
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql


def cell(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, list):
        return [cell(x) for x in v]
    return str(v)


def main():
    spec = json.load(open(sys.argv[1]))
    kwargs = {}
    if spec.get("token") is not None:
        kwargs["adbc.flight.sql.authorization_header"] = "Bearer " + spec["token"]
    try:
        conn = flight_sql.connect(spec["uri"], db_kwargs=kwargs, autocommit=True)
    except Exception as e:  # a refused connection is reported per query
        for _ in spec["queries"]:
            print(json.dumps({"error": "connect: " + str(e)}))
        return
    for q in spec["queries"]:
        try:
            with conn.cursor() as cur:
                cur.execute(q)
                table = cur.fetch_arrow_table()
                cols = table.column_names
                rows = [[cell(r[c]) for c in cols] for r in table.to_pylist()]
                types = [str(t) for t in table.schema.types]
                print(json.dumps({"columns": cols, "types": types, "rows": rows}))
        except Exception as e:  # the driver's errors carry the server's status
            print(json.dumps({"error": str(e)}))
    conn.close()


main()

#!/usr/bin/env python3
"""A benchmark peer for fanout: what a Python team with a blocking driver would write instead.

The standard library's ThreadingHTTPServer (HTTP/1.1 keep-alive, a thread per client connection)
in front of a ThreadPoolExecutor of POOL_SIZE worker threads, each owning one psycopg2 connection
(Debian python3-psycopg2), opened when the thread starts, in autocommit mode. A batch's queries are
submitted to the executor together and the reply waits for all of them, so they run concurrently
on up to POOL_SIZE connections, each in its own implicit transaction.

    python3 server.py [PORT [DSN [POOL_SIZE]]]
    env: PORT (8083), DATABASE_URL (a postgresql:// URI or key=value conninfo; PG* variables also
         work), POOL_SIZE (16), LISTEN_HOST (127.0.0.1)

POST /v1/batch takes fanout's request body and answers fanout's reply shape for the fields the
benchmark reads: results[].command, row_count, columns (name, type, type_oid), rows (arrays), and
{"error":{"code","message"}} per failed query. int8 and numeric come back as strings, as fanout
writes them (their text is passed through, not parsed to int/Decimal). psycopg2 has no $1
placeholders: each SQL text is rewritten once ($n -> %(pn)s, % -> %%) and the rewrite cached.
GET /readyz answers 200.
"""
import functools
import json
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import psycopg2.extensions as ext

MAX_BODY = 1 << 20

# int8 and numeric: keep PostgreSQL's text.
ext.register_type(ext.new_type((20,), "INT8_TEXT", lambda value, cursor: value))
ext.register_type(ext.new_type((1700,), "NUMERIC_TEXT", lambda value, cursor: value))


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql):
    """$1 placeholders as psycopg2's %(p1)s (a literal % doubled)."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", sql.replace("%", "%%"))


class Database:
    def __init__(self, dsn, size):
        self.dsn = dsn
        self.local = threading.local()
        self.types = {}
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute("SELECT oid::int4, typname FROM pg_type")
            self.types = dict(cur.fetchall())
        conn.close()
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="db",
                                           initializer=self.open)

    def connect(self):
        conn = psycopg2.connect(self.dsn or "")
        conn.autocommit = True
        return conn

    def open(self):
        """Runs in each worker thread as it starts: its own connection."""
        self.local.conn = self.connect()

    def run(self, q):
        """Runs in a worker thread: one query on that thread's connection."""
        conn = self.local.conn
        if conn.closed:
            conn = self.local.conn = self.connect()
        params = q.get("params") or ()
        sql = q["sql"]
        try:
            with conn.cursor() as cur:
                if params:
                    cur.execute(to_pyformat(sql), {f"p{i}": v for i, v in enumerate(params, 1)})
                else:
                    cur.execute(sql)
                desc = cur.description
                rows = cur.fetchall() if desc is not None else []
                status = cur.statusmessage or ""
                row_count = cur.rowcount
        except psycopg2.Error as e:
            if conn.closed:
                return {"error": {"code": "db_unavailable", "message": str(e).strip()}}
            message = e.diag.message_primary or str(e).strip()
            return {"error": {"code": e.pgcode or "db_error", "message": message}}
        except (KeyError, TypeError, ValueError, IndexError) as e:
            return {"error": {"code": "client_error", "message": str(e)}}
        parts = status.split()
        return {
            "command": parts[0] if parts else "",
            "row_count": row_count if row_count >= 0 else len(rows),
            "truncated": False,
            "columns": [{"name": d.name, "type": self.types.get(d.type_code, str(d.type_code)),
                         "type_oid": d.type_code} for d in (desc or ())],
            "rows": rows,
        }

    def batch(self, queries):
        futures = [self.executor.submit(self.run, q) for q in queries]
        return [f.result() for f in futures]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms wait between headers and body
    wbufsize = -1                   # buffer the reply; handle_one_request() flushes it
    server_version = "peer-threads"
    db = None  # set in main()

    def log_message(self, fmt, *args):  # no access log
        pass

    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, code, message):
        self.reply(status, dumps({"error": {"code": code, "message": message}}))

    def do_GET(self):
        if self.path in ("/readyz", "/healthz"):
            return self.reply(200, '{"status":"ready"}')
        return self.error(404, "not_found", "no such route")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self.error(413, "too_large", "the body is too large")
        raw = self.rfile.read(length)
        if self.path != "/v1/batch":
            return self.error(404, "not_found", "no such route")
        try:
            body = json.loads(raw)
        except ValueError as e:
            return self.error(400, "bad_request", f"invalid JSON: {e}")
        queries = body.get("queries") if isinstance(body, dict) else None
        if not isinstance(queries, list) or not queries:
            return self.error(400, "bad_request", "queries: must be a non-empty array")
        for i, q in enumerate(queries):
            if (not isinstance(q, dict) or not isinstance(q.get("sql"), str)
                    or not isinstance(q.get("params", []), list)):
                return self.error(400, "bad_request", f'queries[{i}]: want {{"sql": string, "params": array}}')
        self.reply(200, dumps({"results": self.db.batch(queries)}))


class Server(ThreadingHTTPServer):
    daemon_threads = True       # a client connection's thread does not hold up exit
    request_queue_size = 128    # listen backlog


def main():
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8083"))
    dsn = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("DATABASE_URL")
    size = int(sys.argv[3] if len(sys.argv) > 3 else os.environ.get("POOL_SIZE", "16"))
    host = os.environ.get("LISTEN_HOST", "127.0.0.1")
    Handler.db = Database(dsn, size)
    server = Server((host, port), Handler)
    print(f"threads peer: listening on {host}:{port}, pool of {size}", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()

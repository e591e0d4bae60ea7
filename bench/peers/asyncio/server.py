#!/usr/bin/env python3
"""A benchmark peer for fanout: what a Python asyncio team would write instead.

aiohttp + asyncpg (Debian python3-aiohttp, python3-asyncpg; uvloop when python3-uvloop is there).
A batch's queries run under asyncio.gather, each on a connection of its own from an asyncpg pool,
each in its own implicit transaction.

    python3 server.py [PORT [DSN [POOL_SIZE]]]
    env: PORT (8082), DATABASE_URL (a postgresql:// URI; PG* variables also work), POOL_SIZE (16),
         LISTEN_HOST (127.0.0.1)

POST /v1/batch takes fanout's request body and answers fanout's reply shape for the fields the
benchmark reads: results[].command, row_count, columns (name, type, type_oid), rows (arrays), and
{"error":{"code","message"}} per failed query. int8 and numeric come back as strings, as fanout
writes them (asyncpg's text codec: no int/Decimal round trip). GET /readyz answers 200.

Production settings, the way asyncpg is run when its speed matters:
- the pool opens all POOL_SIZE connections at start (min_size = max_size);
- each connection keeps its prepared statements (asyncpg's statement cache), so a query is one
  round trip; the column types and command tag are remembered per connection and SQL text from
  the statement's first run (see Connection);
- releasing a connection to the pool does not send asyncpg's reset query (`SELECT
  pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), a round trip per query that
  neither fanout nor the other peers make: the reset still rolls back an open transaction;
- no access log.
"""
import asyncio
import collections
import json
import os
import sys

import asyncpg
from aiohttp import web

try:
    import uvloop
except ImportError:  # the stock loop works too, only slower
    uvloop = None

STATEMENTS_PER_CONNECTION = 256
MAX_BODY = 1 << 20


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


class Connection(asyncpg.Connection):
    """A pool connection that also remembers, per SQL text, the command and the result's columns.

    asyncpg's own statement cache makes fetch() and execute() one round trip, but their results
    carry no column types and fetch() no command tag. So the first run of a SQL text on a
    connection prepares it (its description gives both), and later runs go through fetch() (a
    statement that returns rows) or execute() (one that returns none, for its tag)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.described = collections.OrderedDict()   # sql -> (command, columns)

    async def run(self, sql, params):
        """(command, row_count, columns, rows) of one statement."""
        known = self.described.get(sql)
        if known is None:
            stmt = await self.prepare(sql)
            rows = await stmt.fetch(*params)
            command, row_count = command_tag(stmt.get_statusmsg(), len(rows))
            columns = [column(a) for a in stmt.get_attributes()]
            self.described[sql] = (command, columns)
            if len(self.described) > STATEMENTS_PER_CONNECTION:
                self.described.popitem(last=False)
            return command, row_count, columns, rows
        self.described.move_to_end(sql)
        command, columns = known
        if columns:
            rows = await self.fetch(sql, *params)
            return command, len(rows), columns, rows
        command, row_count = command_tag(await self.execute(sql, *params), 0)
        return command, row_count, columns, []

    async def reset(self, *, timeout=None):
        # Only what a batch could leave behind: an open transaction.
        if self.is_in_transaction():
            await self.execute("ROLLBACK", timeout=timeout)


def command_tag(status, rows):
    """("INSERT", 1) from "INSERT 0 1"; the row count is rows when the tag has none."""
    parts = (status or "").split()
    command = parts[0] if parts else ""
    row_count = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else rows
    return command, row_count


async def init_connection(conn):
    as_text = dict(encoder=str, decoder=str, schema="pg_catalog", format="text")
    await conn.set_type_codec("int8", **as_text)
    await conn.set_type_codec("numeric", **as_text)
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads,
                                  schema="pg_catalog", format="text")


def column(attr):
    return {"name": attr.name, "type": attr.type.name, "type_oid": attr.type.oid}


async def run_query(pool, q):
    try:
        async with pool.acquire() as conn:
            command, row_count, columns, rows = await conn.run(q["sql"], q.get("params") or ())
    except asyncpg.PostgresError as e:
        return {"error": {"code": e.sqlstate or "db_error", "message": getattr(e, "message", None) or str(e)}}
    except (asyncpg.InterfaceError, OSError, TypeError, ValueError) as e:
        return {"error": {"code": "client_error", "message": str(e)}}
    return {
        "command": command,
        "row_count": row_count,
        "truncated": False,
        "columns": columns,
        "rows": [tuple(r) for r in rows],
    }


def request_error(status, code, message):
    return web.Response(status=status, body=dumps({"error": {"code": code, "message": message}}).encode(),
                        content_type="application/json")


async def batch(request):
    try:
        body = json.loads(await request.read())
    except ValueError as e:
        return request_error(400, "bad_request", f"invalid JSON: {e}")
    queries = body.get("queries") if isinstance(body, dict) else None
    if not isinstance(queries, list) or not queries:
        return request_error(400, "bad_request", "queries: must be a non-empty array")
    for i, q in enumerate(queries):
        if (not isinstance(q, dict) or not isinstance(q.get("sql"), str)
                or not isinstance(q.get("params", []), list)):
            return request_error(400, "bad_request", f'queries[{i}]: want {{"sql": string, "params": array}}')
    pool = request.app["pool"]
    results = await asyncio.gather(*(run_query(pool, q) for q in queries))
    return web.Response(body=dumps({"results": results}).encode(), content_type="application/json")


async def readyz(request):
    return web.Response(body=b'{"status":"ready"}', content_type="application/json")


def main():
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8082"))
    dsn = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("DATABASE_URL")
    size = int(sys.argv[3] if len(sys.argv) > 3 else os.environ.get("POOL_SIZE", "16"))
    host = os.environ.get("LISTEN_HOST", "127.0.0.1")

    async def make_app():
        pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size,
                                         connection_class=Connection, init=init_connection)
        app = web.Application(client_max_size=MAX_BODY)
        app["pool"] = pool
        app.router.add_post("/v1/batch", batch)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/healthz", readyz)

        async def close_pool(app):
            await app["pool"].close()
        app.on_cleanup.append(close_pool)
        print(f"asyncio peer: listening on {host}:{port}, pool of {size}, "
              f"loop {'uvloop' if uvloop else 'asyncio'}", file=sys.stderr)
        return app

    if uvloop is not None:
        uvloop.install()
    web.run_app(make_app(), host=host, port=port, access_log=None, print=None,
                handle_signals=True)


if __name__ == "__main__":
    main()

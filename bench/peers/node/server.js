'use strict';
// A benchmark peer for fanout: what a Node.js team would write instead.
// node:http + pg.Pool (npm `pg`, pure JavaScript driver); a batch's queries run under Promise.all,
// each on a connection of its own from the pool, each in its own implicit transaction.
//
//   node server.js [PORT [DSN [POOL_SIZE]]]
//   env: PORT (8081), DATABASE_URL (a postgresql:// URI; PG* variables also work), POOL_SIZE (16),
//        LISTEN_HOST (127.0.0.1)
//
// POST /v1/batch takes fanout's request body ({"queries":[{"sql":..,"params":[..]},..]}) and answers
// fanout's reply shape for the fields the benchmark reads: results[].command, row_count, columns
// (name, type, type_oid), rows (arrays), and {"error":{"code","message"}} per failed query.
// Values keep pg's defaults, which match fanout's: int2/int4/float as numbers, int8 and numeric as
// strings, text as strings. GET /readyz answers 200 once the pool has connected.
const http = require('node:http');
const { Pool } = require('pg');

const port = Number(process.argv[2] || process.env.PORT || 8081);
const dsn = process.argv[3] || process.env.DATABASE_URL || undefined;
const poolSize = Number(process.argv[4] || process.env.POOL_SIZE || 16);
const host = process.env.LISTEN_HOST || '127.0.0.1';
const maxBody = 1 << 20;

if (!Number.isInteger(port) || port < 0 || port > 65535 || !Number.isInteger(poolSize) || poolSize < 1) {
  console.error('usage: node server.js [PORT [DSN [POOL_SIZE]]]');
  process.exit(2);
}

const pool = new Pool({ connectionString: dsn, max: poolSize });
pool.on('error', (err) => console.error('pool: idle client error:', err.message));

// Type names for the reply's columns, read once from pg_type.
const typeNames = new Map();
let ready = false;

function sendJson(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

function requestError(res, status, code, message) {
  sendJson(res, status, { error: { code, message } });
}

function runQuery(q) {
  return pool.query({ text: q.sql, values: q.params, rowMode: 'array' }).then(
    (r) => ({
      command: r.command,
      row_count: r.rowCount === null ? r.rows.length : r.rowCount,
      truncated: false,
      columns: r.fields.map((f) => ({
        name: f.name,
        type: typeNames.get(f.dataTypeID) || String(f.dataTypeID),
        type_oid: f.dataTypeID,
      })),
      rows: r.rows,
    }),
    (err) => ({ error: { code: err.code || 'db_error', message: err.message } }),
  );
}

async function batch(req, res, raw) {
  let body;
  try {
    body = JSON.parse(raw);
  } catch (e) {
    return requestError(res, 400, 'bad_request', 'invalid JSON: ' + e.message);
  }
  const queries = body && body.queries;
  if (!Array.isArray(queries) || queries.length === 0) {
    return requestError(res, 400, 'bad_request', 'queries: must be a non-empty array');
  }
  for (let i = 0; i < queries.length; i++) {
    const q = queries[i];
    if (!q || typeof q.sql !== 'string' || (q.params !== undefined && !Array.isArray(q.params))) {
      return requestError(res, 400, 'bad_request', `queries[${i}]: want {"sql": string, "params": array}`);
    }
  }
  const results = await Promise.all(queries.map(runQuery));
  sendJson(res, 200, { results });
}

const server = http.createServer({ noDelay: true, keepAlive: true }, (req, res) => {
  const path = req.url.split('?', 1)[0];
  if (path === '/readyz' || path === '/healthz') {
    if (req.method !== 'GET' && req.method !== 'HEAD') return requestError(res, 405, 'method_not_allowed', 'method not allowed on this path');
    return ready || path === '/healthz'
      ? sendJson(res, 200, { status: 'ready' })
      : sendJson(res, 503, { status: 'unavailable' });
  }
  if (path !== '/v1/batch') return requestError(res, 404, 'not_found', 'no such route');
  if (req.method !== 'POST') return requestError(res, 405, 'method_not_allowed', 'method not allowed on this path');
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > maxBody) {
      requestError(res, 413, 'too_large', 'the body is too large');
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on('end', () => {
    if (size > maxBody) return;
    batch(req, res, chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)).catch((err) => {
      if (!res.headersSent) requestError(res, 500, 'internal_error', err.message);
    });
  });
});

async function main() {
  const r = await pool.query('SELECT oid::int4 AS oid, typname FROM pg_type');
  for (const row of r.rows) typeNames.set(row.oid, row.typname);
  ready = true;
  server.listen(port, host, () => {
    const a = server.address();
    console.error(`node peer: listening on ${a.address}:${a.port}, pool of ${poolSize}`);
  });
}

function shutdown() {
  server.close();
  pool.end().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

main().catch((err) => {
  console.error('node peer: start-up failed:', err.message);
  process.exit(1);
});

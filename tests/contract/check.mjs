#!/usr/bin/env node
// Contract check: real fanout replies against docs/openapi.yaml.
//
//   node tests/contract/check.mjs BASE_URL SPEC [--unavailable URL] [--busy URL]
//        [--max-body-bytes N] [--max-queries N] [--max-params N] [--probe-discrepancies]
//
// BASE_URL is a fanout serving with a working database (e.g. http://127.0.0.1:8080). The script
// sends a fixed set of requests (good batches with every kind of value, failing queries, both modes,
// commit errors, row formats, max_rows, every 4xx fanout sends, the probes, /metrics) and checks each
// reply's status, headers, content type and body against the spec's response for that route and
// status, with ajv (JSON Schema 2020-12, $refs resolved against the spec's components). It creates
// tables with unique names for its own use and drops them at the end (the database is a throwaway).
//
// Optional servers widen the check to the 503 replies:
//   --unavailable URL  a fanout with no reachable database and --max-clients 1 (/readyz 503, batch
//                      503 db_unavailable; and 503 overloaded on a connection over max_clients)
//   --busy URL         a fanout started with --workers 1 --queue-size 2 --max-queries 2 (503 overloaded)
// The limits given must be the BASE_URL server's settings (defaults: fanout's defaults).
// --probe-discrepancies also sends requests whose replies are known to contradict docs/API.md.
//
// Fails (exit 1) on any mismatch, on any spec operation that no request exercised, and on any
// documented response that no request exercised (except those that cannot be provoked from
// outside, e.g. 500 out of memory). Exit 2: bad usage or unreadable spec.
import fs from 'node:fs';
import net from 'node:net';
import { createRequire } from 'node:module';
import { isDeepStrictEqual } from 'node:util';

const require = createRequire(new URL('../tools/package.json', import.meta.url));
const Ajv2020 = require('ajv/dist/2020.js').default;
const addFormats = require('ajv-formats').default;
const YAML = require('yaml');

// ---------------------------------------------------------------------------------------------
// arguments

function usage(msg) {
    if (msg) console.error(`check.mjs: ${msg}`);
    console.error('usage: node tests/contract/check.mjs BASE_URL SPEC [--unavailable URL] [--busy URL] ' +
        '[--max-body-bytes N] [--max-queries N] [--max-params N] [--probe-discrepancies]');
    process.exit(2);
}

const opts = { maxBodyBytes: 1048576, maxQueries: 1000, maxParams: 1000, probe: false };
const positional = [];
for (let i = 2; i < process.argv.length; i++) {
    const a = process.argv[i];
    const value = () => (++i < process.argv.length ? process.argv[i] : usage(`${a} needs a value`));
    const count = () => {
        const v = value();
        if (!/^[0-9]+$/.test(v)) usage(`${a}: not a number: ${v}`);
        return Number(v);
    };
    if (a === '--unavailable') opts.unavailable = value();
    else if (a === '--busy') opts.busy = value();
    else if (a === '--max-body-bytes') opts.maxBodyBytes = count();
    else if (a === '--max-queries') opts.maxQueries = count();
    else if (a === '--max-params') opts.maxParams = count();
    else if (a === '--probe-discrepancies') opts.probe = true;
    else if (a.startsWith('--')) usage(`unknown option ${a}`);
    else positional.push(a);
}
if (positional.length !== 2) usage();
const [baseUrl, specPath] = positional;

function parseBase(url) {
    const u = new URL(url);
    if (u.protocol !== 'http:') usage(`not an http URL: ${url}`);
    return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 80), url };
}
const servers = { main: parseBase(baseUrl) };
if (opts.unavailable) servers.unavailable = parseBase(opts.unavailable);
if (opts.busy) servers.busy = parseBase(opts.busy);

// ---------------------------------------------------------------------------------------------
// the spec and its schemas

let spec;
try {
    spec = YAML.parse(fs.readFileSync(specPath, 'utf8'));
} catch (e) {
    console.error(`check.mjs: cannot read ${specPath}: ${e.message}`);
    process.exit(2);
}
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const DEFS_ID = 'urn:fanout:openapi:schemas';

// Resolve an OpenAPI $ref (responses, headers) within the document.
function deref(node) {
    const seen = new Set();
    while (node && typeof node === 'object' && typeof node.$ref === 'string') {
        if (seen.has(node.$ref) || !node.$ref.startsWith('#/')) throw new Error(`cannot resolve ${node.$ref}`);
        seen.add(node.$ref);
        let target = spec;
        for (const part of node.$ref.slice(2).split('/'))
            target = target?.[part.replace(/~1/g, '/').replace(/~0/g, '~')];
        if (target === undefined) throw new Error(`dangling $ref ${node.$ref}`);
        node = target;
    }
    return node;
}

// Schemas point at '#/components/schemas/X'; ajv sees them as one schema document with $defs.
function rewriteRefs(node, prefix) {
    if (Array.isArray(node)) return node.map((n) => rewriteRefs(n, prefix));
    if (!node || typeof node !== 'object') return node;
    const out = {};
    for (const [k, v] of Object.entries(node)) {
        if (k === '$ref' && typeof v === 'string') {
            const m = /^#\/components\/schemas\/(.+)$/.exec(v);
            if (!m) throw new Error(`unsupported schema $ref ${v}`);
            out.$ref = `${prefix}#/$defs/${m[1]}`;
        } else {
            out[k] = rewriteRefs(v, prefix);
        }
    }
    return out;
}

const ajv = new Ajv2020({ strict: true, allErrors: true, allowUnionTypes: true });
addFormats(ajv);
ajv.addVocabulary(['example', 'discriminator', 'xml', 'externalDocs']); // OpenAPI's schema keywords
ajv.addSchema({ $id: DEFS_ID, $defs: rewriteRefs(spec.components?.schemas ?? {}, '') });
const compiled = new Map();
function validator(schema) {
    if (!compiled.has(schema)) compiled.set(schema, ajv.compile(rewriteRefs(schema, DEFS_ID)));
    return compiled.get(schema);
}

// ---------------------------------------------------------------------------------------------
// HTTP over a plain socket: full control of methods, headers and bytes, and no body on HEAD.

function parseReply(buf, method) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) throw new Error(`no complete reply head in ${buf.length} bytes: ${JSON.stringify(buf.toString('latin1').slice(0, 200))}`);
    const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!m) throw new Error(`bad status line ${JSON.stringify(lines[0])}`);
    const headers = {};
    for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        const name = line.slice(0, i).trim().toLowerCase();
        const v = line.slice(i + 1).trim();
        headers[name] = name in headers ? `${headers[name]}, ${v}` : v;
    }
    let body = buf.subarray(end + 4);
    if (method !== 'HEAD' && /chunked/i.test(headers['transfer-encoding'] ?? '')) {
        const parts = [];
        let rest = body;
        for (;;) {
            const nl = rest.indexOf('\r\n');
            const size = parseInt(rest.subarray(0, nl).toString('latin1'), 16);
            if (nl < 0 || Number.isNaN(size)) throw new Error('bad chunked body');
            if (size === 0) break;
            parts.push(rest.subarray(nl + 2, nl + 2 + size));
            rest = rest.subarray(nl + 2 + size + 2);
        }
        body = Buffer.concat(parts);
    } else if (method !== 'HEAD' && headers['content-length'] !== undefined) {
        body = body.subarray(0, Number(headers['content-length']));
    }
    return { status: Number(m[1]), headers, body };
}

function httpRequest(server, method, path, headers, body) {
    return new Promise((resolve, reject) => {
        const sock = net.connect({ host: server.host, port: server.port });
        const chunks = [];
        let done = false;
        const finish = (err) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            sock.destroy();
            const buf = Buffer.concat(chunks);
            // A server that refuses a body may close (even reset) before reading all of it: a
            // complete reply already received still counts.
            try {
                resolve(parseReply(buf, method));
            } catch (e) {
                reject(err ?? e);
            }
        };
        const timer = setTimeout(() => finish(new Error('no reply within 120 s')), 120000);
        sock.on('data', (d) => chunks.push(d));
        sock.on('end', () => finish());
        sock.on('close', () => finish());
        sock.on('error', (e) => finish(e));
        let head = `${method} ${path} HTTP/1.1\r\nHost: ${server.host}:${server.port}\r\nConnection: close\r\n`;
        for (const [k, v] of Object.entries(headers ?? {})) head += `${k}: ${v}\r\n`;
        if (body !== undefined) head += `Content-Length: ${body.length}\r\n`;
        head = Buffer.from(`${head}\r\n`, 'latin1');
        // With "Expect: 100-continue" (as curl sends for large bodies) the body goes only after an
        // interim 100 reply; a server that refuses the body answers at once and never reads it.
        if (!/^expect$/im.test(Object.keys(headers ?? {}).join('\n')) || body === undefined) {
            sock.write(body === undefined ? head : Buffer.concat([head, body]));
            return;
        }
        sock.write(head);
        sock.on('data', function interim() {
            const buf = Buffer.concat(chunks);
            const end = buf.indexOf('\r\n\r\n');
            if (end < 0) return;
            sock.off('data', interim);
            if (/^HTTP\/1\.[01] 100/.test(buf.toString('latin1', 0, 12))) {
                chunks.length = 0;
                if (buf.length > end + 4) chunks.push(buf.subarray(end + 4));
                sock.write(body);
            }
        });
    });
}

// ---------------------------------------------------------------------------------------------
// matching one reply against the spec

const problems = [];
const exercised = new Set(); // "path method" of spec operations a request exercised
const answered = new Set(); // "path method status" of documented responses seen
const unreachable = new Map(); // "path method status" -> why no request can provoke it

function operationsOf(path) {
    const item = spec.paths?.[path];
    return item ? METHODS.filter((m) => item[m]).map((m) => [m, item[m]]) : [];
}

// Which documented response a reply must match. The request's own operation when the spec has
// it; for a method the path does not take, the path's 405 (every operation of a path lists it);
// for a path that is not in the spec, components.responses.NotFound.
function locate(path, method, status) {
    const m = method.toLowerCase();
    const ops = operationsOf(path);
    if (ops.length === 0) {
        if (status !== 404) return { error: `status ${status} for a path that is not in the spec (want 404)` };
        return { response: deref(spec.components?.responses?.NotFound), where: 'components.responses.NotFound' };
    }
    const own = ops.find(([om]) => om === m);
    const candidates = own ? [own] : ops;
    for (const [om, op] of candidates) {
        const r = op.responses?.[String(status)] ?? op.responses?.default;
        if (r) return { response: deref(r), where: `${om.toUpperCase()} ${path} ${status}`, op: own ? `${path} ${m}` : null, opMethod: om };
    }
    return { error: `status ${status} is not documented for ${own ? m.toUpperCase() : 'any method of'} ${path}` };
}

function parseMediaType(text) {
    const [essence, ...params] = String(text).split(';');
    const map = {};
    for (const p of params) {
        const i = p.indexOf('=');
        if (i > 0) map[p.slice(0, i).trim().toLowerCase()] = p.slice(i + 1).trim().replace(/^"|"$/g, '');
    }
    return { essence: essence.trim().toLowerCase(), params: map };
}

// The spec's media type key that the reply's Content-Type satisfies: same type/subtype, and every
// parameter the key names present with the same value (extra parameters such as charset are fine).
function matchMediaType(keys, actual) {
    const a = parseMediaType(actual);
    return keys.find((k) => {
        const s = parseMediaType(k);
        return s.essence === a.essence &&
            Object.entries(s.params).every(([n, v]) => a.params[n]?.toLowerCase() === v.toLowerCase());
    });
}

function formatErrors(errors) {
    return (errors ?? []).map((e) => `    ${e.instancePath || '(root)'} ${e.message}` +
        (e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : '')).join('\n');
}

function checkReply(c, reply) {
    const errs = [];
    const method = c.method.toUpperCase();
    if (reply.status !== c.status) errs.push(`status ${reply.status}, the case wants ${c.status}`);
    const loc = locate(c.path.split('?')[0], method, reply.status);
    if (loc.error) return { errs: [...errs, loc.error] };
    const { response } = loc;
    if (loc.op) exercised.add(loc.op);
    const seenKey = loc.op ? `${loc.op} ${reply.status}` : null;
    if (seenKey) answered.add(seenKey);
    else if (reply.status === 405) for (const [m] of operationsOf(c.path)) answered.add(`${c.path} ${m} 405`);

    for (const [name, h0] of Object.entries(response.headers ?? {})) {
        const h = deref(h0);
        const v = reply.headers[name.toLowerCase()];
        if (v === undefined) {
            if (h.required) errs.push(`header ${name} missing`);
            continue;
        }
        const schema = h.schema ?? {};
        const value = schema.type === 'integer' && /^-?[0-9]+$/.test(v) ? Number(v) : v;
        const validate = validator(schema);
        if (!validate(value)) errs.push(`header ${name}: ${JSON.stringify(v)}\n${formatErrors(validate.errors)}`);
    }

    const ct = reply.headers['content-type'];
    if (method === 'HEAD') {
        if (reply.body.length) errs.push(`HEAD reply has a body of ${reply.body.length} bytes`);
        // The content type is the one the GET reply would have.
        let keys = Object.keys(response.content ?? {});
        if (!keys.length) {
            const get = spec.paths?.[c.path]?.get?.responses?.[String(reply.status)];
            keys = Object.keys(get ? deref(get).content ?? {} : {});
        }
        if (keys.length && !(ct && matchMediaType(keys, ct)))
            errs.push(`Content-Type ${JSON.stringify(ct)} is none of ${JSON.stringify(keys)}`);
        return { errs, where: loc.where };
    }
    const keys = Object.keys(response.content ?? {});
    if (!keys.length) {
        if (reply.body.length) errs.push(`a body (${reply.body.length} bytes) where the spec documents none`);
        return { errs, where: loc.where };
    }
    const key = ct ? matchMediaType(keys, ct) : undefined;
    if (!key) {
        errs.push(`Content-Type ${JSON.stringify(ct)} is none of ${JSON.stringify(keys)}`);
        return { errs, where: loc.where };
    }
    const schema = response.content[key].schema;
    let doc = reply.body.toString('utf8');
    if (parseMediaType(key).essence === 'application/json') {
        try {
            doc = JSON.parse(doc);
        } catch (e) {
            errs.push(`body is not JSON (${e.message})`);
            return { errs, where: loc.where };
        }
    }
    if (schema) {
        const validate = validator(schema);
        if (!validate(doc)) errs.push(`body does not match the schema:\n${formatErrors(validate.errors)}`);
    }
    reply.json = typeof doc === 'object' ? doc : undefined;
    return { errs, where: loc.where };
}

// ---------------------------------------------------------------------------------------------
// what a 200 batch reply must say about its own request, beyond its schema (docs/API.md)

function batchInvariants(req, reply) {
    const errs = [];
    const results = reply.results ?? [];
    if (results.length !== req.queries.length)
        errs.push(`${results.length} results for ${req.queries.length} queries`);
    results.forEach((r, i) => {
        const q = req.queries[i] ?? {};
        if (q.id !== undefined ? r.id !== q.id : 'id' in r)
            errs.push(`results[${i}].id is ${JSON.stringify(r.id)}, the query's id is ${JSON.stringify(q.id)}`);
        if (!Array.isArray(r.rows)) return;
        if (r.row_count !== r.rows.length) errs.push(`results[${i}]: row_count ${r.row_count} but ${r.rows.length} rows`);
        const names = new Set((r.columns ?? []).map((col) => col.name));
        r.rows.forEach((row, j) => {
            if (req.row_format === 'object') {
                if (Array.isArray(row) || typeof row !== 'object') errs.push(`results[${i}].rows[${j}] is not an object`);
                else for (const k of Object.keys(row)) if (!names.has(k)) errs.push(`results[${i}].rows[${j}] has key ${k}, not a column`);
            } else if (!Array.isArray(row) || row.length !== r.columns.length) {
                errs.push(`results[${i}].rows[${j}] is not an array of ${r.columns.length} values`);
            }
        });
        if (req.max_rows !== undefined && r.rows.length > req.max_rows)
            errs.push(`results[${i}]: ${r.rows.length} rows beyond max_rows ${req.max_rows}`);
        if (!r.truncated && req.max_rows !== undefined && r.rows.length === req.max_rows + 1)
            errs.push(`results[${i}]: not truncated`);
    });
    const transaction = req.mode === 'transaction';
    if (transaction !== ('committed' in reply))
        errs.push(transaction ? 'transaction mode: no "committed"' : 'parallel mode: a "committed" field');
    return errs;
}

// ---------------------------------------------------------------------------------------------
// the requests

const tag = `contract_${process.pid}_${Date.now().toString(36)}`;
const T = { items: `${tag}_items`, deferred: `${tag}_deferred`, audit: `${tag}_audit` };
const JSON_CT = { 'Content-Type': 'application/json' };

function batchCase(name, req, extra = {}) {
    return { name, method: 'POST', path: '/v1/batch', headers: JSON_CT, body: JSON.stringify(req), req, status: 200, ...extra };
}
function badCase(name, body, requestValid, extra = {}) {
    return { name, method: 'POST', path: '/v1/batch', headers: JSON_CT, body, status: 400, requestValid, ...extra };
}
const at = (r, i) => r.results?.[i] ?? {};
const expectCode = (i, code) => (r) => (at(r, i).error?.code === code ? [] : [`results[${i}]: want error ${code}, got ${JSON.stringify(at(r, i))}`]);
const all = (...fns) => (r) => fns.flatMap((f) => f(r));
const want = (cond, msg) => (cond ? [] : [msg]);

const VALUES_SQL = `SELECT 1::int2 AS int2, 2::int4 AS int4, 3::int8 AS int8, 26::oid AS oid,
  1.5::float4 AS float4, 0.1::float8 AS float8, 'NaN'::float8 AS nan, '-Infinity'::float8 AS neg_inf,
  12.30::numeric AS numeric, 'NaN'::numeric AS numeric_nan, true AS t, false AS f,
  '{"b": [1, 2], "s": "x"}'::jsonb AS jsonb_obj, '[1, "two", null, {"k": false}]'::json AS json_arr,
  '"str"'::json AS json_str, '42.5'::jsonb AS jsonb_num, 'null'::jsonb AS jsonb_null, 'true'::json AS json_bool,
  NULL::text AS null_text, NULL::jsonb AS null_jsonb, '\\xdeadbeef'::bytea AS bytea, ARRAY[1, 2] AS int_array,
  ARRAY['a', NULL, 'c"d'] AS text_array, date '2026-01-02' AS date, timestamp '2026-01-02 03:04:05.678' AS ts,
  timestamptz '2026-01-02 03:04:05+00' AS tstz, interval '1 day 02:00:00' AS ivl,
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS uuid, 'héllo ✓ "q" \\ ' AS text_utf8, ''::text AS empty_text,
  point(1, 2) AS point, '10.0.0.0/8'::cidr AS cidr`;
const VALUE_KINDS = { // column -> JSON kind it must arrive as
    int2: 'number', int4: 'number', int8: 'string', oid: 'number', float4: 'number', float8: 'number',
    nan: 'string', neg_inf: 'string', numeric: 'string', numeric_nan: 'string', t: 'boolean', f: 'boolean',
    jsonb_obj: 'object', json_arr: 'array', json_str: 'string', jsonb_num: 'number', jsonb_null: 'null',
    json_bool: 'boolean', null_text: 'null', null_jsonb: 'null', bytea: 'string', int_array: 'string',
    text_array: 'string', date: 'string', ts: 'string', tstz: 'string', ivl: 'string', uuid: 'string',
    text_utf8: 'string', empty_text: 'string', point: 'string', cidr: 'string',
};
const kindOf = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);
function valueKinds(r) {
    const res = at(r, 0);
    const names = (res.columns ?? []).map((c) => c.name);
    const row = res.rows?.[0];
    const errs = [];
    for (const [col, kind] of Object.entries(VALUE_KINDS)) {
        const v = Array.isArray(row) ? row[names.indexOf(col)] : row?.[col];
        if (kindOf(v) !== kind) errs.push(`value ${col}: want a JSON ${kind}, got ${JSON.stringify(v)}`);
    }
    if (Array.isArray(row) && !isDeepStrictEqual(row[names.indexOf('json_arr')], [1, 'two', null, { k: false }]))
        errs.push(`json_arr arrived as ${JSON.stringify(row[names.indexOf('json_arr')])}`);
    return errs;
}

function mainCases() {
    const cases = [];
    // -- set-up: the tables this run uses
    cases.push(batchCase('create tables', {
        mode: 'transaction',
        queries: [
            { id: 'items', sql: `CREATE TABLE ${T.items} (id bigint PRIMARY KEY, note text, doc jsonb, amount numeric(12,2), at timestamptz, blob bytea, tags text[])` },
            { id: 'deferred', sql: `CREATE TABLE ${T.deferred} (k int UNIQUE DEFERRABLE INITIALLY DEFERRED)` },
            { id: 'audit', sql: `CREATE TABLE ${T.audit} (item bigint REFERENCES ${T.items} (id))` },
        ],
    }, { check: (r) => want(r.committed === true, 'tables not committed') }));

    // -- good batches
    cases.push(batchCase('every value type, array rows', { queries: [{ id: 'values', sql: VALUES_SQL }] }, { check: valueKinds }));
    cases.push(batchCase('every value type, object rows, int8_as_number', {
        row_format: 'object', int8_as_number: true, queries: [{ sql: VALUES_SQL }],
    }, { check: (r) => [...want(at(r, 0).rows?.[0]?.int8 === 3, `int8_as_number: int8 arrived as ${JSON.stringify(at(r, 0).rows?.[0]?.int8)}`)] }));
    cases.push(batchCase('parameters of every JSON type, mixed commands', {
        queries: [
            { id: 'ins', sql: `INSERT INTO ${T.items} (id, note, doc, amount, at, blob, tags) VALUES ($1, $2, $3, $4, $5, $6, $7), ($8, NULL, NULL, NULL, NULL, NULL, NULL)`,
              params: [1, "it's; DROP TABLE x; --", { sku: 'sku-7', qty: 2, price: 0.1, nested: [true, null] }, '19.90', '2026-01-02T03:04:05Z', '\\x00ff', '{a,"b c"}', 2] },
            { id: 'params', sql: 'SELECT $1::int AS i, $2::float8 AS f, $3::numeric AS exact, $4::text AS s, $5::bool AS b, $6::jsonb AS j, $7::text IS NULL AS was_null, $8::jsonb AS arr, $9::bigint AS big',
              params: [7, 0.1, '12345678901234567890.123456789', 'plain', true, { k: 'v' }, null, [1, 'a', null], -9007199254740991] },
            { sql: 'SELECT 1 AS n WHERE false' },
            { id: 'values', sql: 'VALUES (1, $1), (2, $2)', params: ['a', null] },
            { id: 'show', sql: 'SHOW TimeZone' },
            { id: 'do', sql: 'DO $$ BEGIN PERFORM 1; END $$' },
            { id: 'dup_names', sql: 'SELECT 1 AS x, 2 AS x' },
            { id: '', sql: 'SELECT $1::text AS empty_id', params: [''] },
        ],
    }, { check: (r) => [...want(at(r, 0).command === 'INSERT' && at(r, 0).row_count === 2 && !('rows' in at(r, 0)), `INSERT: ${JSON.stringify(at(r, 0))}`),
                         ...want(at(r, 2).rows?.length === 0 && at(r, 2).truncated === false, `empty row set: ${JSON.stringify(at(r, 2))}`)] }));
    cases.push(batchCase('RETURNING, UPDATE, DELETE', {
        isolation: 'serializable', // accepted and ignored in parallel mode
        queries: [
            { id: 'ret', sql: `INSERT INTO ${T.items} (id, note, doc) VALUES (3, 'three', '[1,2]') RETURNING id, note, doc, amount` },
            { id: 'upd', sql: `UPDATE ${T.items} SET note = $1 WHERE id = $2`, params: ['two', 2] },
            { id: 'del', sql: `DELETE FROM ${T.items} WHERE id = $1`, params: [-1] },
            { id: 'begin', sql: 'BEGIN' },
        ],
    }, { check: (r) => want(Array.isArray(at(r, 0).rows) && at(r, 1).row_count === 1 && at(r, 2).row_count === 0, `counts: ${JSON.stringify(r.results)}`) }));
    cases.push(batchCase('row_format object, empty result', { row_format: 'object', queries: [{ sql: `SELECT * FROM ${T.items} WHERE id < 0` }] }));
    cases.push(batchCase('max_rows truncation', {
        max_rows: 3,
        queries: [
            { id: 'cut', sql: 'SELECT g, g::text AS t FROM generate_series(1, 10) g' },
            { id: 'fits', sql: 'SELECT g FROM generate_series(1, 3) g' },
        ],
    }, { check: (r) => want(at(r, 0).truncated === true && at(r, 0).rows?.length === 3 && at(r, 1).truncated === false, `truncation: ${JSON.stringify(r.results)}`) }));
    cases.push(batchCase('max_rows above the setting is lowered', { max_rows: 2 ** 40, row_format: 'object', queries: [{ sql: 'SELECT 1 AS one' }] }));
    cases.push(batchCase('charset parameter in the Content-Type', { queries: [{ sql: 'SELECT 1 AS one' }] },
        { headers: { 'Content-Type': 'Application/JSON; charset=utf-8' } }));
    cases.push(batchCase('the client X-Request-Id is echoed', { queries: [{ sql: 'SELECT 1 AS one' }] }, {
        headers: { ...JSON_CT, 'X-Request-Id': 'contract-check-42' },
        checkReply: (reply) => want(reply.headers['x-request-id'] === 'contract-check-42', `X-Request-Id ${reply.headers['x-request-id']}`),
    }));

    // -- failing queries, parallel mode
    cases.push(batchCase('SQL errors and fanout errors in one batch', {
        queries: [
            { id: 'typo', sql: `SELECT nte FROM ${T.items}` },
            { id: 'dup', sql: `INSERT INTO ${T.items} (id, note) VALUES ($1, $2)`, params: [1, 'again'] },
            { id: 'fk', sql: `INSERT INTO ${T.audit} VALUES ($1)`, params: [999] },
            { id: 'two', sql: 'SELECT 1; SELECT 2' },
            { id: 'div', sql: 'SELECT 1 / 0 AS boom' },
            { id: 'ok', sql: 'SELECT 2 AS fine' },
            { id: 'empty', sql: '' },
            { id: 'blank', sql: '  \n\t' },
            { id: 'comment', sql: '-- nothing' },
            { id: 'copy_out', sql: 'COPY (SELECT 1) TO STDOUT' },
            { id: 'copy_in', sql: `COPY ${T.audit} FROM STDIN` },
            { sql: 'SELECT no_such_function()' },
            { id: 'raise', sql: "DO $$ BEGIN RAISE EXCEPTION 'custom' USING DETAIL = 'the detail', HINT = 'the hint'; END $$" },
        ],
    }, { check: all(expectCode(0, '42703'), expectCode(1, '23505'), expectCode(2, '23503'), expectCode(3, '42601'), expectCode(4, '22012'),
        (r) => want(at(r, 5).command === 'SELECT', 'the good query was affected'),
        expectCode(6, 'empty_query'), expectCode(7, 'empty_query'), expectCode(8, 'empty_query'),
        expectCode(9, 'unsupported'), expectCode(10, 'unsupported'), expectCode(11, '42883'), expectCode(12, 'P0001'),
        (r) => want(at(r, 12).error?.detail === 'the detail' && at(r, 12).error?.hint === 'the hint', `detail and hint: ${JSON.stringify(at(r, 12))}`),
        (r) => want(typeof at(r, 0).error?.position === 'number' && at(r, 1).error?.constraint && at(r, 1).error?.detail, `error fields: ${JSON.stringify(r.results?.slice(0, 2))}`)) }));
    cases.push(batchCase('read_only refuses writes', {
        read_only: true,
        queries: [
            { id: 'write', sql: `UPDATE ${T.items} SET note = 'x' WHERE id = 1` },
            { id: 'read', sql: `SELECT count(*) AS n FROM ${T.items}` },
        ],
    }, { check: all(expectCode(0, '25006'), (r) => want(at(r, 1).command === 'SELECT', 'read failed')) }));

    // -- transaction mode
    cases.push(batchCase('transaction commits', {
        mode: 'transaction', isolation: 'repeatable_read',
        queries: [
            { id: 'ins', sql: `INSERT INTO ${T.items} (id, note) VALUES ($1, $2)`, params: [10, 'ten'] },
            { id: 'read', sql: `SELECT note FROM ${T.items} WHERE id = $1`, params: [10] },
        ],
    }, { check: (r) => want(r.committed === true && !('commit_error' in r), `committed: ${r.committed}`) }));
    cases.push(batchCase('transaction read_only serializable', {
        mode: 'transaction', isolation: 'serializable', read_only: true, row_format: 'object',
        queries: [{ sql: 'SELECT current_setting($1) AS isolation, current_setting($2) AS read_only', params: ['transaction_isolation', 'transaction_read_only'] }],
    }, { check: (r) => want(at(r, 0).rows?.[0]?.isolation === 'serializable' && at(r, 0).rows?.[0]?.read_only === 'on', `settings: ${JSON.stringify(at(r, 0).rows)}`) }));
    cases.push(batchCase('transaction rolls back at the first failure, later queries not_run', {
        mode: 'transaction',
        queries: [
            { id: 'ins', sql: `INSERT INTO ${T.items} (id, note) VALUES ($1, $2) RETURNING id`, params: [20, 'twenty'] },
            { id: 'bad', sql: `INSERT INTO ${T.audit} VALUES ($1)`, params: [424242] },
            { id: 'never', sql: 'SELECT 1' },
            { sql: 'SELECT 2' },
        ],
    }, { check: all(expectCode(1, '23503'), expectCode(2, 'not_run'), expectCode(3, 'not_run'), (r) => want(r.committed === false && !('commit_error' in r), `committed: ${r.committed}`)) }));
    cases.push(batchCase('the rolled-back insert is gone', { queries: [{ sql: `SELECT count(*) AS n FROM ${T.items} WHERE id = 20` }] },
        { check: (r) => want(at(r, 0).rows?.[0]?.[0] === '0', `rows: ${JSON.stringify(at(r, 0).rows)}`) }));
    cases.push(batchCase('a deferred constraint fails at COMMIT: commit_error', {
        mode: 'transaction',
        queries: [
            { id: 'dups', sql: `INSERT INTO ${T.deferred} VALUES (1), (1)` },
            { id: 'seen', sql: `SELECT count(*) AS n FROM ${T.deferred}` },
        ],
    }, { check: (r) => want(r.committed === false && r.commit_error?.code === '23505' && at(r, 0).row_count === 2, `commit: ${JSON.stringify({ committed: r.committed, commit_error: r.commit_error })}`) }));
    cases.push(batchCase('COMMIT as a query ends the transaction', {
        mode: 'transaction',
        queries: [{ sql: 'SELECT 1 AS one' }, { id: 'commit', sql: 'COMMIT' }, { id: 'after', sql: 'SELECT 2' }],
    }, { check: all(expectCode(1, 'transaction_ended'), expectCode(2, 'not_run'), (r) => want(r.committed === false, 'committed')) }));
    cases.push(batchCase('a failing first query in a transaction', { mode: 'transaction', queries: [{ sql: 'SELECT nope' }] },
        { check: all(expectCode(0, '42703'), (r) => want(r.committed === false, 'committed')) }));

    // -- 400
    const one = '{"queries":[{"sql":"SELECT 1"}]';
    cases.push(badCase('invalid JSON', '{"queries": [{"sql": "SELECT 1",}]}', undefined));
    cases.push(badCase('empty body', '', undefined));
    cases.push(badCase('trailing garbage', `${one}} x`, undefined));
    cases.push(badCase('body not an object', '[]', false));
    cases.push(badCase('queries missing', '{}', false));
    cases.push(badCase('queries empty', '{"queries":[]}', false));
    cases.push(badCase('queries not an array', '{"queries":{}}', false));
    cases.push(badCase('duplicate key', `${one},"queries":[]}`, undefined));
    cases.push(badCase('unknown field', `${one},"extra":1}`, false));
    cases.push(badCase('unknown query field', '{"queries":[{"sql":"SELECT $1","param":[1]}]}', false));
    cases.push(badCase('sql missing', '{"queries":[{"id":"x"}]}', false));
    cases.push(badCase('sql not a string', '{"queries":[{"sql":1}]}', false));
    cases.push(badCase('id not a string', '{"queries":[{"sql":"SELECT 1","id":5}]}', false));
    cases.push(badCase('params not an array', '{"queries":[{"sql":"SELECT 1","params":{}}]}', false));
    cases.push(badCase('null field', `${one},"mode":null}`, false));
    cases.push(badCase('unknown mode', `${one},"mode":"fast"}`, false));
    cases.push(badCase('unknown isolation', `${one},"isolation":"snapshot"}`, false));
    cases.push(badCase('unknown row_format', `${one},"row_format":"table"}`, false));
    cases.push(badCase('max_rows 0', `${one},"max_rows":0}`, false));
    cases.push(badCase('max_rows fractional', `${one},"max_rows":1.5}`, false));
    cases.push(badCase('max_rows a string', `${one},"max_rows":"2"}`, false));
    cases.push(badCase('read_only not a boolean', `${one},"read_only":"yes"}`, false));
    cases.push(badCase('int8_as_number not a boolean', `${one},"int8_as_number":1}`, false));
    cases.push(badCase('\\u0000 in a string', '{"queries":[{"sql":"SELECT \\u0000"}]}', false));
    cases.push(badCase('an integer beyond 64 bits', '{"queries":[{"sql":"SELECT $1","params":[123456789012345678901234567890]}]}', undefined));
    cases.push(badCase('a number beyond a double', '{"queries":[{"sql":"SELECT $1","params":[1e400]}]}', undefined));
    cases.push(badCase('nesting deeper than 64', `{"queries":[{"sql":"SELECT $1","params":[${'['.repeat(70)}${']'.repeat(70)}]}]}`, undefined));
    cases.push(badCase('invalid UTF-8', Buffer.concat([Buffer.from('{"queries":[{"sql":"SELECT \''), Buffer.from([0xff, 0xfe]), Buffer.from('\'"}]}')]), undefined));
    cases.push(badCase('more than max_queries queries', JSON.stringify({ queries: Array.from({ length: opts.maxQueries + 1 }, () => ({ sql: 'SELECT 1' })) }), undefined));
    cases.push(badCase('more than max_params parameters', JSON.stringify({ queries: [{ sql: 'SELECT 1', params: Array.from({ length: opts.maxParams + 1 }, (_, i) => i) }] }), undefined));

    // -- 404, 405, 413, 415
    for (const [method, path] of [['GET', '/nope'], ['POST', '/v1/batch/'], ['GET', '/v1'], ['GET', '/'], ['DELETE', '/healthz/x']])
        cases.push({ name: `${method} ${path}: no such route`, method, path, status: 404 });
    for (const method of ['GET', 'HEAD', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])
        cases.push({ name: `${method} /v1/batch`, method, path: '/v1/batch', status: 405 });
    for (const path of ['/healthz', '/readyz', '/metrics'])
        for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE'])
            cases.push({ name: `${method} ${path}`, method, path, status: 405, body: method === 'POST' ? Buffer.from('{}') : undefined, headers: method === 'POST' ? JSON_CT : undefined });
    cases.push({ name: 'a body over max_body_bytes', method: 'POST', path: '/v1/batch', headers: { ...JSON_CT, Expect: '100-continue' },
        body: Buffer.alloc(opts.maxBodyBytes + 1, 0x20), status: 413 });
    cases.push(batchCase('a body that needs 100-continue', { queries: [{ sql: 'SELECT 1 AS one' }] }, { headers: { ...JSON_CT, Expect: '100-continue' } }));
    cases.push({ name: 'no Content-Type', method: 'POST', path: '/v1/batch', body: Buffer.from(`${one}}`), status: 415 });
    for (const type of ['application/x-www-form-urlencoded', 'text/plain', 'application/jsonx', 'text/json'])
        cases.push({ name: `Content-Type ${type}`, method: 'POST', path: '/v1/batch', headers: { 'Content-Type': type }, body: Buffer.from(`${one}}`), status: 415 });

    // -- probes and metrics
    for (const path of ['/healthz', '/readyz', '/metrics'])
        for (const method of ['GET', 'HEAD'])
            cases.push({ name: `${method} ${path}`, method, path, status: 200 });
    cases.push({ name: 'GET /healthz with a query string', method: 'GET', path: '/healthz?verbose=1', status: 200 });
    cases.push({
        name: 'GET /metrics names the build', method: 'GET', path: '/metrics', status: 200,
        checkReply: (reply) => want(/^fanout_build_info\{version="[^"]+"\} 1$/m.test(reply.body.toString()), 'no fanout_build_info sample'),
    });

    // -- last: a query that kills its own connection (the worker reconnects in the background)
    cases.push(batchCase('a query that kills its connection: db_unavailable', { queries: [{ id: 'kill', sql: 'SELECT pg_terminate_backend(pg_backend_pid())' }] },
        { check: expectCode(0, 'db_unavailable') }));
    return cases;
}

// Requests whose replies are known to contradict docs/API.md (--probe-discrepancies).
function discrepancyCases() {
    return [
        batchCase('[discrepancy] COMMIT loses the connection: commit_error', {
            mode: 'transaction',
            queries: [
                { sql: `CREATE FUNCTION ${tag}_kill() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$` },
                { sql: `CREATE CONSTRAINT TRIGGER ${tag}_kill AFTER INSERT ON ${T.items} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${tag}_kill()` },
                { sql: `INSERT INTO ${T.items} (id) VALUES (77)` },
            ],
        }, { note: 'docs/API.md: commit_error has the SQL error shape (code, message, detail, hint, position, constraint)' }),
        { name: '[discrepancy] an unparsable request target', method: 'GET', path: 'http://[::1', status: 400,
          note: 'docs/API.md: an unparsable request target gets the JSON 400 bad_request' },
    ];
}

// ---------------------------------------------------------------------------------------------
// running

let requestSchema;
function checkRequestBody(c) {
    if (c.requestValid === undefined) return [];
    requestSchema ??= deref(spec.paths['/v1/batch'].post.requestBody).content['application/json'].schema;
    const validate = validator(requestSchema);
    let doc;
    try {
        doc = JSON.parse(Buffer.isBuffer(c.body) ? c.body.toString('utf8') : c.body);
    } catch {
        return [`the request body is not JSON, but the case says the request schema ${c.requestValid ? 'accepts' : 'refuses'} it`];
    }
    const ok = validate(doc);
    if (ok === c.requestValid) return [];
    return [ok ? `the request schema accepts this body, but fanout refused it` :
        `the request schema refuses this body, but fanout accepted it:\n${formatErrors(validate.errors)}`];
}

let passed = 0;
async function run(c, server = servers.main) {
    const body = c.body === undefined ? undefined : Buffer.isBuffer(c.body) ? c.body : Buffer.from(c.body, 'utf8');
    if (c.req && c.requestValid === undefined) c.requestValid = true;
    let reply;
    try {
        reply = await httpRequest(server, c.method, c.path, c.headers, body);
    } catch (e) {
        problems.push({ c, server, errs: [`no reply: ${e.message}`] });
        return undefined;
    }
    const { errs, where } = checkReply(c, reply);
    errs.push(...checkRequestBody(c));
    if (!errs.length && reply.status === 200 && c.req && reply.json) errs.push(...batchInvariants(c.req, reply.json));
    if (!errs.length && c.check && reply.json) errs.push(...c.check(reply.json));
    if (!errs.length && c.checkReply) errs.push(...c.checkReply(reply));
    if (errs.length) problems.push({ c, server, reply, where, errs });
    else passed++;
    return reply;
}

async function runUnavailable() {
    const s = servers.unavailable;
    await run({ name: 'no database: GET /healthz', method: 'GET', path: '/healthz', status: 200 }, s);
    await run({ name: 'no database: GET /readyz', method: 'GET', path: '/readyz', status: 503 }, s);
    await run({ name: 'no database: HEAD /readyz', method: 'HEAD', path: '/readyz', status: 503 }, s);
    await run(badCase('no database: POST /v1/batch', '{"queries":[{"sql":"SELECT 1"}]}', true, {
        status: 503, check: (r) => want(r.error?.code === 'db_unavailable', `code ${r.error?.code}`),
    }), s);
    await runOverCap(s);
}

// Over max_clients (the server runs with --max-clients 1): a connection that has sent its first
// bytes holds the one place, and a request on another is answered 503 and closed.
async function runOverCap(s) {
    const holder = net.connect({ host: s.host, port: s.port });
    await new Promise((resolve, reject) => {
        holder.once('connect', resolve);
        holder.once('error', reject);
    });
    holder.on('error', () => {});
    holder.write(`GET /healthz HTTP/1.1\r\nHost: ${s.host}\r\n`); // unfinished: it stays counted
    await new Promise((r) => setTimeout(r, 300));
    const overCap = (extra) => ({
        status: 503,
        check: (r) => want(r.error?.code === 'overloaded', `code ${r.error?.code}`),
        checkReply: (reply) => want(/^close$/i.test(reply.headers['connection'] ?? ''), `Connection: ${reply.headers['connection']}`),
        ...extra,
    });
    await run(overCap({ name: 'over max_clients: GET /metrics', method: 'GET', path: '/metrics' }), s);
    await run(badCase('over max_clients: POST /v1/batch', '{"queries":[{"sql":"SELECT 1"}]}', true, overCap({})), s);
    holder.destroy();
}

async function runBusy() {
    const s = servers.busy;
    const slow = batchCase('busy: the slow batch that fills the queue', { queries: [{ sql: 'SELECT pg_sleep(1)' }, { sql: 'SELECT pg_sleep(1)' }] });
    const slowDone = run(slow, s);
    // Wait until the slow batch is accepted: a busy worker or a queued job.
    const deadline = Date.now() + 60000;
    let busy = false;
    while (!busy && Date.now() < deadline) {
        const m = await run({ name: 'busy: GET /metrics while waiting', method: 'GET', path: '/metrics', status: 200 }, s);
        const text = m?.body?.toString() ?? '';
        busy = /^fanout_workers_busy [1-9]/m.test(text) || /^fanout_queue_depth [1-9]/m.test(text);
        if (!busy) await new Promise((r) => setTimeout(r, 20));
    }
    if (!busy) problems.push({ c: slow, server: s, errs: ['the slow batch never showed in fanout_workers_busy / fanout_queue_depth'] });
    else {
        await run(badCase('busy: a batch that does not fit the queue', '{"queries":[{"sql":"SELECT 1"},{"sql":"SELECT 2"}]}', true, {
            status: 503, check: (r) => want(r.error?.code === 'overloaded', `code ${r.error?.code}`),
        }), s);
    }
    await slowDone;
}

async function teardown() {
    const drop = {
        queries: [{ sql: `DROP TABLE IF EXISTS ${T.audit}, ${T.items}, ${T.deferred}` }, { sql: `DROP FUNCTION IF EXISTS ${tag}_kill()` }],
        mode: 'transaction',
    };
    // A worker whose connection was just killed may still be reconnecting: retry.
    for (let i = 0; i < 40; i++) {
        try {
            const r = await httpRequest(servers.main, 'POST', '/v1/batch', JSON_CT, Buffer.from(JSON.stringify(drop)));
            const doc = r.status === 200 ? JSON.parse(r.body.toString()) : null;
            if (doc?.committed) return;
        } catch { /* retried */ }
        await new Promise((r) => setTimeout(r, 250));
    }
    console.error(`check.mjs: could not drop the tables ${Object.values(T).join(', ')}`);
}

function coverage() {
    const errs = [];
    const unreach = (path, method, status, why) => unreachable.set(`${path} ${method} ${status}`, why);
    for (const path of Object.keys(spec.paths ?? {})) {
        for (const [m, op] of operationsOf(path)) {
            for (const status of Object.keys(op.responses ?? {})) {
                if (status === '500') unreach(path, m, status, 'out of memory');
                if (status === '401') unreach(path, m, status, 'needs auth_file: the auth group tests 401 replies');
                if (status === '503' && path === '/v1/batch' && !(servers.unavailable && servers.busy))
                    unreach(path, m, status, 'needs --unavailable and --busy');
                if (status === '503' && path === '/readyz' && !servers.unavailable) unreach(path, m, status, 'needs --unavailable');
            }
        }
    }
    for (const path of Object.keys(spec.paths ?? {})) {
        for (const [m, op] of operationsOf(path)) {
            if (!exercised.has(`${path} ${m}`)) errs.push(`operation ${m.toUpperCase()} ${path} was never exercised`);
            for (const status of Object.keys(op.responses ?? {})) {
                const key = `${path} ${m} ${status}`;
                if (answered.has(key)) continue;
                if (unreachable.has(key)) console.log(`note: ${m.toUpperCase()} ${path} ${status} not exercised (${unreachable.get(key)})`);
                else errs.push(`response ${m.toUpperCase()} ${path} ${status} was never exercised`);
            }
        }
    }
    return errs;
}

async function main() {
    let cases = mainCases();
    try {
        for (const c of cases) await run(c);
        if (servers.unavailable) await runUnavailable();
        if (servers.busy) await runBusy();
        if (opts.probe) {
            cases = discrepancyCases();
            for (const c of cases) await run(c);
        }
    } finally {
        await teardown();
    }
    const uncovered = coverage();
    for (const p of problems) {
        const { c, server, reply, where, errs } = p;
        const shown = c.body === undefined ? '' : Buffer.isBuffer(c.body) ? c.body.toString('utf8') : c.body;
        console.log(`\nMISMATCH: ${c.name}`);
        console.log(`  request: ${c.method} ${server.url}${c.path}${c.headers ? ` ${JSON.stringify(c.headers)}` : ''}`);
        if (shown) console.log(`  body: ${shown.length > 400 ? `${shown.slice(0, 400)}… (${shown.length} bytes)` : shown}`);
        if (reply) {
            const text = reply.body.toString('utf8');
            console.log(`  reply: ${reply.status} ${JSON.stringify(reply.headers)}`);
            console.log(`  reply body: ${text.length > 1500 ? `${text.slice(0, 1500)}…` : text}`);
        }
        if (where) console.log(`  checked against: ${where}`);
        if (c.note) console.log(`  note: ${c.note}`);
        for (const e of errs) console.log(`  - ${e}`);
    }
    for (const e of uncovered) console.log(`UNCOVERED: ${e}`);
    const failed = problems.length + uncovered.length;
    // (Worded unlike a test runner's closing line: this runs inside the cmocka suite.)
    console.log(`\ncontract: ${passed} replies match ${specPath}; ${problems.length} mismatches, ${uncovered.length} uncovered`);
    process.exit(failed ? 1 : 0);
}

main().catch((e) => {
    console.error(`check.mjs: ${e.stack ?? e}`);
    process.exit(1);
});

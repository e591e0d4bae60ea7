#!/usr/bin/env python3
"""Helpers of bench/run.sh (issue 5's benchmark); Python 3 standard library only.

    report.py wrk --system S --workload W --rep N --rows-per-request R --log FILE --cmd TEXT
        one wrk run: read the RESULT line of FILE, print one raw-run JSON line
    report.py pgbench --system S --workload W --rep N --queries-per-tx Q --log FILE
                      --samples GLOB --cmd TEXT
        one pgbench run: read tps from its output and p50/p99 from its sampled per-transaction
        logs (-l --sampling-rate), print one raw-run JSON line
    report.py check --reference URL URL...
        send the same requests to every service and compare their replies with the reference's
        (command, row_count, columns, rows, error codes); exit 1 on a difference
    report.py report --raw FILE --machine FILE --settings FILE --json OUT --svg OUT
        medians over the repetitions, the table, the targets with PASS/FAIL, latest.json and the
        SVG chart

A raw run is one JSON object: system, workload, rep, rps, qps, rows_per_s, p50_ms, p99_ms, errors
(non-200 replies + failed queries + socket errors, or pgbench's failed transactions), and the
tool's own figures under "detail".
"""
import argparse
import glob
import html
import json
import statistics
import sys
import urllib.request

# Display order and labels.
SYSTEMS = [
    ("pgbench-tcp", "pgbench TCP"),
    ("pgbench-unix", "pgbench unix"),
    ("fanout", "fanout"),
    ("fanout-noreset", "fanout, no reset"),
    ("node", "node pg.Pool"),
    ("asyncio", "aiohttp+asyncpg"),
    ("threads", "threads+psycopg2"),
    ("floor-threads-reset", "libpq 64thr+reset"),
    ("floor-threads", "libpq 64 threads"),
    ("floor-async-reset", "libpq 1thr+reset"),
    ("floor-async", "libpq 1 thread"),
]
# (d)'s floor (bench/floor.c): the same sleeps from plain libpq, no HTTP; not peers.
FLOORS = ["floor-threads-reset", "floor-threads", "floor-async-reset", "floor-async"]
PEERS = ["node", "asyncio", "threads"]
WORKLOADS = [
    ("select", "-S -M prepared"),
    ("pipeline10", "pipeline of 10 selects"),
    ("single", "(a) 1 point select"),
    ("batch10", "(b) batch of 10"),
    ("batch100", "(c) batch of 100"),
    ("fanout64", "(d) 64 x pg_sleep(0.01)"),
    ("rows10k", "(e) 10,000-row result"),
]
SYSTEM_LABEL = dict(SYSTEMS)
WORKLOAD_LABEL = dict(WORKLOADS)
COLORS = {
    "pgbench-tcp": "#9e9e9e", "pgbench-unix": "#616161", "fanout": "#1565c0", "fanout-noreset": "#64b5f6",
    "node": "#2e7d32", "asyncio": "#ef6c00", "threads": "#8e24aa",
    "floor-threads-reset": "#795548", "floor-threads": "#a1887f", "floor-async-reset": "#455a64",
    "floor-async": "#90a4ae",
}


def fail(msg):
    print(f"report: {msg}", file=sys.stderr)
    sys.exit(1)


# --- raw runs -----------------------------------------------------------------------------------

def cmd_wrk(a):
    line = None
    with open(a.log, encoding="utf-8", errors="replace") as f:
        for text in f:
            if text.startswith("RESULT {"):
                line = text[len("RESULT "):]
    if line is None:
        fail(f"{a.log}: no RESULT line")
    r = json.loads(line)
    errors = int(r.get("non200", 0)) + int(r.get("query_errors", 0)) + int(r.get("socket_errors", 0))
    out = {
        "system": a.system, "workload": a.workload, "rep": a.rep, "tool": "wrk",
        "rps": r["rps"], "qps": r["qps"], "rows_per_s": r["rps"] * a.rows_per_request,
        "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "errors": errors,
        "command": a.cmd, "detail": r,
    }
    print(json.dumps(out, separators=(",", ":")))


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def cmd_pgbench(a):
    tps = failed = processed = None
    latency_avg = None
    with open(a.log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    for ln in text.splitlines():
        ln = ln.strip()
        if ln.startswith("tps = ") and "without initial connection time" in ln:
            tps = float(ln.split()[2])
        elif ln.startswith("number of transactions actually processed:"):
            processed = int(ln.split(":")[1].split("/")[0])
        elif ln.startswith("number of failed transactions:"):
            failed = int(ln.split(":")[1].split()[0])
        elif ln.startswith("latency average = "):
            latency_avg = float(ln.split()[3])
    if tps is None:
        fail(f"{a.log}: no tps line")
    # Per-transaction log lines: client_id transaction_no time_us script_no epoch_s epoch_us
    lat = []
    for path in glob.glob(a.samples):
        with open(path, encoding="utf-8") as f:
            for ln in f:
                parts = ln.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    lat.append(int(parts[2]) / 1000.0)
    lat.sort()
    out = {
        "system": a.system, "workload": a.workload, "rep": a.rep, "tool": "pgbench",
        "rps": tps, "qps": tps * a.queries_per_tx, "rows_per_s": tps * a.queries_per_tx,
        "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "errors": failed or 0,
        "command": a.cmd,
        "detail": {"tps": tps, "transactions": processed, "failed": failed,
                   "latency_avg_ms": latency_avg, "latency_samples": len(lat)},
    }
    print(json.dumps(out, separators=(",", ":")))


# --- the replies check ----------------------------------------------------------------------------

CHECK_BODIES = [
    ("single", {"queries": [{"sql": "SELECT abalance FROM pgbench_accounts WHERE aid = $1", "params": [42]}]}),
    ("batch10", {"queries": [{"sql": "SELECT abalance FROM pgbench_accounts WHERE aid = $1", "params": [k]}
                             for k in (1, 17, 999999, 1000000, 123456, 2, 3, 500000, 77, 42)]}),
    ("rows10k", {"queries": [{"sql": "SELECT aid, bid, abalance, filler FROM pgbench_accounts "
                                     "WHERE aid BETWEEN $1 AND $2", "params": [1, 10000]}]}),
    ("sleeps", {"queries": [{"sql": "SELECT pg_sleep($1)", "params": [0.01]}] * 3}),
    ("types", {"queries": [{"sql": "SELECT count(*) AS n, sum(abalance)::numeric AS s, 'x'::text AS t "
                                   "FROM pgbench_accounts WHERE aid <= $1", "params": [100]}]}),
    ("errors", {"queries": [{"sql": "SELECT nope FROM pgbench_accounts"},
                            {"sql": "SELECT abalance FROM pgbench_accounts WHERE aid = $1", "params": [5]}]}),
]


def post(url, body):
    req = urllib.request.Request(url + "/v1/batch", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())


def essentials(reply):
    """What must match: per result, the error code, or command, row_count, columns and rows.
    A void value (pg_sleep) is "" in fanout and None in asyncpg: both count as ""."""
    out = []
    for res in reply.get("results", []):
        if "error" in res:
            out.append({"error": res["error"].get("code")})
            continue
        cols = res.get("columns") or []
        void = [c.get("type") == "void" for c in cols]
        rows = [[("" if (v is None and void[i]) else v) for i, v in enumerate(row)]
                for row in res.get("rows") or []]
        out.append({"command": res.get("command"), "row_count": res.get("row_count"),
                    "columns": [(c.get("name"), c.get("type"), c.get("type_oid")) for c in cols],
                    "rows": rows})
    return out


def cmd_check(a):
    bad = 0
    for name, body in CHECK_BODIES:
        status, ref = post(a.reference, body)
        if status != 200:
            fail(f"check {name}: the reference answered {status}")
        want = essentials(ref)
        for url in a.urls:
            status, got = post(url, body)
            have = essentials(got)
            if status != 200 or have != want:
                bad += 1
                for i, (w, h) in enumerate(zip(want, have)):
                    if w != h:
                        print(f"check {name}: {url} result {i} differs:\n  reference {json.dumps(w)[:300]}\n"
                              f"  this      {json.dumps(h)[:300]}", file=sys.stderr)
                        break
                else:
                    print(f"check {name}: {url}: status {status}, {len(have)} results, want {len(want)}",
                          file=sys.stderr)
    if bad:
        fail(f"{bad} replies differ from the reference's")
    print(f"check: {len(CHECK_BODIES)} requests, {len(a.urls)} services: the same replies as the reference")


# --- the report -----------------------------------------------------------------------------------

def load_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def medians(raw):
    groups = {}
    for r in raw:
        groups.setdefault((r["system"], r["workload"]), []).append(r)
    out = {}
    for key, runs in groups.items():
        out[key] = {
            "system": key[0], "workload": key[1], "runs": len(runs),
            "rps": median([r["rps"] for r in runs]),
            "qps": median([r["qps"] for r in runs]),
            "rows_per_s": median([r["rows_per_s"] for r in runs]),
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "errors": sum(r["errors"] for r in runs),
            "qps_min": min(r["qps"] for r in runs), "qps_max": max(r["qps"] for r in runs),
        }
    return out


def fmt_num(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def short(v):
    if v is None:
        return "-"
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            x = v / div
            return (f"{x:.1f}" if x < 100 else f"{x:.0f}") + suffix
    return f"{v:.0f}"


def best_peer(med, workload, key, lowest=False):
    cands = [(med[(p, workload)][key], p) for p in PEERS
             if (p, workload) in med and med[(p, workload)][key] is not None]
    if not cands:
        return None, None
    value, peer = (min if lowest else max)(cands)
    return peer, value


def targets(med, settings):
    """The issue's targets: (name, measured text, value, target text, passed)."""
    ref = "pgbench-" + settings["db_transport"]
    other = "pgbench-" + ("tcp" if settings["db_transport"] == "unix" else "unix")
    out = []

    def get(system, workload, key):
        m = med.get((system, workload))
        return None if m is None else m[key]

    def ratio(name, num, den, den_label, want):
        if num is None or den is None or den == 0:
            out.append({"target": name, "measured": "not measured", "value": None,
                        "want": f">= {want}", "pass": False})
            return
        v = num / den
        out.append({"target": name, "measured": f"{fmt_num(num)} / {fmt_num(den)} ({den_label})",
                    "value": round(v, 3), "want": f">= {want}", "pass": v >= want})

    def info(name, num, den, den_label):
        if num is not None and den:
            out.append({"target": name, "measured": f"{fmt_num(num)} / {fmt_num(den)} ({den_label})",
                        "value": round(num / den, 3), "want": "info", "pass": None})

    fq = get("fanout", "batch10", "qps")
    ratio("batch of 10: fanout queries/s / pgbench -S c=16", fq, get(ref, "select", "qps"),
          SYSTEM_LABEL[ref], 1.0)
    info("  (the same / pgbench -S over the other transport)", fq, get(other, "select", "qps"),
         SYSTEM_LABEL[other])
    info("  (the same / pgbench pipeline of 10)", fq, get(ref, "pipeline10", "qps"),
         SYSTEM_LABEL[ref] + " pipeline")
    peer, pv = best_peer(med, "batch10", "qps")
    ratio("batch of 10: fanout queries/s / best peer", fq, pv, SYSTEM_LABEL.get(peer, "-"), 3.0)

    fr = get("fanout", "single", "rps")
    ratio("single select: fanout requests/s / pgbench -S c=16", fr, get(ref, "select", "rps"),
          SYSTEM_LABEL[ref], 0.6)
    info("  (the same / pgbench -S over the other transport)", fr, get(other, "select", "rps"),
         SYSTEM_LABEL[other])
    peer, pv = best_peer(med, "single", "rps")
    ratio("single select: fanout requests/s / best peer", fr, pv, SYSTEM_LABEL.get(peer, "-"), 2.0)

    lat = get("fanout", "fanout64", "p50_ms")
    limit = 1.3 * settings["sleep_ms"]
    out.append({"target": f"64 x pg_sleep(0.01), {settings['fanout_workers']} workers, 1 client: "
                          "fanout median batch latency",
                "measured": "not measured" if lat is None else f"{lat:.2f} ms",
                "value": lat, "want": f"<= {limit:.1f} ms", "pass": lat is not None and lat <= limit})
    floors = [get(f, "fanout64", "p50_ms") for f in FLOORS]
    if any(v is not None for v in floors):
        ms = ["-" if v is None else f"{v:.2f}" for v in floors]
        out.append({"target": "  (its floor, libpq alone: 64 threads with / without the reset)",
                    "measured": f"{ms[0]} / {ms[1]} ms", "value": None, "want": "info", "pass": None})
        out.append({"target": "  (the same, one thread for all 64 connections)",
                    "measured": f"{ms[2]} / {ms[3]} ms", "value": None, "want": "info", "pass": None})

    p99 = get("fanout", "batch10", "p99_ms")
    peer, pp50 = best_peer(med, "batch10", "p50_ms", lowest=True)
    out.append({"target": "batch of 10: fanout p99 <= best peer's p50",
                "measured": "not measured" if p99 is None or pp50 is None else
                f"{p99:.2f} ms vs {pp50:.2f} ms ({SYSTEM_LABEL.get(peer)})",
                "value": None if p99 is None or not pp50 else round(p99 / pp50, 3), "want": "<= 1.0",
                "pass": p99 is not None and pp50 is not None and p99 <= pp50})

    peer, pv = best_peer(med, "rows10k", "rows_per_s")
    ratio("10,000-row result: fanout rows/s / best peer", get("fanout", "rows10k", "rows_per_s"), pv,
          SYSTEM_LABEL.get(peer, "-"), 2.0)
    return out


def table(med, settings, machine):
    lines = []
    w = lines.append
    w(f"fanout benchmark, {machine.get('date', '')}, commit {machine.get('git_commit', '?')[:12]}"
      f"{' (with uncommitted changes)' if machine.get('git_dirty') else ''}")
    w(f"Machine: {machine.get('nproc')} cores ({machine.get('cpu', '?')}), shared by the load generator "
      "(wrk/pgbench), PostgreSQL and the service under test;")
    w(f"  other work on the machine also competes (load average at start {machine.get('loadavg_start', '?')}).")
    w(f"Each figure: the median of {settings['repeat']} runs of {settings['seconds']} s after a warm-up; "
      f"{settings['clients']} clients (1 for (d)); services and pgbench reach PostgreSQL "
      f"over {'the unix socket' if settings['db_transport'] == 'unix' else 'TCP 127.0.0.1'} "
      f"(pgbench also over the other).")
    w(f"Pools: {settings['workers']} connections (fanout workers, node pg.Pool max, asyncpg pool, "
      f"threads), {settings['fanout_workers']} for (d).")
    w("")
    hdr = f"{'system':<17} {'workload':<26} {'req/s':>10} {'queries/s':>11} {'rows/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    w(hdr)
    w("-" * len(hdr))
    for wl, wlabel in WORKLOADS:
        any_row = False
        for sys_, slabel in SYSTEMS:
            m = med.get((sys_, wl))
            if m is None:
                continue
            any_row = True
            w(f"{slabel:<17} {wlabel:<26} {fmt_num(m['rps']):>10} {fmt_num(m['qps']):>11} "
              f"{(fmt_num(m['rows_per_s']) if wl == 'rows10k' else ''):>11} {fmt_ms(m['p50_ms']):>8} {fmt_ms(m['p99_ms']):>8} {m['errors']:>6}")
        if any_row:
            w("")
    return lines


def target_lines(tg):
    width = max(len(t["target"]) for t in tg)
    lines = [f"{'Targets (issue 5)':<{width + 2}}  {'value':>6}  {'target':>10}  {'result':<6}  measured"]
    for t in tg:
        result = {True: "PASS", False: "FAIL", None: ""}[t["pass"]]
        ratio = t["value"] is not None and "ms" not in t["want"]
        value = f"{t['value']:.2f}" if ratio else ""
        want = "" if t["want"] == "info" else t["want"]
        lines.append(f"  {t['target']:<{width}}  {value:>6}  {want:>10}  {result:<6}  {t['measured']}")
    passed = sum(1 for t in tg if t["pass"] is True)
    total = sum(1 for t in tg if t["pass"] is not None)
    lines.append(f"  {passed} of {total} targets met")
    return lines


def reset_lines(med):
    with_reset, without = med.get(("fanout", "batch10")), med.get(("fanout-noreset", "batch10"))
    if not with_reset or not without or not without["rps"]:
        return []
    cost = 100 * (1 - with_reset["rps"] / without["rps"])
    # within the noise the reset can come out ahead: say so instead of "-2.5 % fewer"
    verdict = f"{cost:.1f} % fewer with it" if cost >= 0 else f"{-cost:.1f} % more with it (noise)"
    return ["", "Session reset (issue 6), (b) batch of 10: fanout "
            f"{fmt_num(with_reset['rps'])} requests/s with it, {fmt_num(without['rps'])} without "
            f"(--reset-sessions false): {verdict}"]


def floor_lines(med):
    """(d) against its floor: what fanout adds to the same statements sent from plain libpq."""
    f, fl = med.get(("fanout", "fanout64")), med.get(("floor-threads-reset", "fanout64"))
    if not f or not fl or f["p50_ms"] is None or fl["p50_ms"] is None:
        return []
    lines = ["", f"(d)'s floor (bench/floor.c, no HTTP): fanout p50 {f['p50_ms']:.2f} ms, the same statements "
                 f"from 64 libpq threads {fl['p50_ms']:.2f} ms:",
             f"  fanout's own part (HTTP, JSON, the queue) {f['p50_ms'] - fl['p50_ms']:.2f} ms"]
    lows = [(med[(k, "fanout64")]["p50_ms"], SYSTEM_LABEL[k]) for k in FLOORS
            if (k, "fanout64") in med and med[(k, "fanout64")]["p50_ms"] is not None]
    if lows:
        v, label = min(lows)
        lines.append(f"  the lowest floor measured: {label} {v:.2f} ms")
    return lines


def peer_lines(med):
    lines = ["fanout / best peer, per workload (throughput; latency for (d))"]
    for wl, wlabel in WORKLOADS[2:]:
        f = med.get(("fanout", wl))
        if f is None:
            continue
        if wl == "fanout64":
            peer, v = best_peer(med, wl, "p50_ms", lowest=True)
            if peer and f["p50_ms"]:
                lines.append(f"  {wlabel:<26} best peer {SYSTEM_LABEL[peer]} p50 {v:.2f} ms, fanout "
                             f"{f['p50_ms']:.2f} ms: fanout {v / f['p50_ms']:.2f}x (peer p50 / fanout p50)")
            continue
        key = "rows_per_s" if wl == "rows10k" else "qps"
        peer, v = best_peer(med, wl, key)
        if peer and v:
            lines.append(f"  {wlabel:<26} best peer {SYSTEM_LABEL[peer]} {fmt_num(v)}: fanout {f[key] / v:.2f}x")
    return lines


def svg_chart(med, settings, machine):
    """Small multiples: one panel per workload, each with its own scale, a bar per system."""
    panels = [
        ("single", "(a) 1 point select / request", "queries/s", "qps",
         ["pgbench-tcp:select", "pgbench-unix:select", "fanout", "node", "asyncio", "threads"]),
        ("batch10", "(b) batch of 10 point selects", "queries/s", "qps",
         ["pgbench-unix:select", "pgbench-unix:pipeline10", "fanout", "node", "asyncio", "threads"]),
        ("batch100", "(c) batch of 100 point selects", "queries/s", "qps",
         ["fanout", "node", "asyncio", "threads"]),
        ("fanout64", "(d) 64 x pg_sleep(0.01), 1 client", "queries/s", "qps",
         ["fanout", "node", "asyncio", "threads", "floor-threads-reset", "floor-async"]),
        ("rows10k", "(e) one 10,000-row result", "rows/s", "rows_per_s",
         ["fanout", "node", "asyncio", "threads"]),
    ]
    ref = "pgbench-" + settings["db_transport"]
    pw, ph, gap, top, left = 300, 260, 30, 92, 70
    width = left + 20 + len(panels) * pw + (len(panels) - 1) * gap
    height = top + ph + 120
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="20" y="26" font-size="17" font-weight="bold">fanout vs pgbench and peer services: '
           f'throughput per workload (medians of {settings["repeat"]} x {settings["seconds"]} s)</text>',
           f'<text x="20" y="46" fill="#444">{html.escape(str(machine.get("nproc")))} cores shared by load '
           f'generator, PostgreSQL and service; {settings["clients"]} clients ((d): 1); pools of '
           f'{settings["workers"]} ((d): {settings["fanout_workers"]}); DB over {settings["db_transport"]}; '
           f'commit {html.escape(machine.get("git_commit", "?")[:12])}, {html.escape(machine.get("date", ""))}</text>',
           f'<text x="20" y="64" fill="#444">Each panel has its own scale. Higher is better.</text>']
    for i, (wl, title, unit, key, bars) in enumerate(panels):
        x0 = left + i * (pw + gap)
        y0 = top
        items = []
        for b in bars:
            sys_, _, bw = b.partition(":")
            m = med.get((sys_, bw or wl))
            label = SYSTEM_LABEL[sys_] + (" pipeline" if bw == "pipeline10" else " -S" if bw == "select" else "")
            if sys_.startswith("pgbench") and bw == "select" and wl == "batch10" and sys_ != ref:
                continue
            items.append((label, sys_, None if m is None else m[key]))
        vmax = max([v for _, _, v in items if v] or [1])
        out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + pw / 2}" y="{y0 - 10}" text-anchor="middle" font-weight="bold">'
                   f'{html.escape(title)}</text>')
        out.append(f'<text x="{x0 + 6}" y="{y0 + 14}" fill="#666" font-size="11">{unit}</text>')
        n = max(1, len(items))
        slot = (pw - 20) / n
        bar_w = slot * 0.7
        base = y0 + ph - 4
        usable = ph - 40
        for j, (label, sys_, v) in enumerate(items):
            bx = x0 + 10 + j * slot + (slot - bar_w) / 2
            h = 0 if not v else usable * v / vmax
            out.append(f'<rect x="{bx:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                       f'fill="{COLORS[sys_]}"><title>{html.escape(label)}: {fmt_num(v)} {unit}</title></rect>')
            out.append(f'<text x="{bx + bar_w / 2:.1f}" y="{base - h - 4:.1f}" text-anchor="middle" '
                       f'font-size="11">{short(v)}</text>')
            lx, ly = bx + bar_w / 2, base + 12
            out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="end" font-size="11" '
                       f'transform="rotate(-40 {lx:.1f} {ly:.1f})">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def cmd_report(a):
    raw = load_jsonl(a.raw)
    with open(a.machine, encoding="utf-8") as f:
        machine = json.load(f)
    with open(a.settings, encoding="utf-8") as f:
        settings = json.load(f)
    med = medians(raw)
    tg = targets(med, settings)
    lines = table(med, settings, machine)
    lines += target_lines(tg) + [""] + peer_lines(med) + floor_lines(med) + reset_lines(med)
    errs = sum(m["errors"] for m in med.values())
    if errs:
        lines += ["", f"WARNING: {errs} errors (non-200 replies, failed queries or socket errors, "
                      "or failed pgbench transactions): those rows measured something else"]
    print("\n".join(lines))
    doc = {
        "schema": 1,
        "about": "fanout benchmark (issue 5): medians over repetitions, the targets, and every raw run",
        "machine": machine,
        "settings": settings,
        "medians": [med[k] for k in sorted(med, key=lambda k: (
            [w for w, _ in WORKLOADS].index(k[1]) if k[1] in WORKLOAD_LABEL else 99,
            [s for s, _ in SYSTEMS].index(k[0]) if k[0] in SYSTEM_LABEL else 99))],
        "targets": tg,
        "table": lines,
        "raw": raw,
    }
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    with open(a.svg, "w", encoding="utf-8") as f:
        f.write(svg_chart(med, settings, machine))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    p = sub.add_parser("wrk")
    for name in ("--system", "--workload", "--log", "--cmd"):
        p.add_argument(name, required=True)
    p.add_argument("--rep", type=int, required=True)
    p.add_argument("--rows-per-request", type=int, default=1)
    p = sub.add_parser("pgbench")
    for name in ("--system", "--workload", "--log", "--samples", "--cmd"):
        p.add_argument(name, required=True)
    p.add_argument("--rep", type=int, required=True)
    p.add_argument("--queries-per-tx", type=int, default=1)
    p = sub.add_parser("check")
    p.add_argument("--reference", required=True)
    p.add_argument("urls", nargs="+")
    p = sub.add_parser("report")
    for name in ("--raw", "--machine", "--settings", "--json", "--svg"):
        p.add_argument(name, required=True)
    a = ap.parse_args()
    {"wrk": cmd_wrk, "pgbench": cmd_pgbench, "check": cmd_check, "report": cmd_report}[a.action](a)


if __name__ == "__main__":
    main()

"""The live console's HTML: one page, inline CSS and JavaScript, no build step and nothing loaded from elsewhere.

It polls ``/dashboard/feed`` (relative to itself, so it works behind a path prefix) once a second, writes every
value with ``textContent`` (names and reasons are never parsed as HTML), and keeps the last two minutes of rates and
latencies for the sparklines.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llmfleet console</title>
<link rel="icon" href="data:,">
<style>
  :root { --bg: #0f1419; --panel: #182029; --line: #2a3542; --fg: #d8dee6; --dim: #8a96a3;
          --ok: #3fb950; --warn: #d29922; --bad: #f85149; --accent: #58a6ff; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg);
         color: var(--fg); }
  header { display: flex; align-items: baseline; gap: 16px; padding: 12px 20px; border-bottom: 1px solid var(--line); }
  header h1 { margin: 0; font-size: 18px; }
  #status { color: var(--dim); }
  #status.stale { color: var(--bad); }
  main { padding: 16px 20px; display: grid; gap: 16px; }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
  .card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
  .card .label { color: var(--dim); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
  .card .value { font-size: 17px; font-variant-numeric: tabular-nums; white-space: nowrap; overflow: hidden; }
  .card .sub { color: var(--dim); font-size: 12px; font-variant-numeric: tabular-nums; }
  .card canvas { width: 100%; height: 40px; display: block; margin-top: 6px; }
  section { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
  section h2 { margin: 0 0 8px; font-size: 14px; color: var(--dim); font-weight: 600; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { color: var(--dim); font-weight: 500; font-size: 12px; }
  td.num, th.num { text-align: right; }
  .state { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; }
  .state.healthy { background: #1d3b26; color: var(--ok); }
  .state.degraded { background: #3d3214; color: var(--warn); }
  .state.unhealthy { background: #43191a; color: var(--bad); }
  .state.draining { background: #1b2c44; color: var(--accent); }
  .two { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
  .reason { color: var(--dim); white-space: normal; }
  .empty { color: var(--dim); font-style: italic; }
  @media (max-width: 900px) { .two { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header><h1>llmfleet console</h1><span id="status">connecting...</span></header>
<main>
  <div class="cards">
    <div class="card"><div class="label">Replicas routable</div><div class="value" id="c-replicas">-</div>
      <div class="sub" id="c-replicas-sub"></div></div>
    <div class="card"><div class="label">Requests / s</div><div class="value" id="c-rps">-</div>
      <div class="sub" id="c-rps-sub"></div><canvas id="s-rps"></canvas></div>
    <div class="card"><div class="label">Output tokens / s</div><div class="value" id="c-tps">-</div>
      <div class="sub" id="c-tps-sub"></div><canvas id="s-tps"></canvas></div>
    <div class="card"><div class="label">TTFT p50 / p99</div><div class="value" id="c-ttft">-</div>
      <div class="sub" id="c-ttft-sub"></div><canvas id="s-ttft"></canvas></div>
    <div class="card"><div class="label">Request p50 / p99</div><div class="value" id="c-e2e">-</div>
      <div class="sub" id="c-e2e-sub"></div></div>
    <div class="card"><div class="label">In flight / waiting</div><div class="value" id="c-load">-</div>
      <div class="sub" id="c-load-sub"></div><canvas id="s-load"></canvas></div>
    <div class="card"><div class="label">Cost / hour</div><div class="value" id="c-cost">-</div>
      <div class="sub" id="c-cost-sub"></div></div>
    <div class="card"><div class="label">USD / 1M output tokens</div><div class="value" id="c-ptok">-</div>
      <div class="sub" id="c-ptok-sub"></div></div>
  </div>
  <section><h2>Replicas</h2>
    <table><thead><tr><th>name</th><th>pool</th><th>state</th><th>models</th><th class="num">in flight</th>
      <th class="num">running</th><th class="num">waiting</th><th class="num">KV cache</th>
      <th class="num">latency (avg)</th><th class="num">TTFT (avg)</th><th class="num">requests</th>
      <th class="num">failures</th><th>GPU</th><th class="num">USD/h</th></tr></thead>
      <tbody id="replicas"></tbody></table></section>
  <div class="two">
    <section><h2>Autoscaler decisions (newest first)</h2>
      <table><thead><tr><th class="num">age</th><th>action</th><th>code</th><th>reason</th></tr></thead>
        <tbody id="decisions"></tbody></table></section>
    <section><h2>Cost by pool and capacity type</h2>
      <table><thead><tr><th>pool</th><th>capacity</th><th class="num">USD/h</th><th class="num">GPU-hours</th>
        <th class="num">USD so far</th></tr></thead><tbody id="pools"></tbody></table></section>
  </div>
</main>
<script>
"use strict";
const FEED = "dashboard/feed";
const KEEP = 120;
const series = { rps: [], tps: [], ttft: [], load: [] };

function $(id) { return document.getElementById(id); }
function text(id, value) { $(id).textContent = value; }
function fmt(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) { return "-"; }
  return Number(x).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}
function ms(x) {
  if (x === null || x === undefined) { return "-"; }
  return x >= 1000 ? fmt(x / 1000, 2) + " s" : fmt(x, x < 10 ? 1 : 0) + " ms";
}
function usd(x, digits) { return x === null || x === undefined ? "-" : "$" + fmt(x, digits); }
function push(name, value) {
  const s = series[name];
  s.push(value === null || value === undefined ? NaN : value);
  while (s.length > KEEP) { s.shift(); }
}
function spark(id, values, color) {
  const c = $(id);
  const w = c.clientWidth, h = c.clientHeight;
  if (!w || !h) { return; }
  const dpr = window.devicePixelRatio || 1;
  c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const finite = values.filter(Number.isFinite);
  if (finite.length < 2) { return; }
  const max = Math.max(...finite, 1e-9);
  const span = Math.max(values.length, 12);
  g.strokeStyle = color; g.lineWidth = 1.5; g.beginPath();
  let started = false;
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) { started = false; return; }
    const x = (i / (span - 1)) * w, y = h - 2 - (v / max) * (h - 4);
    if (started) { g.lineTo(x, y); } else { g.moveTo(x, y); started = true; }
  });
  g.stroke();
}
function cell(tr, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) { td.className = cls; }
  tr.appendChild(td);
  return td;
}
function fill(id, rows, columns, emptyText) {
  const body = $(id);
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, emptyText, "empty");
    td.colSpan = columns;
    body.appendChild(tr);
  }
  return body;
}
function render(d) {
  const t = d.totals, r = d.rates, lat = d.latency_ms, cost = d.cost;
  text("c-replicas", t.routable + " / " + t.replicas);
  text("c-replicas-sub", (d.models.join(", ") || "no model") + (d.draining ? " | draining" : ""));
  text("c-rps", fmt(r.requests_per_s, 2));
  text("c-rps-sub", "errors " + fmt(r.errors_per_s, 2) + "/s | total " + fmt(t.requests, 0));
  text("c-tps", fmt(r.completion_tokens_per_s, 1));
  text("c-tps-sub", "prompt " + fmt(r.prompt_tokens_per_s, 1) + "/s");
  text("c-ttft", ms(lat.ttft.p50) + " / " + ms(lat.ttft.p99));
  text("c-ttft-sub", "p90 " + ms(lat.ttft.p90) + " | ITL p50 " + ms(lat.itl.p50));
  text("c-e2e", ms(lat.e2e.p50) + " / " + ms(lat.e2e.p99));
  text("c-e2e-sub", "p90 " + ms(lat.e2e.p90) + " over " + fmt(d.window_s, 0) + " s");
  text("c-load", t.in_flight + " / " + t.waiting);
  text("c-load-sub", "at the gateway / in engine queues");
  text("c-cost", usd(cost.usd_per_hour, 2));
  text("c-cost-sub", usd(cost.usd_total, 4) + " so far | " + fmt(cost.gpu_hours, 3) + " GPU-h");
  text("c-ptok", usd(cost.usd_per_million_output_tokens, 2));
  text("c-ptok-sub", "spend / completion tokens");
  push("rps", r.requests_per_s); push("tps", r.completion_tokens_per_s);
  push("ttft", lat.ttft.p99); push("load", t.in_flight);
  spark("s-rps", series.rps, "#58a6ff"); spark("s-tps", series.tps, "#3fb950");
  spark("s-ttft", series.ttft, "#d29922"); spark("s-load", series.load, "#bc8cff");

  const reps = fill("replicas", d.replicas, 14, "no replica registered");
  for (const x of d.replicas) {
    const tr = document.createElement("tr");
    cell(tr, x.name); cell(tr, x.pool);
    const st = document.createElement("span");
    st.className = "state " + x.state; st.textContent = x.state;
    const td = cell(tr, ""); td.appendChild(st);
    cell(tr, x.models.join(", ") || "-");
    cell(tr, fmt(x.in_flight, 0), "num"); cell(tr, fmt(x.running, 0), "num"); cell(tr, fmt(x.waiting, 0), "num");
    cell(tr, x.kv_cache_usage === null ? "-" : fmt(x.kv_cache_usage * 100, 1) + "%", "num");
    cell(tr, ms(x.latency_ewma_ms), "num"); cell(tr, ms(x.ttft_ewma_ms), "num");
    cell(tr, fmt(x.requests_total, 0), "num"); cell(tr, fmt(x.failures_total, 0), "num");
    cell(tr, x.gpu ? x.gpus + "x " + x.gpu + " (" + x.capacity_type + ")" : "-");
    cell(tr, usd(x.usd_per_hour, 2), "num");
    reps.appendChild(tr);
  }
  const dec = fill("decisions", d.autoscaler, 4, "no decision published (the autoscaler runs under llmfleet up)");
  for (const x of d.autoscaler) {
    const tr = document.createElement("tr");
    cell(tr, fmt(x.age_s, 0) + " s", "num");
    cell(tr, (x.direction || "?") + " " + x.current + " -> " + x.replicas + (x.panic ? " (panic)" : ""));
    cell(tr, x.code || "-"); cell(tr, x.reason || "", "reason");
    dec.appendChild(tr);
  }
  const pools = fill("pools", cost.by_pool, 5, "no replica with a known GPU (register with gpu/gpus)");
  for (const x of cost.by_pool) {
    const tr = document.createElement("tr");
    cell(tr, x.pool); cell(tr, x.capacity_type); cell(tr, usd(x.usd_per_hour, 2), "num");
    cell(tr, fmt(x.gpu_hours, 4), "num"); cell(tr, usd(x.usd_total, 4), "num");
    pools.appendChild(tr);
  }
}
async function tick() {
  try {
    const resp = await fetch(FEED, { cache: "no-store" });
    if (!resp.ok) { throw new Error("HTTP " + resp.status); }
    const d = await resp.json();
    render(d);
    const s = $("status");
    s.className = ""; s.textContent = "live | updated " + new Date().toLocaleTimeString();
  } catch (err) {
    const s = $("status");
    s.className = "stale"; s.textContent = "feed unavailable (" + err.message + "), retrying";
  }
  setTimeout(tick, 1000);
}
tick();
</script>
</body>
</html>
"""

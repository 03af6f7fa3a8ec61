"""The dashboard at ``/`` on every worker's web port: one static page over the JSON views.

No build step and no framework: the page fetches ``/personas``, ``/unsettled``,
``/dead-letters`` and ``/audit`` every two seconds, shows the audit badge — red with the
number of streams whose hash chain the audit consumer found broken, and a table of them
(their first break; a run's stream links to its run), else green with the newest signed
checkpoint — and fills five tables — personas (state, queue depth,
spend against each budget window, last and next run), each persona's diagnostics (the
status's ``diagnostics``: code, severity, message), runs in flight (lease expiry, usage
against the run limits), unsettled work, recent dead letters. Values are set as text
(never as HTML), so nothing a producer sent can run in the page. Cells carry
``data-field`` attributes so that tests (and scripts) can read the numbers.

With ``PERSONAFLOW_WEB_TOKEN`` set, the page itself is served without the token (it holds
no data) and every fetch needs it: the first answer 401 shows a one-field form, the token
typed there is kept in the tab's ``sessionStorage`` (gone when the tab closes) and sent as
``Authorization: Bearer`` with every fetch; a token the worker refuses is dropped and the
form asks again.

A run (a click on its id, or ``/#run=RUN_ID``) opens below the tables: status, attempt,
trace id — a link to the tracing UI when ``PERSONAFLOW_TRACE_URL`` is set (a URL with
``{trace_id}``) — and its steps as a timeline, from the run's stream
(``/runs/{id}/events``): when each step started after the run was created, how long it took,
how it ended — its policy decisions, and once it has ended its signed bill of materials
(``/runs/{id}/bom``).
"""

from __future__ import annotations

import json

DASHBOARD_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>personaflow</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2430; background: #f7f8fa; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  h2 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
  .meta { color: #5b6576; font-size: .85rem; }
  table { border-collapse: collapse; width: 100%; background: #fff; box-shadow: 0 1px 2px #0001; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e6e8ec; vertical-align: top; }
  th { background: #eef1f5; font-weight: 600; font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .state-idle { color: #1a7f37; } .state-paused, .state-draining { color: #9a6700; }
  .state-disabled, .state-failed { color: #cf222e; }
  .bar { display: inline-block; width: 70px; height: 7px; background: #e6e8ec; border-radius: 4px;
         vertical-align: middle; margin-left: .4rem; overflow: hidden; }
  .bar > span { display: block; height: 100%; background: #2f81f7; }
  .bar.hot > span { background: #cf222e; }
  .empty { color: #5b6576; font-style: italic; }
  .severity-warning, .severity-error { color: #cf222e; } .severity-info { color: #5b6576; }
  #error, #login-error { color: #cf222e; }
  #login { margin: 1rem 0; padding: .8rem; background: #fff; box-shadow: 0 1px 2px #0001; }
  #login[hidden], #run[hidden] { display: none; }
  .lane { position: relative; height: 10px; background: #eef1f5; border-radius: 3px; min-width: 240px; }
  .lane > span { position: absolute; top: 0; bottom: 0; background: #2f81f7; border-radius: 3px; min-width: 2px; }
  .badge { display: inline-block; padding: .1rem .5rem; border-radius: 9px; font-size: .8rem; font-weight: 600; }
  .badge.ok { background: #dafbe1; color: #1a7f37; } .badge.broken { background: #ffebe9; color: #cf222e; }
  .badge.unknown { background: #eef1f5; color: #5b6576; }
  #chains[hidden], #chains-title[hidden] { display: none; }
  .lane > span.failed { background: #cf222e; } .lane > span.open { background: #9a6700; }
</style>
</head>
<body>
<h1>personaflow</h1>
<div class="meta">updated <span id="updated">never</span> <span id="error"></span>
  · audit <span id="audit" class="badge unknown" data-field="audit">not reported</span></div>
<h2 id="chains-title" hidden>Broken audit chains</h2>
<table id="chains" hidden><thead><tr>
  <th>stream</th><th>first broken seq</th><th>found</th><th>detail</th>
</tr></thead><tbody></tbody></table>

<form id="login" hidden>
  <label>This worker asks for its token (PERSONAFLOW_WEB_TOKEN):
    <input id="token" name="token" type="password" autocomplete="current-password" required></label>
  <button type="submit">Show</button> <span id="login-error"></span>
</form>

<h2>Personas <span class="meta" id="persona-count"></span></h2>
<table id="personas"><thead><tr>
  <th>persona</th><th>state</th><th>queued</th><th>spent today</th><th>this hour</th><th>tokens today</th>
  <th>last run</th><th>next run</th><th>last error</th>
</tr></thead><tbody></tbody></table>

<h2>Diagnostics</h2>
<table id="diagnostics"><thead><tr>
  <th>persona</th><th>severity</th><th>code</th><th>message</th>
</tr></thead><tbody></tbody></table>

<h2>Runs in flight</h2>
<table id="runs"><thead><tr>
  <th>run</th><th>persona</th><th>status</th><th>attempt</th><th>lease expires in</th>
  <th>steps</th><th>tokens</th><th>cost</th>
</tr></thead><tbody></tbody></table>

<section id="run" hidden>
<h2>Run <span id="run-id"></span></h2>
<div class="meta">status <span id="run-status" data-field="status"></span> · attempt
  <span id="run-attempt" data-field="attempt"></span> · trace <a id="run-trace" data-field="trace_id"></a></div>
<table id="timeline"><thead><tr>
  <th>step</th><th>name</th><th>started after</th><th>took</th><th>ended</th><th>timeline</th>
</tr></thead><tbody></tbody></table>
<h2>Policy decisions</h2>
<table id="policy"><thead><tr>
  <th>seq</th><th>boundary</th><th>effect</th><th>summary</th>
</tr></thead><tbody></tbody></table>
<h2>Bill of materials</h2>
<table id="bom"><thead><tr><th>what</th><th>value</th></tr></thead><tbody></tbody></table>
</section>

<h2>Unsettled work</h2>
<div id="unsettled-summary" class="meta"></div>
<table id="unsettled"><thead><tr>
  <th>kind</th><th>id</th><th>what</th><th>age</th><th>detail</th>
</tr></thead><tbody></tbody></table>

<h2>Recent dead letters</h2>
<table id="dead-letters"><thead><tr>
  <th>at</th><th>from</th><th>key</th><th>error</th>
</tr></thead><tbody></tbody></table>

<script>
"use strict";
const usd = v => (v === null || v === undefined) ? "-" : "$" + Number(v).toFixed(4);
const time = ms => ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-";
const secs = ms => (ms / 1000).toFixed(1) + " s";

function cell(row, field, text, cls) {
  const td = document.createElement("td");
  td.dataset.field = field;
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function against(td, value, limit, format) {
  if (limit === null || limit === undefined || limit <= 0) return;
  td.dataset.limit = String(limit);
  td.textContent += " / " + (format ? format(limit) : limit);
  const share = Math.min(1, value / limit);
  const bar = document.createElement("span");
  bar.className = "bar" + (share >= 0.8 ? " hot" : "");
  const fill = document.createElement("span");
  fill.style.width = (share * 100).toFixed(0) + "%";
  bar.appendChild(fill);
  td.appendChild(bar);
}

function fill(table, rows, render, emptyText) {
  const body = document.querySelector("#" + table + " tbody");
  body.replaceChildren();
  if (!rows.length) {
    const row = body.insertRow();
    const td = cell(row, "empty", emptyText, "empty");
    td.colSpan = document.querySelectorAll("#" + table + " th").length;
    return;
  }
  for (const item of rows) render(body.insertRow(), item);
}

function personas(all) {
  const names = Object.keys(all).sort();
  document.getElementById("persona-count").textContent = names.length + " bound";
  fill("personas", names.map(n => all[n]), (row, s) => {
    row.dataset.persona = s.name;
    const b = s.budget || {};
    cell(row, "name", s.name);
    cell(row, "state", s.state, "state-" + s.state);
    cell(row, "queued", s.queued_events, "num");
    against(cell(row, "spent_today_usd", usd(b.spent_today_usd), "num"), b.spent_today_usd, b.daily_usd, usd);
    against(cell(row, "spent_this_hour_usd", usd(b.spent_this_hour_usd), "num"), b.spent_this_hour_usd,
            b.hourly_usd, usd);
    against(cell(row, "tokens_today", b.tokens_today, "num"), b.tokens_today, b.max_tokens);
    cell(row, "last_run", s.last_run);
    cell(row, "next_run", s.next_scheduled_run);
    cell(row, "last_error", s.last_error || "");
  }, "no persona is bound");
}

function diagnostics(all) {
  const items = [];
  for (const name of Object.keys(all).sort()) {
    for (const d of all[name].diagnostics || []) items.push([name, d]);
  }
  fill("diagnostics", items, (row, [name, d]) => {
    row.dataset.persona = name;
    row.dataset.code = d.code;
    cell(row, "persona", name);
    cell(row, "severity", d.severity, "severity-" + d.severity);
    cell(row, "code", d.code);
    cell(row, "message", d.message);
  }, "no diagnostics");
}

function runs(items, now) {
  fill("runs", items, (row, r) => {
    row.dataset.run = r.run_id;
    const limits = r.limits || {};
    const link = document.createElement("a");
    link.href = "#run=" + encodeURIComponent(r.run_id);
    link.textContent = r.run_id;
    cell(row, "run_id", "").appendChild(link);
    cell(row, "persona", r.persona);
    cell(row, "status", r.status);
    cell(row, "attempt", r.attempt, "num");
    cell(row, "lease_expires_in", secs(Math.max(0, r.deadline_ms - now)), "num");
    against(cell(row, "steps", r.steps, "num"), r.steps, limits.max_steps);
    against(cell(row, "usage_tokens", r.usage_tokens, "num"), r.usage_tokens, limits.max_tokens);
    against(cell(row, "usage_usd", usd(r.usage_usd), "num"), r.usage_usd, limits.max_cost_usd, usd);
  }, "no run in flight");
}

// The tracing UI's page of a trace (PERSONAFLOW_TRACE_URL), or "" for none.
const TRACE_URL = __TRACE_URL__;

function steps(events, createdAt) {
  const byStep = new Map();
  for (const e of events) {
    const p = e.payload || {};
    if (!p.step_id || !e.kind.startsWith("run.step_")) continue;
    const step = byStep.get(p.step_id) || {step_id: p.step_id, name: p.name || "", start: null, end: null, ended: ""};
    if (e.kind === "run.step_started") { step.start = e.occurred_at_ms; if (p.name) step.name = p.name; }
    else { step.end = e.occurred_at_ms; step.ended = e.kind === "run.step_failed" ? "failed" : "completed"; }
    byStep.set(p.step_id, step);
  }
  const all = [...byStep.values()].filter(s => s.start !== null || s.end !== null);
  const last = Math.max(createdAt + 1, ...all.map(s => s.end ?? s.start));
  return all.map(s => ({...s, from: (s.start ?? s.end) - createdAt, span: last - createdAt}));
}

async function showRun(runId) {
  const path = "/runs/" + encodeURIComponent(runId);
  const detail = await json(path);
  const events = [];  // the run's stream as the worker keeps it, page by page
  for (let cursor = 1, more = true; more;) {
    const page = await json(path + "/events?limit=100&cursor=" + cursor);
    events.push(...page.events);
    more = page.has_more && page.next_cursor > cursor;
    cursor = page.next_cursor;
  }
  document.getElementById("run").hidden = false;
  document.getElementById("run-id").textContent = runId;
  document.getElementById("run-status").textContent = detail.status;
  document.getElementById("run-attempt").textContent = detail.attempt;
  const trace = document.getElementById("run-trace");
  const traceId = detail.trace ? detail.trace.trace_id : "";
  trace.textContent = traceId || "-";
  if (traceId && TRACE_URL) trace.href = TRACE_URL.replace("{trace_id}", encodeURIComponent(traceId));
  else trace.removeAttribute("href");
  fill("timeline", steps(events, detail.created_at_ms), (row, s) => {
    row.dataset.step = s.step_id;
    cell(row, "step_id", s.step_id);
    cell(row, "name", s.name);
    cell(row, "started_after", secs(s.from), "num");
    cell(row, "took", s.start !== null && s.end !== null ? secs(s.end - s.start) : "-", "num");
    cell(row, "ended", s.ended || "running");
    const lane = document.createElement("div");
    lane.className = "lane";
    const bar = document.createElement("span");
    bar.className = s.ended === "failed" ? "failed" : (s.end === null ? "open" : "");
    bar.style.left = (100 * s.from / s.span).toFixed(2) + "%";
    const width = s.start !== null && s.end !== null ? (s.end - s.start) : (s.span - s.from);
    bar.style.width = (100 * width / s.span).toFixed(2) + "%";
    lane.appendChild(bar);
    cell(row, "timeline", "").appendChild(lane);
  }, "no step reported yet");
  const decisions = events.filter(e => e.kind === "run.policy_decision");
  fill("policy", decisions, (row, e) => {
    const p = e.payload || {};
    cell(row, "seq", e.seq, "num");
    cell(row, "boundary", p.boundary);
    cell(row, "effect", p.effect);
    cell(row, "summary", p.summary);
  }, "no policy decision (the binding has no policy)");
  const answer = await json(path + "/bom");
  const bom = answer.bom;
  const names = items => (items || []).map(i => typeof i === "string" ? i : (i.id || JSON.stringify(i))).join(", ");
  const facts = bom === null ? [] : [
    ["workflow", bom.workflow], ["status", bom.status],
    ["attempts", (bom.attempts || []).map(a => a.attempt + " " + a.status).join(", ")],
    ["executors", names(bom.executors)], ["models", names(bom.models)], ["tools", names(bom.tools)],
    ["tokens", bom.tokens], ["cost", usd(bom.cost_usd)], ["checkpoints", (bom.checkpoints || []).length],
    ["policy decisions", (bom.policy_decisions || []).length], ["children", (bom.children || []).length],
    ["signature", answer.signature ? "signed, key " + answer.signature.kid : "unsigned"],
  ];
  fill("bom", facts, (row, [what, value]) => {
    row.dataset.what = what;
    cell(row, "what", what);
    cell(row, "value", value);
  }, "the run has not ended: its bill of materials comes with its end");
  document.body.dataset.run = runId;
  document.body.dataset.runEnded = bom === null ? "" : "1";
}

function shownRun() {
  const match = /^#run=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

const BUCKETS = [["queued_triggers", "queued"], ["suspended_subagents", "paused run"],
                 ["in_flight_llm_calls", "in flight"], ["partial_handoffs", "handoff"]];

function unsettled(u) {
  document.getElementById("unsettled-summary").textContent = u.summary;
  const items = [];
  for (const [bucket, label] of BUCKETS) for (const item of u[bucket] || []) items.push([label, item]);
  items.sort((a, b) => (a[1].queued_at_ms - b[1].queued_at_ms) || (a[1].id < b[1].id ? -1 : 1));
  fill("unsettled", items, (row, [label, item]) => {
    row.dataset.id = item.id;
    cell(row, "kind", label);
    cell(row, "id", item.id);
    cell(row, "what", item.spec_summary || item.payload_summary);
    cell(row, "age", secs(item.age_ms), "num");
    cell(row, "detail", [item.status, item.reason, item.to && ("to " + item.to),
                         item.attempt && ("attempt " + item.attempt)].filter(Boolean).join(", "));
  }, "no unsettled work");
}

function deadLetters(letters) {
  fill("dead-letters", letters, (row, d) => {
    cell(row, "at", time(d.at_ms));
    cell(row, "from", d.source_topic + "[" + d.partition + "]@" + d.offset);
    cell(row, "key", d.key);
    cell(row, "error", d.error);
  }, "no dead letter");
}

function audit(a) {
  const badge = document.getElementById("audit");
  const broken = a.broken_total || 0;
  if (broken) {
    badge.className = "badge broken";
    badge.textContent = broken + " broken chain" + (broken === 1 ? "" : "s");
  } else if (a.checkpoint) {
    badge.className = "badge ok";
    badge.textContent = "chains intact · checkpoint " + a.checkpoint.number + " at " + time(a.checkpoint.at_ms);
  } else {
    badge.className = "badge unknown";
    badge.textContent = a.watched ? "no report from the audit consumer yet" : "not watched";
  }
  badge.dataset.broken = String(broken);
  document.getElementById("chains").hidden = document.getElementById("chains-title").hidden = !broken;
  fill("chains", a.broken || [], (row, b) => {
    const td = cell(row, "stream", "");
    if (b.stream.startsWith("run:")) {
      const link = document.createElement("a");
      link.href = "#run=" + encodeURIComponent(b.stream.slice(4));
      link.textContent = b.stream;
      td.appendChild(link);
    } else td.textContent = b.stream;
    cell(row, "seq", b.seq === null || b.seq === undefined ? "-" : String(b.seq), "num");
    cell(row, "found", time(b.at_ms));
    cell(row, "detail", b.detail);
  }, "none");
}

// The token lives in this tab's sessionStorage only, and is sent with every fetch.
const TOKEN_KEY = "personaflow.token";

class Unauthorized extends Error {}

async function json(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? {Authorization: "Bearer " + token} : {};
  const response = await fetch(path, {cache: "no-store", headers});
  if (response.status === 401) throw new Unauthorized(token ? "wrong token" : "");
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function askForToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);  // refused: never send it again
  document.getElementById("login-error").textContent = message;
  document.getElementById("login").hidden = false;
  document.getElementById("token").focus();
}

document.getElementById("login").addEventListener("submit", event => {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  document.getElementById("login").hidden = true;
  refresh();
});

async function refresh() {
  if (!document.getElementById("login").hidden) return;  // waiting for the token: ask once
  try {
    const [all, u, letters, chains] = await Promise.all(
      [json("/personas"), json("/unsettled"), json("/dead-letters"), json("/audit")]);
    audit(chains);
    personas(all);
    diagnostics(all);
    runs(u.in_flight_llm_calls || [], u.at_ms);
    unsettled(u);
    deadLetters(letters);
    const runId = shownRun();
    if (runId) await showRun(runId);
    document.getElementById("updated").textContent = new Date().toISOString().slice(11, 19) + " UTC";
    document.getElementById("error").textContent = "";
    document.body.dataset.loaded = "1";
  } catch (err) {
    if (err instanceof Unauthorized) askForToken(err.message);
    else document.getElementById("error").textContent = String(err);
  }
}

window.addEventListener("hashchange", refresh);
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""


def dashboard_html(trace_url: str | None) -> str:
    """The page, knowing the tracing UI's URL template (as a JSON string: no markup)."""
    return DASHBOARD_HTML.replace("__TRACE_URL__", json.dumps(trace_url or "").replace("<", "\\u003c"))

"""The dashboard at ``/`` on every worker's web port: one static page over the JSON views.

No build step and no framework: the page fetches ``/personas``, ``/unsettled`` and
``/dead-letters`` every two seconds and fills five tables — personas (state, queue depth,
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
"""

from __future__ import annotations

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
  #login[hidden] { display: none; }
</style>
</head>
<body>
<h1>personaflow</h1>
<div class="meta">updated <span id="updated">never</span> <span id="error"></span></div>

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
    cell(row, "run_id", r.run_id);
    cell(row, "persona", r.persona);
    cell(row, "status", r.status);
    cell(row, "attempt", r.attempt, "num");
    cell(row, "lease_expires_in", secs(Math.max(0, r.deadline_ms - now)), "num");
    against(cell(row, "steps", r.steps, "num"), r.steps, limits.max_steps);
    against(cell(row, "usage_tokens", r.usage_tokens, "num"), r.usage_tokens, limits.max_tokens);
    against(cell(row, "usage_usd", usd(r.usage_usd), "num"), r.usage_usd, limits.max_cost_usd, usd);
  }, "no run in flight");
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
    const [all, u, letters] = await Promise.all([json("/personas"), json("/unsettled"), json("/dead-letters")]);
    personas(all);
    diagnostics(all);
    runs(u.in_flight_llm_calls || [], u.at_ms);
    unsettled(u);
    deadLetters(letters);
    document.getElementById("updated").textContent = new Date().toISOString().slice(11, 19) + " UTC";
    document.getElementById("error").textContent = "";
    document.body.dataset.loaded = "1";
  } catch (err) {
    if (err instanceof Unauthorized) askForToken(err.message);
    else document.getElementById("error").textContent = String(err);
  }
}

refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""

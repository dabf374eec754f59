/**
 * The operator dashboard: a static page plus a script that polls `GET /overview` (same-origin, the
 * session cookie authenticates) and redraws releases → locales → state, progress, cache hit rate, pool
 * utilisation and failures. Everything from the server is inserted with textContent, never as HTML.
 */

export const DASHBOARD_POLL_MS = 1_000;

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>marsign — releases</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/dashboard.css">
</head>
<body>
<header>
  <h1>marsign</h1>
  <nav><a href="/queues">BullMQ queues</a> · <a href="/metrics">metrics</a> · <a href="/__heartbeat__">heartbeat</a></nav>
</header>
<section id="summary" aria-label="summary">
  <div class="stat"><span class="label">workers</span><span id="workers" class="value">–</span></div>
  <div class="stat"><span class="label">cache hit rate</span><span id="hit-rate" class="value">–</span></div>
  <div class="stat"><span class="label">pool utilisation</span><span id="utilisation" class="value">–</span></div>
  <div class="stat"><span class="label">signing operations</span><span id="sign-ops" class="value">–</span></div>
  <div class="stat"><span class="label">updated</span><span id="updated" class="value">–</span></div>
</section>
<p id="conn-error" hidden></p>
<section id="liveness" aria-label="workers"><table id="heartbeats"></table></section>
<main id="releases"><p class="empty">Loading…</p></main>
<script src="/dashboard.js"></script>
</body>
</html>
`;

export const DASHBOARD_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5rem 2rem; color: #1d1d1f; }
header { display: flex; align-items: baseline; gap: 1.5rem; }
h1 { font-size: 1.4rem; }
#summary { display: flex; gap: 1rem; flex-wrap: wrap; margin-bottom: 1rem; }
.stat { border: 1px solid #ddd; border-radius: 6px; padding: .4rem .8rem; min-width: 8rem; }
.stat .label { display: block; color: #666; font-size: 12px; }
.stat .value { font-size: 1.2rem; font-variant-numeric: tabular-nums; }
.release { border: 1px solid #ccc; border-radius: 6px; margin: 0 0 1rem; padding: .5rem .8rem; }
.release h2 { font-size: 1.05rem; margin: .2rem 0 .4rem; display: flex; gap: 1rem; align-items: baseline; }
.state { font-size: 12px; padding: 1px 6px; border-radius: 4px; background: #eee; }
.state.completed { background: #d6f5d6; } .state.failed { background: #f8d0d0; }
.state.running, .state.active, .state.alive { background: #d8e8ff; } .state.retrying { background: #fff0c0; }
.state.stalled, .state.stale { background: #ffd9a8; }
#liveness { margin-bottom: 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 2px 8px; border-bottom: 1px solid #eee; font-variant-numeric: tabular-nums; }
progress { width: 10rem; }
.error { color: #a00000; }
#conn-error { color: #a00000; }
`;

export const DASHBOARD_JS = `'use strict';
(function () {
  var POLL_MS = ${DASHBOARD_POLL_MS};
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function pct(x) { return x === null || x === undefined ? '–' : (100 * x).toFixed(1) + '%'; }
  function secs(ms) {
    if (ms === null || ms === undefined) return '';
    var s = Math.round(ms / 1000);
    return s < 60 ? s + ' s' : Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  }
  function renderLocale(l) {
    var tr = el('tr', { 'data-locale': l.locale, 'data-state': l.state });
    tr.appendChild(el('td', null, l.locale));
    var st = el('td'); st.appendChild(el('span', { 'class': 'state ' + l.state }, l.state)); tr.appendChild(st);
    var p = l.progress || {};
    var done = l.result ? l.result.entries : (p.entriesDone || 0);
    var total = l.result ? l.result.entries : (p.entriesTotal || 0);
    var pc = el('td');
    var bar = el('progress', { max: String(total || 1), value: String(l.state === 'completed' ? (total || 1) : done) });
    pc.appendChild(bar);
    pc.appendChild(el('span', { 'class': 'entries' }, ' ' + done + '/' + total));
    tr.appendChild(pc);
    var hits = l.result ? l.result.hits : (p.hits || 0);
    var misses = l.result ? l.result.misses : (p.misses || 0);
    tr.appendChild(el('td', null, hits + ' / ' + misses));
    tr.appendChild(el('td', null, secs(l.durationMs)));
    tr.appendChild(el('td', { 'class': 'attempts' }, l.attempts));
    tr.appendChild(el('td', { 'class': 'worker' }, l.worker ? l.worker + (l.workerSeenMs !== undefined ? ' (beat ' + secs(l.workerSeenMs) + ' ago)' : '') : ''));
    var err = el('td', { 'class': 'error' });
    if (l.error) err.textContent = l.error.code + ': ' + l.error.message;
    tr.appendChild(err);
    return tr;
  }
  function renderRelease(r) {
    var div = el('section', { 'class': 'release', 'data-release': r.release, 'data-state': r.state });
    var h = el('h2');
    h.appendChild(el('span', null, r.release));
    h.appendChild(el('span', { 'class': 'state ' + r.state }, r.state));
    var t = r.totals;
    h.appendChild(el('small', null, t.completed + '/' + t.locales + ' locales · ' + t.entriesDone + '/' + t.entriesTotal +
      ' entries · hit rate ' + pct(t.hitRate) + (t.failed ? ' · ' + t.failed + ' failed' : '') +
      (r.state === 'running' ? ' · ETA ' + (r.etaMs === null ? '—' : secs(r.etaMs)) : '') + (r.durationMs ? ' · took ' + secs(r.durationMs) : '') +
      (r.client ? ' · by ' + r.client : '')));
    div.appendChild(h);
    if (r.error) div.appendChild(el('p', { 'class': 'error release-error' }, r.error.code + ': ' + r.error.message));
    var table = el('table');
    var head = el('tr');
    ['locale', 'state', 'progress', 'hits / misses', 'time', 'starts', 'worker', 'error'].forEach(function (c) { head.appendChild(el('th', null, c)); });
    table.appendChild(head);
    r.locales.forEach(function (l) { table.appendChild(renderLocale(l)); });
    div.appendChild(table);
    return div;
  }
  function renderHeartbeats(beats) {
    var t = document.getElementById('heartbeats');
    t.textContent = '';
    var head = el('tr');
    ['worker', 'state', 'last heartbeat', 'host', 'pid', 'threads', 'utilisation', 'active'].forEach(function (c) { head.appendChild(el('th', null, c)); });
    t.appendChild(head);
    (beats || []).forEach(function (w) {
      var tr = el('tr', { 'data-worker': w.id, 'data-state': w.state });
      tr.appendChild(el('td', null, w.id));
      var st = el('td'); st.appendChild(el('span', { 'class': 'state ' + w.state }, w.state)); tr.appendChild(st);
      tr.appendChild(el('td', { 'class': 'age' }, (w.ageMs < 1000 ? '<1 s' : secs(w.ageMs)) + ' ago'));
      tr.appendChild(el('td', null, w.host));
      tr.appendChild(el('td', null, w.pid));
      tr.appendChild(el('td', null, w.threads));
      tr.appendChild(el('td', null, pct(w.utilisation)));
      tr.appendChild(el('td', null, w.active.join(' ')));
      t.appendChild(tr);
    });
  }
  function render(o) {
    renderHeartbeats(o.heartbeats);
    document.getElementById('workers').textContent = String(o.workers.length);
    document.getElementById('hit-rate').textContent = pct(o.hitRate);
    document.getElementById('utilisation').textContent = pct(o.utilisation);
    document.getElementById('sign-ops').textContent = String(o.signOperations);
    document.getElementById('updated').textContent = new Date().toLocaleTimeString();
    var main = document.getElementById('releases');
    main.textContent = '';
    if (o.releases.length === 0) main.appendChild(el('p', { 'class': 'empty' }, 'No releases yet.'));
    o.releases.forEach(function (r) { main.appendChild(renderRelease(r)); });
  }
  function poll() {
    fetch('/overview', { credentials: 'same-origin', headers: { accept: 'application/json' } })
      .then(function (res) {
        if (!res.ok) throw new Error('HTTP ' + res.status);
        return res.json();
      })
      .then(function (o) { document.getElementById('conn-error').hidden = true; render(o); })
      .catch(function (e) {
        var c = document.getElementById('conn-error');
        c.hidden = false;
        c.textContent = 'Cannot load /overview: ' + e.message;
      })
      .then(function () { setTimeout(poll, POLL_MS); });
  }
  poll();
})();
`;

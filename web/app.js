// The Corral dashboard: one page, no dependencies. It logs in with a token (the head answers with an
// HttpOnly session cookie and a CSRF token kept here in memory), follows the cluster through
// server-sent events (/api/v1/events, a snapshot a second) and reads the REST API. Text from the
// cluster is always set as text, never parsed as HTML.
'use strict';

const state = {
  csrf: null, role: null, snapshot: null, events: null, page: 'overview', history: [],
  taskVersion: -1, selectedTask: null, queuesLoadedAt: 0, queueSettings: {},
};
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(method, path, body) {
  const headers = {};
  if (method !== 'GET') {
    if (state.csrf) headers['X-CSRF-Token'] = state.csrf;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
  }
  let r;
  try {
    r = await fetch(path, { method, headers, credentials: 'same-origin',
                            body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { status: 0, data: { error: { message: 'the head did not answer: ' + e.message } } };
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && path !== '/api/v1/login' && path !== '/api/v1/session') showLogin('The session ended; log in again.');
  return { status: r.status, data };
}

function errorText(r) {
  return (r.data && r.data.error && r.data.error.message) || ('HTTP ' + r.status);
}

// Formatting.
function bytes(n) {
  if (!n) return '0B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (n >= 10 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + units[i];
}
function num(x) { return Number.isInteger(x) ? String(x) : x.toFixed(x < 10 ? 2 : 1); }
// Ids of one client's tasks share their first 16 hex digits: show the start and the end.
function shortId(id) { return id.length > 16 ? id.slice(0, 6) + '…' + id.slice(-6) : id; }
function when(ns) { return ns ? new Date(ns / 1e6).toLocaleTimeString() : '-'; }
function duration(a, b) {
  if (!a) return '-';
  const s = ((b || Date.now() * 1e6) - a) / 1e9;
  return s < 1 ? (s * 1000).toFixed(0) + ' ms' : s < 120 ? s.toFixed(1) + ' s' : (s / 60).toFixed(1) + ' min';
}
function used(n, r) {
  const total = (n.resources || {})[r] || 0;
  const avail = (n.available || {})[r] || 0;
  return [total - avail, total];
}
function nodeState(n) {
  if (n.state === 'alive' && n.draining) return 'draining';
  if (n.state === 'alive' && !n.connected) return 'offline';
  return n.state;
}
function table(id, headers, rows) {
  const t = $(id);
  t.replaceChildren(el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))), el('tbody', {}, rows));
  if (!rows.length) t.tBodies[0].append(el('tr', {}, el('td', { colspan: headers.length, class: 'hint' }, 'none')));
}

// Login and the session.
function showLogin(message) {
  if (state.events) { state.events.close(); state.events = null; }
  state.csrf = null;
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('who').textContent = '';
  for (const s of document.querySelectorAll('section')) s.hidden = s.id !== 'login';
  $('login-error').textContent = message || '';
  $('token').focus();
}

async function loggedIn(session) {
  state.csrf = session.csrf;
  state.role = session.role;
  $('who').textContent = session.name + ' (' + session.role + ')';
  $('nav').hidden = false;
  $('logout').hidden = false;
  $('login').hidden = true;
  const h = await api('GET', '/api/v1/history');
  if (h.status === 200) state.history = h.data;
  follow();
  route();
}

function follow() {
  if (state.events) state.events.close();
  const es = new EventSource('/api/v1/events');
  state.events = es;
  es.addEventListener('snapshot', (e) => onSnapshot(JSON.parse(e.data)));
  es.onopen = () => { $('status-line').textContent = 'live'; };
  es.onerror = async () => {
    $('status-line').textContent = 'reconnecting...';
    if (es.readyState === EventSource.CLOSED && state.events === es) {
      const s = await api('GET', '/api/v1/session');
      if (s.status === 200 && s.data.logged_in) setTimeout(() => { if (state.events === es) follow(); }, 2000);
      else if (s.status === 200) showLogin('The session ended (logged out, expired, or its token was revoked); log in again.');
      else setTimeout(() => { if (state.events === es) follow(); }, 5000);  // the head is away: try again
    }
  };
}

// Pages.
function route() {
  const page = (location.hash || '#overview').slice(1);
  state.page = document.getElementById(page) && page !== 'login' ? page : 'overview';
  for (const s of document.querySelectorAll('section.page')) s.hidden = s.id !== state.page;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === state.page);
  if (state.page === 'tasks') loadTasks();
  if (state.page === 'queues') loadQueues();
  if (state.page === 'schedules') loadSchedules();
  if (state.snapshot) render();
}

function onSnapshot(s) {
  state.snapshot = s;
  const last = state.history[state.history.length - 1];
  if (!last || s.point.t - last.t >= 5) {
    state.history.push(s.point);
    if (state.history.length > 720) state.history.shift();
  }
  $('status-line').textContent = 'live · ' + new Date().toLocaleTimeString();
  render();
  if (state.page === 'tasks' && s.tasks.journal_version !== state.taskVersion) loadTasks();
  if (state.page === 'queues' && Date.now() - state.queuesLoadedAt > 5000) loadQueues();
}

function render() {
  if (state.page === 'overview') renderOverview();
  if (state.page === 'nodes') renderNodes();
  if (state.page === 'actors') renderActors();
}

function card(label, value, sub) {
  return el('div', { class: 'card' }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value),
            sub ? el('div', { class: 'sub' }, sub) : null);
}

function renderOverview() {
  const s = state.snapshot;
  const byState = {};
  for (const n of s.nodes) byState[nodeState(n)] = (byState[nodeState(n)] || 0) + 1;
  const p = s.point;
  $('cards').replaceChildren(
    card('Nodes', String(s.nodes.length), Object.entries(byState).map(([k, v]) => v + ' ' + k).join(', ') || 'none'),
    card('CPU', num(p.cpu_used) + ' / ' + num(p.cpu_total), 'used / total'),
    card('GPU', num(p.gpu_used) + ' / ' + num(p.gpu_total), 'used / total'),
    card('Memory', bytes(p.memory_used) + ' / ' + bytes(p.memory_total), 'reserved by tasks / total'),
    card('Tasks/s', num(p.tasks_per_s), num(p.failed_per_s) + ' failing/s'),
    card('Running', String(s.tasks.running), s.tasks.queued + ' queued, ' + s.tasks.waiting + ' waiting'),
    card('Finished', String(s.tasks.succeeded), 'since the head started'),
    card('Failed', String(s.tasks.failed), 'since the head started'),
  );
  chart('chart-tasks', 'legend-tasks', [['tasks/s', (q) => q.tasks_per_s], ['failed/s', (q) => q.failed_per_s]]);
  chart('chart-util', 'legend-util', [
    ['CPU', (q) => (q.cpu_total ? q.cpu_used / q.cpu_total : 0) * 100],
    ['GPU', (q) => (q.gpu_total ? q.gpu_used / q.gpu_total : 0) * 100],
    ['memory', (q) => (q.memory_total ? q.memory_used / q.memory_total : 0) * 100]], 100);
  table('overview-queues', ['Queue', 'Ready', 'Running', 'Oldest ready'],
        s.queues.map((q) => el('tr', {}, el('td', {}, q.name), el('td', {}, q.ready), el('td', {}, q.running),
                                el('td', {}, q.ready ? q.oldest_ready_s.toFixed(1) + ' s' : '-'))));
  $('infeasible').replaceChildren(...(s.infeasible.length
    ? [el('h2', {}, 'Cannot be scheduled'), el('ul', {}, s.infeasible.map((x) => el('li', { class: 'error' }, x)))] : []));
}

// A line chart of the last hour of history points, drawn as SVG polylines.
function chart(svgId, legendId, series, fixedMax) {
  const svg = $(svgId);
  const pts = state.history;
  const ns = 'http://www.w3.org/2000/svg';
  svg.replaceChildren();
  const colors = ['#2f6fde', '#c62828', '#2e7d32', '#b26a00'];
  let max = fixedMax || 0;
  if (!fixedMax) for (const [, f] of series) for (const q of pts) max = Math.max(max, f(q));
  max = max || 1;
  // The last hour, or since the head started when that is shorter (at least a minute wide).
  const t1 = pts.length ? pts[pts.length - 1].t : 0;
  const t0 = Math.min(t1 - 60, Math.max(t1 - 3600, pts.length ? pts[0].t : 0));
  const span = t1 - t0;
  series.forEach(([, f], i) => {
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', pts.filter((q) => q.t >= t0)
      .map((q) => ((q.t - t0) / span * 600).toFixed(1) + ',' + (155 - f(q) / max * 150).toFixed(1)).join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', colors[i]);
    line.setAttribute('stroke-width', '2');
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(line);
  });
  $(legendId).replaceChildren(...series.map(([name, f], i) => el('span', {},
    el('span', { class: 'swatch sw-' + i }), name + ' ' + (pts.length ? num(f(pts[pts.length - 1])) : '-')),
  ), el('span', {}, 'max ' + num(max)));
}

function renderNodes() {
  const s = state.snapshot;
  table('nodes-table', ['Node', 'Host', 'State', 'CPU', 'GPU', 'Memory', 'Labels', 'Tasks', 'Heartbeat', ''],
    s.nodes.map((n) => {
      const [cu, ct] = used(n, 'CPU'), [gu, gt] = used(n, 'GPU'), [mu, mt] = used(n, 'memory');
      const st = nodeState(n);
      const live = n.state === 'alive' || n.state === 'suspect';
      return el('tr', { 'data-node': n.node_id },
        el('td', { title: n.node_id }, n.node_id.slice(0, 8)), el('td', {}, n.hostname),
        el('td', { class: 'state state-' + st }, st),
        el('td', {}, num(cu) + '/' + num(ct)), el('td', {}, num(gu) + '/' + num(gt)),
        el('td', {}, bytes(mu) + '/' + bytes(mt)),
        el('td', {}, Object.entries(n.labels).map(([k, v]) => k + '=' + v).join(', ') || '-'),
        el('td', {}, n.running_tasks), el('td', {}, n.last_heartbeat_age_s.toFixed(1) + ' s ago'),
        el('td', {}, live && !n.draining
          ? el('button', { class: 'danger drain', type: 'button', 'data-node': n.node_id,
                           onclick: () => drain(n.node_id, n.hostname) }, 'Drain') : ''));
    }));
}

async function drain(id, host) {
  const out = $('drain-result');
  out.className = '';
  out.textContent = 'Draining ' + host + '...';
  const r = await api('POST', '/api/v1/nodes/' + encodeURIComponent(id) + '/drain');
  if (r.status === 202) {
    out.className = 'ok';
    out.textContent = 'Node ' + id.slice(0, 8) + ' (' + host + ') is draining: no new work; running tasks finish, then it leaves.';
  } else {
    out.className = 'error';
    out.textContent = 'Refused: ' + errorText(r);
  }
}

let tasksLoading = false, tasksAgain = false;
async function loadTasks() {
  if (tasksLoading) {  // a filter changed or tasks changed while loading: load once more after
    tasksAgain = true;
    return;
  }
  tasksLoading = true;
  tasksAgain = false;
  try {
    const q = new URLSearchParams({ limit: '200' });
    for (const [k, id] of [['state', 'filter-state'], ['function', 'filter-function'], ['queue', 'filter-queue'], ['node', 'filter-node']])
      if ($(id).value) q.set(k, $(id).value);
    const r = await api('GET', '/api/v1/runs?' + q);
    if (r.status !== 200) return;
    state.taskVersion = r.data.version;
    $('tasks-count').textContent = r.data.matched + ' matching of the ' + r.data.kept + ' most recent tasks' +
      (r.data.matched > r.data.tasks.length ? ' (newest ' + r.data.tasks.length + ' shown)' : '');
    table('tasks-table', ['Task', 'Function', 'Queue', 'State', 'Node', 'Attempts', 'Submitted', 'Duration', 'Error'],
      r.data.tasks.map((t) => el('tr', { class: 'clickable' + (t.id === state.selectedTask ? ' selected' : ''),
                                          'data-task': t.id, onclick: () => showTask(t.id) },
        el('td', { title: t.id }, shortId(t.id)), el('td', {}, t.function), el('td', {}, t.queue || '-'),
        el('td', { class: 'state state-' + t.state }, t.state), el('td', {}, t.node || '-'), el('td', {}, t.attempts),
        el('td', {}, when(t.submitted_ns)), el('td', {}, t.started_ns ? duration(t.started_ns, t.ended_ns) : '-'),
        el('td', { class: 'error' }, t.error_summary))));
    if (state.selectedTask) showTask(state.selectedTask, true);
  } finally {
    tasksLoading = false;
    if (tasksAgain) loadTasks();
  }
}

async function showTask(id, refresh) {
  state.selectedTask = id;
  const box = $('task-detail');
  const r = await api('GET', '/api/v1/runs/' + encodeURIComponent(id));
  if (r.status !== 200) {
    box.hidden = false;
    box.replaceChildren(el('p', { class: 'error' }, errorText(r)));
    return;
  }
  const t = r.data;
  const log = await api('GET', '/api/v1/runs/' + encodeURIComponent(id) + '/log');
  const parts = [
    el('h2', {}, 'Task ' + t.id),
    el('dl', {},
      el('dt', {}, 'Function'), el('dd', {}, t.function),
      el('dt', {}, 'Queue'), el('dd', {}, t.queue || '-'),
      el('dt', {}, 'State'), el('dd', { class: 'state state-' + t.state, id: 'task-state' }, t.state),
      el('dt', {}, 'Node'), el('dd', {}, t.node_id || '-'),
      el('dt', {}, 'Attempts'), el('dd', {}, t.attempts),
      el('dt', {}, 'Arguments'), el('dd', {}, t.args),
      el('dt', {}, 'Submitted'), el('dd', {}, when(t.submitted_ns)),
      el('dt', {}, 'Started'), el('dd', {}, when(t.started_ns)),
      el('dt', {}, 'Ended'), el('dd', {}, when(t.ended_ns)),
      el('dt', {}, 'Ran for'), el('dd', {}, t.started_ns ? duration(t.started_ns, t.ended_ns) : '-')),
  ];
  if (t.error) parts.push(el('h2', {}, t.state === 'retrying' ? 'Last failure' : 'Error'),
                          el('pre', { class: 'traceback', id: 'task-traceback' }, t.error));
  parts.push(el('h2', {}, 'Output'));
  if (log.status === 200) parts.push(el('pre', { class: 'log', id: 'task-log' }, log.data.text || '(nothing printed)'));
  else parts.push(el('p', { class: 'hint', id: 'task-log' }, errorText(log)));
  box.hidden = false;
  box.replaceChildren(...parts);
  if (!refresh) box.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
  for (const row of document.querySelectorAll('#tasks-table tr[data-task]'))
    row.classList.toggle('selected', row.dataset.task === id);
}

async function loadQueues() {
  state.queuesLoadedAt = Date.now();
  const r = await api('GET', '/api/v1/queues');
  if (r.status !== 200) return;
  table('queues-table', ['Queue', 'Weight', 'Concurrency', 'Rate/s', 'Labels', 'Resources', 'Ready', 'Waiting',
                         'Running', 'Succeeded', 'Failed', 'Slots'],
    r.data.map((q) => el('tr', {}, el('td', {}, q.name), el('td', {}, num(q.weight)),
      el('td', {}, q.concurrency || 'no limit'), el('td', {}, q.rate_per_s ? num(q.rate_per_s) : 'no limit'),
      el('td', {}, q.labels || '-'), el('td', {}, q.resources || '-'), el('td', {}, q.ready), el('td', {}, q.waiting),
      el('td', {}, q.running), el('td', {}, q.succeeded), el('td', {}, q.failed), el('td', {}, q.slots))));
}

async function loadSchedules() {
  const r = await api('GET', '/api/v1/schedules');
  if (r.status !== 200) return;
  table('schedules-table', ['Schedule', 'Function', 'When', 'Zone', 'Queue', 'State', 'Last fire', 'Next fire', ''],
    r.data.map((s) => el('tr', {}, el('td', {}, s.name), el('td', {}, s.function),
      el('td', {}, s.cron || ('every ' + s.every_s + ' s')), el('td', {}, s.tz), el('td', {}, s.queue),
      el('td', {}, s.paused ? 'paused' : 'active'),
      el('td', {}, s.last_slot_ns ? new Date(s.last_slot_ns / 1e6).toLocaleString() : '-'),
      el('td', {}, s.next_slot_ns ? new Date(s.next_slot_ns / 1e6).toLocaleString() : '-'),
      el('td', {}, el('button', { type: 'button', onclick: () => scheduleHistory(s.name) }, 'History')))));
}

async function scheduleHistory(name) {
  const r = await api('GET', '/api/v1/schedules/' + encodeURIComponent(name) + '/history');
  const box = $('schedule-history');
  if (r.status !== 200) { box.replaceChildren(el('p', { class: 'error' }, errorText(r))); return; }
  box.replaceChildren(el('h2', {}, 'History of ' + name), el('div', { class: 'scroll' }, el('table', { id: 'history-table' })));
  table('history-table', ['Slot', 'Fired', 'Task', 'State'], r.data.map((f) => el('tr', {},
    el('td', {}, new Date(f.slot_ns / 1e6).toLocaleString()), el('td', {}, new Date(f.fired_ns / 1e6).toLocaleString()),
    el('td', {}, f.task_id), el('td', { class: 'state' }, f.state))));
}

function renderActors() {
  const s = state.snapshot;
  table('actors-table', ['Actor', 'Class', 'Name', 'State', 'Node', 'PID', 'Restarts', 'Calls', 'Holds'],
    s.actors.map((a) => el('tr', {}, el('td', { title: a.actor_id }, a.actor_id.slice(0, 8)), el('td', {}, a.class_name),
      el('td', {}, a.name ? a.namespace + '/' + a.name : '-'), el('td', { class: 'state state-' + a.state }, a.state),
      el('td', {}, a.hostname || a.node_id.slice(0, 8)), el('td', {}, a.pid), el('td', {}, a.restarts),
      el('td', {}, a.running_calls + ' running, ' + a.pending_calls + ' waiting'),
      el('td', {}, Object.entries(a.resources).map(([k, v]) => k + ' ' + (k === 'memory' ? bytes(v) : num(v))).join(', ')))));
  table('gangs-table', ['Gang', 'Name', 'State', 'Strategy', 'Members', 'Why it waits'],
    s.gangs.map((g) => el('tr', {}, el('td', {}, g.gang_id.slice(0, 8)), el('td', {}, g.name || '-'),
      el('td', { class: 'state state-' + g.state }, g.state), el('td', {}, g.strategy),
      el('td', {}, g.members.map((m) => m.index + ': ' + (m.hostname || '-')).join('; ')), el('td', {}, g.reason || '-'))));
}

// Wiring.
document.addEventListener('DOMContentLoaded', async () => {
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const r = await api('POST', '/api/v1/login', { token: $('token').value });
    $('token').value = '';
    if (r.status === 200) loggedIn(r.data);
    else $('login-error').textContent = errorText(r);
  });
  $('logout').addEventListener('click', async () => {
    await api('POST', '/api/v1/logout');
    showLogin('Logged out.');
  });
  $('task-filter').addEventListener('input', () => loadTasks());
  $('task-filter').addEventListener('change', () => loadTasks());
  $('task-filter').addEventListener('submit', (e) => e.preventDefault());
  window.addEventListener('hashchange', route);
  const s = await api('GET', '/api/v1/session');
  if (s.status === 200 && s.data.logged_in && s.data.csrf) loggedIn(s.data);
  else showLogin();
});

// The big screen of cityops: counters, the device map, the case board with yellow and red
// lights, each case's timeline and recent tickets, kept live from GET /api/v1/changes.
//
// Everything comes from the daemon's own API (JSON by the protobuf JSON mapping: enums by
// name, 64-bit integers as strings, durations like "90s"). Nothing is fetched from anywhere
// else. The token comes from the URL fragment (#token=...) once and then lives in this
// tab's sessionStorage. Every API error is shown in the red bar under the header.
'use strict';

// ---------------------------------------------------------------------------------------
// Vocabulary
const STAGES = ['DISCOVERED', 'REGISTERED', 'DISPATCHED', 'HANDLED', 'VERIFIED', 'CLOSED'];
const STAGE_LABEL = {
  DISCOVERED: ['发现', 'discovered'], REGISTERED: ['立案', 'registered'],
  DISPATCHED: ['派遣', 'dispatched'], HANDLED: ['处置', 'handled'],
  VERIFIED: ['核查', 'verified'], CLOSED: ['结案', 'closed'],
};
const SOURCE_LABEL = {
  HOTLINE_12345: ['12345热线', '12345 hotline'], STREET_PATROL: ['街面巡查', 'street patrol'],
  RESIDENTIAL_STATION: ['居民区工作站', 'residential station'], IOT_RULE: ['物联感知', 'IoT'],
};
const SOURCE_COUNTER = {
  HOTLINE_12345: 'counter-source-hotline', STREET_PATROL: 'counter-source-patrol',
  RESIDENTIAL_STATION: 'counter-source-station', IOT_RULE: 'counter-source-iot',
};
const LEVEL_LABEL = {
  RESIDENTIAL_STATION: ['居民区', 'residential'], STREET_CENTER: ['街镇', 'street'],
  DISTRICT_CENTER: ['区', 'district'], CITY_CENTER: ['市', 'city'],
};
const SEVERITY_LABEL = {
  INFO: ['提示', 'info'], MINOR: ['一般', 'minor'], MAJOR: ['较重', 'major'], CRITICAL: ['严重', 'critical'],
};
const ROLE_LABEL = {
  VIEWER: ['查看', 'viewer'], OPERATOR: ['操作', 'operator'], SUPERVISOR: ['督办', 'supervisor'], ADMIN: ['管理', 'admin'],
};
const DEPARTMENT_LABEL = {
  'water-authority': '水务', 'city-management': '城管', 'market-supervision': '市场监管',
  'housing-construction': '住建', 'housing-management': '房管', 'elevator-maintenance': '电梯维保',
  'gas-company': '燃气', 'traffic-police': '交警',
};
const DISTRICTS = {
  310101: ['黄浦', 'Huangpu'], 310104: ['徐汇', 'Xuhui'], 310105: ['长宁', 'Changning'],
  310106: ['静安', "Jing'an"], 310107: ['普陀', 'Putuo'], 310109: ['虹口', 'Hongkou'],
  310110: ['杨浦', 'Yangpu'], 310112: ['闵行', 'Minhang'], 310113: ['宝山', 'Baoshan'],
  310114: ['嘉定', 'Jiading'], 310115: ['浦东', 'Pudong'], 310116: ['金山', 'Jinshan'],
  310117: ['松江', 'Songjiang'], 310118: ['青浦', 'Qingpu'], 310120: ['奉贤', 'Fengxian'],
  310151: ['崇明', 'Chongming'],
};
const EVENT_LABEL = {
  caseReported: ['上报', 'reported'], caseOpened: ['发现', 'discovered'],
  caseRegistered: ['立案', 'registered'], caseDispatched: ['派遣', 'dispatched'],
  caseHandled: ['处置', 'handled'], caseVerified: ['核查', 'verified'], caseClosed: ['结案', 'closed'],
  caseUrged: ['催办', 'urged'], caseEscalated: ['升级', 'escalated'], caseOverdue: ['超时', 'overdue'],
  caseLinked: ['关联', 'linked'], ticketIssued: ['派单', 'ticket issued'],
};
const MAP_COLORS = { none: '#2dd4bf', minor: '#facc15', major: '#fb923c', critical: '#ef4444', offline: '#64748b' };

// Chinese labels need a CJK font; without one (every glyph the same tofu box) the screen
// shows its English labels alone.
const CJK = (() => {
  const draw = (ch) => {
    const c = document.createElement('canvas');
    c.width = c.height = 24;
    const g = c.getContext('2d', { willReadFrequently: true });
    g.font = '20px sans-serif';
    g.fillText(ch, 2, 20);
    return g.getImageData(0, 0, 24, 24).data.join();
  };
  return draw('发') !== draw('现');
})();
if (!CJK) document.documentElement.classList.add('no-cjk');

const $ = (id) => document.getElementById(id);
const short = (value, prefix) => (value || '').replace(prefix, '');
const L = (zh, en) => (CJK ? `${zh} ${en}` : en);  // A label in both languages, or English.
const both = (pair, fallback) => (pair ? L(pair[0], pair[1]) : fallback || '—');
const zhOnly = (pair) => (CJK && pair ? pair[0] : '');
const stageOf = (v) => short(v, 'CASE_STAGE_');
const overdueOf = (v) => short(v, 'OVERDUE_LEVEL_').toLowerCase().replace('unspecified', '');
const num = (v) => Number(v || 0);
const fmtInt = (v) => num(v).toLocaleString('en-US');
const fmtPct = (r) => `${(100 * (r || 0)).toFixed(1)}%`;
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Bars drawn into HTML carry their width in data-width (percent); it is set here through the
// CSSOM, because the Content-Security-Policy refuses style="..." attributes.
function sizeBars(root) {
  for (const b of root.querySelectorAll('b[data-width]')) b.style.width = `${b.dataset.width}%`;
}
const seconds = (d) => (d ? parseFloat(d) : 0);  // "90.5s" -> 90.5
const ms = (t) => (t ? Date.parse(t) : NaN);

// "6d 23h 41m"; `compact` drops the minutes of a duration of days (for the board).
function fmtDuration(s, compact) {
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d) return compact ? `${d}d ${h}h` : `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
const pad = (n) => String(n).padStart(2, '0');
function fmtTime(t, withDate) {
  const d = new Date(t);
  if (isNaN(d)) return '—';
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}` : hms;
}
// A time of today (by the city clock) as HH:MM:SS, an older one as MM-DD HH:MM.
function fmtRecent(t) {
  const d = new Date(t), now = new Date(isNaN(cityNow) ? Date.now() : cityNow);
  if (isNaN(d)) return '—';
  if (d.toDateString() === now.toDateString()) return fmtTime(t);
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
function districtName(code) {
  const d = DISTRICTS[(code || '').slice(0, 6)];
  return d ? (CJK ? d[0] : d[1]) : (code || '').slice(0, 6);
}
function unitText(u) {
  if (!u) return '';
  const level = LEVEL_LABEL[short(u.level, 'GRID_LEVEL_')];
  const code = u.code && (!level || u.code !== level[1]) ? u.code : '';  // not "city city"
  const area = `${level ? both(level) : ''} ${code}`.trim();
  if (!u.department) return area;
  // A department's crew (处置 unit) for that area: "water-authority crew, city center".
  const dept = `${u.department}${CJK && DEPARTMENT_LABEL[u.department] ? ` ${DEPARTMENT_LABEL[u.department]}` : ''}`;
  return `${dept} ${L('处置队', 'crew')}, ${area}`;
}

// ---------------------------------------------------------------------------------------
// Token, API calls and visible errors
let token = null;
let cityNow = NaN;  // The newest event time seen: the city's clock (simulated in a demo).

function takeToken() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    sessionStorage.setItem('cityops.token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem('cityops.token');
}

const errors = new Map();  // what -> message; one line each in #errors
function showError(what, message) {
  errors.set(what, message);
  renderErrors();
}
function clearError(what) {
  if (errors.delete(what)) renderErrors();
}
function renderErrors() {
  const box = $('errors');
  box.hidden = errors.size === 0;
  box.innerHTML = [...errors].map(([what, msg]) =>
    `<div><code>${esc(what)}</code><span>${esc(msg)}</span><button type="button" data-what="${esc(what)}">×</button></div>`).join('');
}
$('errors').addEventListener('click', (e) => {
  if (e.target.dataset.what) clearError(e.target.dataset.what);
});

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function readError(res) {
  let code = `HTTP ${res.status}`, message = res.statusText || 'request failed';
  try {
    const body = await res.json();
    if (body && body.error) { code = body.error.code || code; message = body.error.message || message; }
  } catch (_) { /* not JSON */ }
  return new ApiError(res.status, code, message);
}

// GET a path of the API; on failure shows the API's error message and throws.
async function api(path, opts = {}) {
  const what = `GET ${path.split('?')[0]}`;
  let res;
  try {
    res = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, signal: opts.signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    showError(what, `cannot reach the daemon (${e.message})`);
    throw e;
  }
  if (!res.ok) {
    const err = await readError(res);
    showError(what, `${err.code}: ${err.message}`);
    if (res.status === 401) askToken(err.message);
    throw err;
  }
  clearError(what);
  return opts.raw ? res : res.json();
}

function askToken(reason) {
  if (reason) $('token-reason').textContent = reason;
  $('token-prompt').hidden = false;
  $('token-input').focus();
}
$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const t = $('token-input').value.trim();
  if (!t) return;
  sessionStorage.setItem('cityops.token', t);
  location.reload();
});
// A new #token=... in the address bar of an open dashboard: start again with it.
window.addEventListener('hashchange', () => { if (/token=/.test(location.hash)) location.reload(); });
$('signout').addEventListener('click', () => {
  sessionStorage.removeItem('cityops.token');
  location.reload();
});

// Runs `fn` at most once per `interval` ms, the last call winning; never two at once.
function throttled(fn, interval) {
  let last = 0, timer = null, running = false, again = false;
  const run = async () => {
    timer = null;
    if (running) { again = true; return; }
    running = true;
    last = Date.now();
    try { await fn(); } catch (e) { if (!(e instanceof ApiError)) console.warn(e); }
    running = false;
    if (again) { again = false; schedule(); }
  };
  const schedule = () => {
    if (timer) return;
    timer = setTimeout(run, Math.max(0, last + interval - Date.now()));
  };
  return schedule;
}

// ---------------------------------------------------------------------------------------
// Counters
function renderStatistics(s) {
  const set = (id, v) => { $(id).textContent = v; };
  set('counter-cases-total', fmtInt(s.casesTotal));
  set('counter-yellow', fmtInt(s.overdueYellow));
  set('counter-red', fmtInt(s.overdueRed));
  set('counter-close-rate', fmtPct(s.closeRate));
  set('counter-on-time-rate', num(s.closed) ? fmtPct(s.onTimeCloseRate) : '—');
  set('counter-devices-online', fmtInt(s.devicesOnline));
  set('counter-devices-total', fmtInt(s.devicesTotal));
  set('counter-alerts-active', fmtInt(s.alertsActive));
  set('counter-tickets', fmtInt(s.ticketsTotal));
  set('counter-handled-street', fmtInt(s.handledAtStreetLevel));
  set('counter-dispatched-district', fmtInt(s.dispatchedByDistrict));
  set('counter-urged', fmtInt(s.urged));

  const bySource = Object.fromEntries((s.bySource || []).map((c) => [short(c.key, 'CASE_SOURCE_'), num(c.count)]));
  const maxSource = Math.max(1, ...Object.values(bySource));
  for (const [key, id] of Object.entries(SOURCE_COUNTER)) {
    const n = bySource[key] || 0;
    set(id, fmtInt(n));
    $(id).parentElement.querySelector('.bar b').style.width = `${(100 * n) / maxSource}%`;
  }
  const byStage = Object.fromEntries((s.byStage || []).map((c) => [stageOf(c.key), num(c.count)]));
  for (const st of STAGES) set(`counter-stage-${st.toLowerCase()}`, fmtInt(byStage[st] || 0));

  const districts = (s.byDistrict || []).map((c) => [c.key, num(c.count)]);
  const maxDistrict = Math.max(1, ...districts.map((d) => d[1]));
  $('districts').innerHTML = districts.map(([code, n]) =>
    `<li><span class="name">${esc(zhOnly(DISTRICTS[code]))} <i>${esc(DISTRICTS[code] ? DISTRICTS[code][1] : code)}</i></span>` +
    `<span class="bar"><b data-width="${(100 * n) / maxDistrict}"></b></span><span class="n">${fmtInt(n)}</span></li>`).join('');
  sizeBars($('districts'));
  openCases = num(s.casesTotal) - num(s.closed);
  renderBoardInfo();
}
const loadStatistics = async () => renderStatistics(await api('/api/v1/statistics'));

// ---------------------------------------------------------------------------------------
// Department league: per department the open cases, how many are yellow and red now, the
// on-time close rate and the mean handling time since the log began, worst on-time close
// rate first (the daemon sorts: GET /api/v1/statistics?by=department, the figures of
// `cityops stats`, docs/analysis.md). Cases not yet dispatched have no department: last.
function renderLeague(e) {
  const groups = (e.groups || []).slice();
  const undispatched = groups.filter((g) => !g.key);
  const rows = groups.filter((g) => g.key).concat(undispatched);
  const rated = rows.filter((g) => g.key && g.figures && g.figures.onTimeCloseRate !== undefined);
  const worst = rated.length && rated[0].figures.onTimeCloseRate < 0.95 ? rated[0].key : null;
  let rank = 0;
  $('league-rows').innerHTML = rows.map((g) => {
    const f = g.figures || {};
    const cell = (n, cls) => `<td class="${cls}${num(n) ? ' lit' : ' zero'}">${fmtInt(n)}</td>`;
    const r = f.onTimeCloseRate;
    const rate = r === undefined
      ? '<td><span class="rate"><span>—</span></span></td>'
      : `<td><span class="rate ${r < 0.8 ? 'poor' : r < 0.95 ? 'fair' : 'good'}">` +
        `<span class="bar"><b data-width="${(100 * r).toFixed(1)}"></b></span><span>${fmtPct(r)}</span></span></td>`;
    const h = f.handlingTime || {};
    const name = g.key
      ? `${esc(CJK ? DEPARTMENT_LABEL[g.key] || '' : '')}<i>${esc(g.key)}</i>`
      : `<i>${esc(L('未派遣', 'not yet dispatched'))}</i>`;
    const cls = `league-row${g.key === worst ? ' worst' : ''}${g.key ? '' : ' undispatched'}`;
    return `<tr class="${cls}" data-department="${esc(g.key)}">` +
      `<td class="rank">${g.key ? ++rank : ''}</td><td class="dept" title="${esc(g.key || g.name)}">${name}</td>` +
      `<td class="open">${fmtInt(f.open)}</td>${cell(f.openYellow, 'yellow')}${cell(f.openRed, 'red')}${rate}` +
      `<td class="time">${num(h.count) ? fmtDuration(seconds(h.mean), true) : '—'}</td></tr>`;
  }).join('');
  sizeBars($('league-rows'));
  $('league-info').textContent = `${L('自', 'since')} ${fmtRecent(e.from)} · ${fmtInt((e.total || {}).found)} ` +
    `${L('件', 'cases')} · ${L('截至', 'as of')} ${fmtTime(e.to)}`;
}
async function loadLeague() {
  const s = await api('/api/v1/statistics?by=department');
  if (s.evaluation) renderLeague(s.evaluation);
}
// Follows the counters (a `statistics` change every 2 s), at most every 10 s.
const scheduleLeague = throttled(loadLeague, 10000);

// ---------------------------------------------------------------------------------------
// Device kinds, from the catalogue in force (GET /api/v1/catalogue): their names in both
// languages, departments and metrics with labels and units. No kind is named here.
let kinds = [];  // DeviceKindSpec as JSON, in the catalogue's order.
const kindById = new Map();
// A map point's or device view's kind id; an old daemon's typed kind as its id.
const kindIdOf = (d) => d.kindId || short(d.kind, 'DEVICE_KIND_').toLowerCase().replace('unspecified', '');
const kindLabel = (id) => {
  const k = kindById.get(id);
  return k && k.name ? L(k.name.zh, k.name.en) : id || '—';
};
const metricLabel = (m) => (m.label ? L(m.label.zh, m.label.en) : m.name);
const camel = (name) => name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());

async function loadCatalogue() {
  const c = (await api('/api/v1/catalogue')).catalogue || {};
  kinds = c.kinds || [];
  kindById.clear();
  for (const k of kinds) kindById.set(k.id, k);
  renderKinds();
}

// The kinds' legend: devices online / devices of the kind, every kind of the catalogue
// (also those without devices), then any kind on the map the catalogue does not list.
function renderKinds() {
  const count = new Map(kinds.map((k) => [k.id, { total: 0, online: 0 }]));
  for (const p of mapPoints) {
    const id = kindIdOf(p);
    if (!count.has(id)) count.set(id, { total: 0, online: 0 });
    const c = count.get(id);
    c.total++;
    if (p.online) c.online++;
  }
  $('kinds').innerHTML = [...count].map(([id, c]) => {
    const k = kindById.get(id);
    const title = k ? `${k.department} · ${(k.metrics || []).map((m) => `${m.label ? m.label.en : m.name}${m.unit ? ` (${m.unit})` : ''}`).join(', ')}` : id;
    const name = k && k.name ? `<span class="zh">${esc(k.name.zh)}</span> <span>${esc(k.name.en)}</span>` : `<span>${esc(id)}</span>`;
    return `<li data-kind="${esc(id)}" class="${c.total ? '' : 'empty'}" title="${esc(title)}">${name} ` +
      `<b data-online="${c.online}" data-total="${c.total}">${fmtInt(c.online)}/${fmtInt(c.total)}</b></li>`;
  }).join('');
}
$('kinds').addEventListener('click', (e) => {
  const li = e.target.closest('li[data-kind]');
  if (li) openKind(li.dataset.kind);
});

// The value of metric `m` in a reading (JSON), shown with the metric's codes' names:
// a typed reading carries it in its kind's message, any other by name in `values`.
function metricValue(reading, kind, m) {
  if (!reading) return undefined;
  let v;
  if (reading.values) {
    const mv = (reading.values.values || []).find((x) => x.name === m.name);
    if (!mv) return undefined;
    v = m.repeated ? mv.codes || [] : mv.number ?? mv.flag ?? mv.code ?? mv.count;
  } else {
    const msg = reading[camel(kind.id)];
    v = msg ? msg[camel(m.name)] : undefined;
  }
  if (v === undefined || v === null) return undefined;
  const codeName = (c) => {
    const found = (m.codes || []).find((x) => String(x.value) === String(c));
    return found ? found.name : String(c);
  };
  if (Array.isArray(v)) return v.length ? v.map(codeName).join(', ') : '—';
  if (typeof v === 'boolean') return v ? L('是', 'yes') : L('否', 'no');
  if (short(m.type, 'METRIC_TYPE_') === 'CODE') return codeName(v);
  const n = Number(v);
  return Number.isFinite(n) ? `${Number.isInteger(n) ? n : n.toFixed(2)}` : String(v);
}

let openKindId = null;
async function openKind(id) {
  openKindId = id;
  const k = kindById.get(id) || { id, metrics: [] };
  $('kind-title').innerHTML = k.name
    ? `<span class="zh">${esc(k.name.zh)}</span> ${esc(k.name.en)} <small><code>${esc(id)}</code></small>`
    : esc(id);
  $('kind-sub').textContent = k.department
    ? `${CJK && DEPARTMENT_LABEL[k.department] ? `${DEPARTMENT_LABEL[k.department]} ` : ''}${k.department} · ` +
      `${L('上报周期', 'reports every')} ${fmtDuration(seconds(k.reportingInterval))}`
    : '';
  const metrics = k.metrics || [];
  $('kind-devices').tHead.innerHTML = `<tr><th>${L('设备', 'device')}</th><th>${L('状态', 'state')}</th>` +
    `<th>${L('网格', 'grid')}</th><th>${L('最近上报', 'last seen')}</th>` +
    metrics.map((m) => `<th data-metric="${esc(m.name)}">${esc(metricLabel(m))}${m.unit ? `<small>${esc(m.unit)}</small>` : ''}</th>`).join('') + '</tr>';
  const body = $('kind-devices').tBodies[0];
  body.innerHTML = `<tr><td colspan="${4 + metrics.length}">${L('加载中', 'loading')}…</td></tr>`;
  $('kind-count').textContent = '';
  $('kind-detail').hidden = false;
  try {
    const list = await api(`/api/v1/devices?kind=${encodeURIComponent(id)}&page_size=200`);
    if (openKindId !== id) return;
    const devices = list.devices || [];
    $('kind-count').textContent = `${fmtInt(devices.length)}${list.nextPageToken ? '+' : ''}`;
    body.innerHTML = devices.length ? devices.map((d) => {
      const state = d.online ? L('在线', 'online') : L('离线', 'offline');
      const cells = metrics.map((m) => {
        const v = metricValue(d.lastReading, k, m);
        return `<td class="num" data-metric="${esc(m.name)}">${esc(v === undefined ? '—' : v)}</td>`;
      }).join('');
      return `<tr data-device-id="${esc(d.deviceId)}" class="${d.online ? 'online' : 'offline'}">` +
        `<td><code>${esc(d.deviceId)}</code>${d.registration && d.registration.name ? ` ${esc(d.registration.name)}` : ''}</td>` +
        `<td>${state}</td><td><code>${esc(d.registration && d.registration.grid ? d.registration.grid.gridCode : '')}</code></td>` +
        `<td>${d.lastSeen ? fmtRecent(d.lastSeen) : '—'}</td>${cells}</tr>`;
    }).join('') : `<tr><td colspan="${4 + metrics.length}">${L('暂无设备', 'no devices of this kind')}</td></tr>`;
  } catch (e) {
    body.innerHTML = `<tr><td colspan="${4 + metrics.length}">${esc(e.message)}</td></tr>`;
  }
}
function closeKind() {
  openKindId = null;
  $('kind-detail').hidden = true;
}
$('kind-close').addEventListener('click', closeKind);
$('kind-detail').addEventListener('click', (e) => { if (e.target === $('kind-detail')) closeKind(); });
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeKind(); });

// ---------------------------------------------------------------------------------------
// The map: every device as a dot, projected from lat/lon onto a canvas, bounds fitted.
let mapPoints = [];
let drawnPoints = [];  // [x, y, point] of the dots drawn, for hovering.
const mapCanvas = $('map');

function mapState(p) {
  if (!p.online) return 'offline';
  switch (short(p.alertSeverity, 'SEVERITY_')) {
    case 'CRITICAL': return 'critical';
    case 'MAJOR': return 'major';
    case 'MINOR': case 'INFO': return 'minor';
    default: return 'none';
  }
}

function hull(points) {  // Convex hull (monotone chain) of [x, y] pairs.
  const p = points.slice().sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  if (p.length < 3) return p;
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const lower = [], upper = [];
  for (const q of p) {
    while (lower.length >= 2 && cross(lower[lower.length - 2], lower[lower.length - 1], q) <= 0) lower.pop();
    lower.push(q);
  }
  for (const q of p.slice().reverse()) {
    while (upper.length >= 2 && cross(upper[upper.length - 2], upper[upper.length - 1], q) <= 0) upper.pop();
    upper.push(q);
  }
  return lower.slice(0, -1).concat(upper.slice(0, -1));
}

function drawMap() {
  const dpr = window.devicePixelRatio || 1;
  const w = mapCanvas.clientWidth, h = mapCanvas.clientHeight;
  if (!w || !h) return;
  mapCanvas.width = Math.round(w * dpr);
  mapCanvas.height = Math.round(h * dpr);
  const g = mapCanvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);

  const pts = mapPoints.filter((p) => p.registered !== false && (p.latitudeDeg || p.longitudeDeg));
  drawnPoints = [];
  const counts = { none: 0, minor: 0, major: 0, critical: 0, offline: 0 };
  if (pts.length) {
    let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
    for (const p of pts) {
      minLat = Math.min(minLat, p.latitudeDeg); maxLat = Math.max(maxLat, p.latitudeDeg);
      minLon = Math.min(minLon, p.longitudeDeg); maxLon = Math.max(maxLon, p.longitudeDeg);
    }
    // Equirectangular around the middle latitude, the whole city fitted with a margin.
    const k = Math.cos((((minLat + maxLat) / 2) * Math.PI) / 180);
    const spanX = Math.max((maxLon - minLon) * k, 1e-3), spanY = Math.max(maxLat - minLat, 1e-3);
    const margin = 24, scale = Math.min((w - 2 * margin) / spanX, (h - 2 * margin) / spanY);
    const ox = (w - spanX * scale) / 2, oy = (h - spanY * scale) / 2;
    const xy = (p) => [ox + (p.longitudeDeg - minLon) * k * scale, oy + (maxLat - p.latitudeDeg) * scale];

    // Faint graticule every 0.05 degrees.
    g.strokeStyle = 'rgba(56,189,248,0.07)';
    g.lineWidth = 1;
    for (let lon = Math.ceil(minLon * 20) / 20; lon <= maxLon; lon += 0.05) {
      const [x] = xy({ longitudeDeg: lon, latitudeDeg: minLat });
      g.beginPath(); g.moveTo(x, 0); g.lineTo(x, h); g.stroke();
    }
    for (let lat = Math.ceil(minLat * 20) / 20; lat <= maxLat; lat += 0.05) {
      const [, y] = xy({ longitudeDeg: minLon, latitudeDeg: lat });
      g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
    }

    // Districts: the hull of their devices, named at the centroid.
    const byDistrict = new Map();
    for (const p of pts) {
      const d = (p.gridCode || '').slice(0, 6);
      if (!byDistrict.has(d)) byDistrict.set(d, []);
      byDistrict.get(d).push(xy(p));
    }
    for (const [code, list] of byDistrict) {
      const poly = hull(list);
      if (poly.length >= 3) {
        g.beginPath();
        poly.forEach(([x, y], i) => (i ? g.lineTo(x, y) : g.moveTo(x, y)));
        g.closePath();
        g.fillStyle = 'rgba(56,189,248,0.05)';
        g.strokeStyle = 'rgba(56,189,248,0.25)';
        g.fill(); g.stroke();
      }
    }

    // Dots: quiet ones first, the worst on top.
    const order = ['none', 'offline', 'minor', 'major', 'critical'];
    const radius = { none: 1.8, offline: 2, minor: 2.6, major: 3, critical: 4.2 };
    const groups = Object.fromEntries(order.map((s) => [s, []]));
    for (const p of pts) {
      const at = xy(p);
      groups[mapState(p)].push(at);
      drawnPoints.push([at[0], at[1], p]);
    }
    for (const s of order) {
      counts[s] = groups[s].length;
      g.fillStyle = MAP_COLORS[s];
      g.globalAlpha = s === 'none' ? 0.55 : 0.95;
      g.shadowColor = MAP_COLORS[s];
      g.shadowBlur = s === 'critical' ? 8 : 0;
      for (const [x, y] of groups[s]) {
        g.beginPath(); g.arc(x, y, radius[s], 0, 2 * Math.PI); g.fill();
      }
    }
    g.globalAlpha = 1;
    g.shadowBlur = 0;

    g.font = 'bold 14px "Noto Sans CJK SC", sans-serif';
    g.textAlign = 'center';
    const placed = [];  // Label boxes drawn so far: a label that would overlap moves down.
    for (const [code, list] of byDistrict) {
      if (!DISTRICTS[code]) continue;
      const name = CJK ? DISTRICTS[code][0] : DISTRICTS[code][1];
      const cx = list.reduce((a, q) => a + q[0], 0) / list.length;
      let cy = list.reduce((a, q) => a + q[1], 0) / list.length;
      const half = g.measureText(name).width / 2 + 2;
      const hits = () => placed.some((b) => Math.abs(b[0] - cx) < b[1] + half && Math.abs(b[2] - cy) < 16);
      for (let i = 0; i < 4 && hits(); i++) cy += 16;
      placed.push([cx, half, cy]);
      g.fillStyle = 'rgba(0,0,0,0.55)';
      g.fillText(name, cx + 1, cy + 1);
      g.fillStyle = 'rgba(230,240,250,0.85)';
      g.fillText(name, cx, cy);
    }
  }
  for (const [s, n] of Object.entries(counts)) $(`legend-${s}`).textContent = fmtInt(n);
  mapCanvas.dataset.points = String(pts.length);
  mapCanvas.dataset.alerting = String(counts.minor + counts.major + counts.critical);
  $('map-info').textContent = `${fmtInt(pts.length)} ${L('台', 'devices')}`;
}

// Hovering a dot names its device and its kind (the catalogue's names) and state.
mapCanvas.addEventListener('mousemove', (e) => {
  const r = mapCanvas.getBoundingClientRect();
  const x = e.clientX - r.left, y = e.clientY - r.top;
  let best = null, bestD = 64;  // Within 8 px.
  for (const [px, py, p] of drawnPoints) {
    const d = (px - x) ** 2 + (py - y) ** 2;
    if (d < bestD) { best = p; bestD = d; }
  }
  mapCanvas.title = best
    ? `${kindLabel(kindIdOf(best))} · ${best.deviceId} · ${best.online ? L('在线', 'online') : L('离线', 'offline')}` +
      `${mapState(best) !== 'none' && mapState(best) !== 'offline' ? ` · ${both(SEVERITY_LABEL[short(best.alertSeverity, 'SEVERITY_')])}` : ''}`
    : '';
});

const loadMap = async () => {
  mapPoints = (await api('/api/v1/map')).points || [];
  drawMap();
  renderKinds();
};
const refreshMap = throttled(loadMap, 2000);
window.addEventListener('resize', () => drawMap());

// ---------------------------------------------------------------------------------------
// The case board: open cases, the lit ones first, patched live from case events.
const board = new Map();  // case id -> CaseView (possibly partial, from events)
let openCases = 0;
const BOARD_ROWS = 120;

function advanceClock(t) {
  const v = ms(t);
  if (!isNaN(v) && !(v <= cityNow)) {
    cityNow = v;
    $('clock-time').textContent = fmtTime(v, true);
  }
}

function boardOrder(a, b) {
  const rank = (c) => ({ red: 0, yellow: 1 })[overdueOf(c.overdue)] ?? 2;
  const ra = rank(a), rb = rank(b);
  if (ra !== rb) return ra - rb;
  if (ra < 2) return (ms(a.deadline?.dueTime) || 0) - (ms(b.deadline?.dueTime) || 0);  // longest overdue first
  return (ms(b.stageTime) || 0) - (ms(a.stageTime) || 0);  // newest first
}

// The cells of a case's row.
function caseCells(c) {
  const light = overdueOf(c.overdue);
  const stage = stageOf(c.stage);
  const dept = c.dispatchedDepartment || c.department || '';
  const inStage = isNaN(cityNow) || !c.stageTime ? '' : fmtDuration((cityNow - ms(c.stageTime)) / 1000, true);
  const what = c.category?.name || c.caseId;
  return `<td><span class="light ${light ? `light-${light}` : 'light-none'}" title="${light ? `overdue: ${light}` : 'on time'}"></span></td>` +
    `<td class="what">${esc(what)}${c.urges ? `<span class="urged" title="urged">${CJK ? '催办' : 'urged '}×${c.urges}</span>` : ''}<small title="${esc(c.caseId)}">${esc(c.description || c.caseId)}</small></td>` +
    `<td><span class="stage-tag">${esc(both(STAGE_LABEL[stage], stage))}</span></td>` +
    `<td>${esc(districtName(c.grid?.gridCode || c.grid?.districtCode))}<small>${esc(c.grid?.gridCode || '')}</small></td>` +
    `<td title="${esc(dept)}">${CJK && DEPARTMENT_LABEL[dept] ? `${esc(DEPARTMENT_LABEL[dept])}<small>${esc(dept)}</small>` : esc(dept)}</td>` +
    `<td class="when">${inStage}</td>`;
}

// The rows to show: red, yellow and unlit cases each get a share of the board, so that
// many reds never hide every yellow; a share left unused goes to the others.
function boardRows() {
  const open = [...board.values()].filter((c) => stageOf(c.stage) !== 'CLOSED' && !c.linkedTo).sort(boardOrder);
  const groups = { red: [], yellow: [], '': [] };
  for (const c of open) groups[overdueOf(c.overdue)]?.push(c);
  const share = Math.floor(BOARD_ROWS / 3);
  const shown = [...groups.red.slice(0, share), ...groups.yellow.slice(0, share), ...groups[''].slice(0, share)];
  const rest = [...groups.red.slice(share), ...groups.yellow.slice(share), ...groups[''].slice(share)];
  return shown.concat(rest.slice(0, Math.max(0, BOARD_ROWS - shown.length))).sort(boardOrder);
}

// Rows are kept per case and only rewritten when they change, so that a row under the
// pointer (or a test's click) survives the live updates.
const rowEls = new Map();  // case id -> { el, html }
function renderBoard() {
  const rows = boardRows();
  const tbody = $('cases');
  const keep = new Set();
  let prev = null;
  for (const c of rows) {
    let r = rowEls.get(c.caseId);
    if (!r) {
      r = { el: document.createElement('tr'), html: '' };
      r.el.className = 'case-row';
      r.el.dataset.caseId = c.caseId;
      rowEls.set(c.caseId, r);
    }
    const html = caseCells(c);
    if (html !== r.html) {
      r.el.innerHTML = html;
      r.html = html;
      r.el.dataset.stage = stageOf(c.stage).toLowerCase();
      r.el.dataset.overdue = overdueOf(c.overdue) || 'none';
    }
    if (c.fresh) {  // Flash a row that just changed.
      r.el.classList.remove('fresh');
      void r.el.offsetWidth;
      r.el.classList.add('fresh');
      c.fresh = false;
    }
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== r.el) tbody.insertBefore(r.el, want);
    prev = r.el;
    keep.add(c.caseId);
  }
  for (const [id, r] of rowEls) {
    if (!keep.has(id)) { r.el.remove(); rowEls.delete(id); }
  }
  boardShown = rows.length;
  renderBoardInfo();
}
let boardShown = 0;
function renderBoardInfo() {
  $('board-info').textContent = `${L('未结', 'open')} ${fmtInt(openCases)} · ${L('显示', 'showing')} ${boardShown}`;
}
const scheduleBoard = throttled(async () => renderBoard(), 500);

async function loadBoard() {
  // Lit cases first (overdue=yellow also gives red), then the recent others.
  const lit = await api('/api/v1/cases?overdue=yellow&page_size=1000');
  const fresh = new Map();
  for (const c of lit.cases || []) fresh.set(c.caseId, c);
  for (const c of lit.cases || []) advanceClock(c.stageTime);
  let recentPath = '/api/v1/cases?page_size=300';
  if (!isNaN(cityNow)) {
    recentPath += `&reported_after=${encodeURIComponent(new Date(cityNow - 6 * 3600e3).toISOString())}`;
  }
  const recent = await api(recentPath);
  for (const c of recent.cases || []) if (!fresh.has(c.caseId)) fresh.set(c.caseId, c);
  board.clear();
  for (const [id, c] of fresh) board.set(id, c);
  renderBoard();
}

// Patches a case on the board with one of its events (a CaseView is folded on the server;
// this keeps the board current between reloads).
function applyCaseEvent(type, ev) {
  const p = ev[type.replace(/_(\w)/g, (_, ch) => ch.toUpperCase())] || {};
  const id = p.caseId || short(ev.streamId, 'case/');
  const at = ev.eventTime;
  let c = board.get(id);
  if (type === 'case_opened' || type === 'case_reported') {
    c = Object.assign(c || {}, {
      caseId: id, source: p.source, category: p.category, grid: p.grid, severity: p.severity,
      department: p.department || '', description: p.description, stage: 'CASE_STAGE_DISCOVERED',
      stageTime: at, reportedTime: at, overdue: '', urges: 0, fresh: true,
    });
    board.set(id, c);
    return;
  }
  if (!c) return;
  const enter = (stage, deadline) => {
    c.stage = `CASE_STAGE_${stage}`; c.stageTime = at; c.overdue = ''; c.deadline = deadline || null; c.fresh = true;
  };
  switch (type) {
    case 'case_registered': enter('REGISTERED', p.nextDeadline); break;
    case 'case_dispatched': enter('DISPATCHED', p.nextDeadline); c.dispatchedDepartment = p.department; break;
    case 'case_handled': enter('HANDLED'); break;
    case 'case_verified': enter(p.passed ? 'VERIFIED' : 'DISPATCHED'); break;
    case 'case_closed': enter('CLOSED'); break;
    case 'case_urged': c.urges = (c.urges || 0) + 1; break;
    case 'case_escalated': c.level = p.toLevel; break;
    case 'case_linked': if (p.intoCaseId) c.linkedTo = p.intoCaseId; break;
    case 'case_relocated': c.grid = p.grid; if (p.location) c.location = p.location; break;
    case 'case_overdue':
      if (stageOf(p.stage) === stageOf(c.stage)) {
        c.overdue = p.level; c.deadline = { stage: p.stage, dueTime: p.dueTime }; c.fresh = true;
      }
      break;
    default: break;
  }
  if (openDetail === id) refreshDetail();
}

$('cases').addEventListener('animationend', (e) => e.target.classList.remove('fresh'));
$('cases').addEventListener('click', (e) => {
  const row = e.target.closest('.case-row');
  if (row) showCase(row.dataset.caseId);
});

// ---------------------------------------------------------------------------------------
// One case: facts, time in each stage, and every event of its stream.
let openDetail = null;

function eventType(ev) {
  return Object.keys(EVENT_LABEL).find((k) => ev[k] !== undefined) ||
    Object.keys(ev).find((k) => typeof ev[k] === 'object' && !['provenance', 'eventTime', 'recordedTime'].includes(k)) || 'event';
}

function actorText(prov) {
  if (!prov) return '';
  if (prov.actor) {
    const a = prov.actor;
    return `<b>${esc(a.user)}</b> <i>${esc(both(ROLE_LABEL[short(a.role, 'ROLE_')], ''))}</i><br><i>${esc(unitText(a.unit))}</i>`;
  }
  if (prov.stage) return `<i>${L('系统', 'system')}:</i> ${esc(prov.stage)}`;
  if (prov.kafka) return `<i>kafka</i> ${esc(prov.kafka.topic)}/${esc(prov.kafka.partition)}@${esc(prov.kafka.offset)}`;
  return '';
}

function eventDetails(type, p) {
  const dl = (d) => (d && d.dueTime ? `due ${fmtTime(d.dueTime, true)} (${both(STAGE_LABEL[stageOf(d.stage)])})` : '');
  switch (type) {
    case 'caseOpened':
      return `${esc(p.description)} · ${both(SEVERITY_LABEL[short(p.severity, 'SEVERITY_')])} · rule <code>${esc(p.ruleId)}</code> · device <code>${esc(p.deviceId)}</code> → ${esc(p.department)}`;
    case 'caseReported':
      return `${esc(p.description)} · ${both(SOURCE_LABEL[short(p.source, 'CASE_SOURCE_')])}${p.reporter ? ` · reporter ${esc(p.reporter)}` : ''} · originator ${esc(unitText(p.originator))}`;
    case 'caseRegistered': return esc(dl(p.nextDeadline));
    case 'caseDispatched':
      return `→ <b>${esc(p.department)}</b> ${esc(CJK ? DEPARTMENT_LABEL[p.department] || '' : '')} (${esc(both(LEVEL_LABEL[short(p.level, 'GRID_LEVEL_')]))})${p.ticketId ? ` · ticket <code>${esc(p.ticketId)}</code>` : ''} · ${esc(dl(p.nextDeadline))}`;
    case 'caseHandled': return esc(p.result);
    case 'caseVerified':
      return `${p.passed ? L('通过', 'passed') : `<b>${L('未通过', 'failed')}</b>`}${p.note ? ` · ${esc(p.note)}` : ''}${p.ticketId ? ` · re-work ticket <code>${esc(p.ticketId)}</code>` : ''}`;
    case 'caseClosed': return `${L('总用时', 'total handling time')} ${fmtDuration(seconds(p.totalHandlingTime))}`;
    case 'caseUrged': return esc(p.note || '');
    case 'caseEscalated':
      return `${esc(both(LEVEL_LABEL[short(p.fromLevel, 'GRID_LEVEL_')]))} → ${esc(both(LEVEL_LABEL[short(p.toLevel, 'GRID_LEVEL_')]))}${p.reason ? ` · ${esc(p.reason)}` : ''}`;
    case 'caseOverdue':
      return `${overdueOf(p.level) === 'red' ? L('红灯', 'red') : L('黄灯', 'yellow')} · ${esc(both(STAGE_LABEL[stageOf(p.stage)]))} was due ${fmtTime(p.dueTime, true)}`;
    case 'caseLinked':
      if (p.alertId) return `alert <code>${esc(p.alertId)}</code>`;
      if (p.reportedCaseId) return `report <code>${esc(p.reportedCaseId)}</code> joined this case`;
      if (p.intoCaseId) return `joined case <code>${esc(p.intoCaseId)}</code>`;
      return '';
    default: return `<code>${esc(JSON.stringify(p).slice(0, 200))}</code>`;
  }
}

function renderDetail(d) {
  const c = d.case || {};
  const stage = stageOf(c.stage);
  $('detail-title').innerHTML = `${esc(c.category?.name || c.caseId)} <span>${esc(both(STAGE_LABEL[stage]))}</span>`;
  $('detail-sub').textContent = `${c.caseId} · ${c.category?.code || ''}`;
  const light = overdueOf(c.overdue);
  const facts = [
    [L('来源', 'source'), both(SOURCE_LABEL[short(c.source, 'CASE_SOURCE_')])],
    [L('阶段', 'stage'), `${both(STAGE_LABEL[stage])}${light ? ` · ${light === 'red' ? L('红灯', 'red light') : L('黄灯', 'yellow light')}` : ''}`],
    [L('级别', 'severity'), both(SEVERITY_LABEL[short(c.severity, 'SEVERITY_')])],
    [L('网格', 'grid'), `${districtName(c.grid?.districtCode)} · ${c.grid?.gridCode || ''}`],
    [L('部门', 'department'), `${c.dispatchedDepartment || c.department || '—'}`],
    [L('派遣层级', 'level'), both(LEVEL_LABEL[short(c.level, 'GRID_LEVEL_')])],
    [L('发起方', 'originator'), unitText(c.originator) || c.originator?.code || '—'],
    [L('设备', 'device'), c.deviceId || '—'],
    [L('催办', 'urged'), String(c.urges || 0)],
    [L('发现', 'discovered'), fmtTime(c.reportedTime, true)],
    [L('期限', 'deadline'), c.deadline?.dueTime ? `${fmtTime(c.deadline.dueTime, true)} (${both(STAGE_LABEL[stageOf(c.deadline.stage)])})` : '—'],
    [L('描述', 'description'), c.description || '—'],
  ];
  if (c.handlingResult) facts.push([L('处置结果', 'result'), c.handlingResult]);
  $('detail-facts').innerHTML = facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('');

  const spent = Object.fromEntries((d.timeInStage || []).map((s) => [stageOf(s.stage), seconds(s.duration)]));
  const reached = (s) => STAGES.indexOf(s) <= STAGES.indexOf(stage);  // Later stages: not yet.
  $('detail-stages').innerHTML = STAGES.filter((s) => s !== 'CLOSED').map((s) =>
    `<div class="stage-seg${s === stage ? ' current' : ''}${reached(s) ? '' : ' later'}" data-stage="${s.toLowerCase()}"><div class="name">${esc(both(STAGE_LABEL[s]))}</div>` +
    `<div class="dur">${s in spent && reached(s) ? fmtDuration(spent[s]) : '—'}</div></div>`).join('');
  $('detail-handling').textContent = d.handlingTime ? `${L('总用时', 'total')} ${fmtDuration(seconds(d.handlingTime))}${stage === 'CLOSED' ? '' : ` (${L('至今', 'so far')})`}` : '';

  $('timeline').tBodies[0].innerHTML = (d.timeline || []).map((ev) => {
    const type = eventType(ev);
    const p = ev[type] || {};
    const lit = type === 'caseOverdue' ? ` overdue-${overdueOf(p.level)}` : '';
    return `<tr class="timeline-row${lit}" data-type="${esc(type)}"><td class="t">${fmtTime(ev.eventTime, true)}</td>` +
      `<td class="ty">${esc(both(EVENT_LABEL[type], type))}</td><td>${actorText(ev.provenance)}</td>` +
      `<td>${eventDetails(type, p)}</td></tr>`;
  }).join('');
  advanceClock(d.asOf);
}

async function showCase(id) {
  openDetail = id;
  $('detail-title').textContent = id;
  $('detail-sub').textContent = '';
  $('detail-facts').innerHTML = '';
  $('detail-stages').innerHTML = '';
  $('timeline').tBodies[0].innerHTML = `<tr><td colspan="4">${L('加载中', 'loading')}…</td></tr>`;
  $('case-detail').hidden = false;
  try {
    const d = await api(`/api/v1/cases/${encodeURIComponent(id)}`);
    if (openDetail === id) renderDetail(d);
  } catch (e) {
    $('timeline').tBodies[0].innerHTML = `<tr><td colspan="4">${esc(e.message)}</td></tr>`;
  }
}
const refreshDetail = throttled(async () => {
  if (openDetail) renderDetail(await api(`/api/v1/cases/${encodeURIComponent(openDetail)}`));
}, 2000);
function closeDetail() {
  openDetail = null;
  $('case-detail').hidden = true;
}
$('detail-close').addEventListener('click', closeDetail);
$('case-detail').addEventListener('click', (e) => { if (e.target === $('case-detail')) closeDetail(); });
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeDetail(); });

// ---------------------------------------------------------------------------------------
// Recent tickets: the API's first page (newest issued first), live tickets put on top.
let tickets = [];
function renderTickets() {
  tickets.sort((a, b) => (ms(b.issuedTime) || 0) - (ms(a.issuedTime) || 0));
  $('tickets').innerHTML = tickets.slice(0, 40).map((t) => {
    const k = t.ticket || {};
    return `<li data-ticket-id="${esc(k.ticketId)}"><span class="t">${fmtRecent(t.issuedTime)}</span>` +
      `<span class="s" title="${esc(k.ticketId)}">${esc(k.summary || k.category?.name || k.ticketId)}</span>` +
      `<span class="d">${esc(CJK ? DEPARTMENT_LABEL[k.department] || '' : '')} <i>${esc(k.department)}</i></span></li>`;
  }).join('');
}
async function loadTickets() {
  tickets = (await api('/api/v1/tickets?page_size=40')).tickets || [];
  renderTickets();
}
const scheduleTickets = throttled(async () => renderTickets(), 1000);

// ---------------------------------------------------------------------------------------
// The change stream: SSE read with fetch() (EventSource cannot send the token), parsed by
// hand, reconnected with backoff; after a reconnect or a `resync`, views are reloaded.
function setLive(on, text) {
  $('live').className = on ? 'on' : 'off';
  $('live-text').textContent = text;
}

function onChange(type, data) {
  if (type === 'statistics') { renderStatistics(JSON.parse(data)); scheduleLeague(); return; }
  if (type === 'resync') { reloadAll(); return; }
  const ev = JSON.parse(data);
  advanceClock(ev.eventTime);
  if (type.startsWith('alert_')) refreshMap();
  if (type.startsWith('case_')) { applyCaseEvent(type, ev); scheduleBoard(); }
  if (type === 'ticket_issued') {
    tickets.unshift({ ticket: ev.ticketIssued, issuedTime: ev.eventTime });
    tickets.length = Math.min(tickets.length, 40);
    scheduleTickets();
  }
}

async function follow() {
  let backoff = 1000, connected = false;
  for (;;) {
    const ctrl = new AbortController();
    let watchdog = null;
    const kick = () => { clearTimeout(watchdog); watchdog = setTimeout(() => ctrl.abort(), 45000); };
    try {
      setLive(false, connected ? L('重连中', 'reconnecting') : L('连接中', 'connecting'));
      const res = await api('/api/v1/changes', { raw: true, signal: ctrl.signal });
      kick();
      setLive(true, L('实时', 'live'));
      if (connected) reloadAll();  // Changes may have been missed while away.
      connected = true;
      backoff = 1000;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        kick();
        buf += value.replace(/\r\n?/g, '\n');
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let type = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) type = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (data.length) {
            try { onChange(type, data.join('\n')); } catch (e) { console.warn('change', type, e); }
          }
        }
      }
      showError('GET /api/v1/changes', 'the change stream ended; reconnecting');
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      if (e.name === 'AbortError') showError('GET /api/v1/changes', 'no data for 45 s; reconnecting');
    } finally {
      clearTimeout(watchdog);
    }
    setLive(false, `${L('重连中', 'reconnecting in')} ${Math.round(backoff / 1000)} s`);
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 30000);
  }
}

// ---------------------------------------------------------------------------------------
const quiet = (p) => p.catch((e) => { if (!(e instanceof ApiError)) console.warn(e); });
function reloadAll() {
  return Promise.all([quiet(loadStatistics()), quiet(loadCatalogue()), quiet(loadMap()), quiet(loadBoard()),
    quiet(loadTickets()), quiet(loadLeague())]);
}

async function main() {
  token = takeToken();
  if (!token) { askToken(); return; }
  try {
    const who = await api('/api/v1/whoami');
    const a = who.actor || {};
    $('whoami').innerHTML = `<b>${esc(a.user)}</b> · ${esc(both(ROLE_LABEL[short(a.role, 'ROLE_')], a.role))} · ${esc(unitText(a.unit))}`;
  } catch (e) {
    if (!(e instanceof ApiError)) console.warn(e);
    if (e.status === 401) return;
  }
  await reloadAll();
  follow();
  // Reconcile with the read models now and then: the live patches are a best effort.
  setInterval(() => quiet(loadBoard()), 30000);
  setInterval(() => quiet(loadMap()), 30000);
  setInterval(() => quiet(loadCatalogue()), 60000);  // A rule set activation may bring another.
  setInterval(() => scheduleBoard(), 5000);  // "in stage" times move with the city clock
}

main();

// Dashboard: jobs in progress (live progress bars), devices seen in the
// last hour, recent failures, server health, latest events.
'use strict';
(function () {
  const { h, $ } = PB;
  const HOUR = 3600 * 1000;
  let open = 0;

  async function loadJobs() {
    await PB.load('#dash-jobs', async () => {
      const jobs = await PB.get('/jobs?open=true&limit=100');
      open = jobs.length;
      PB.renderJobs($('#dash-jobs-body'), jobs, { empty: 'No job in progress.' });
    });
  }

  async function loadFailures() {
    await PB.load('#dash-failures', async () => {
      const jobs = await PB.get('/jobs?state=failed&limit=10');
      const body = PB.clear($('#dash-failures-body'));
      for (const j of jobs) {
        body.append(h('tr', { id: 'failure-' + j.id, class: 'failure-row', dataset: { jobId: j.id, mac: j.mac } },
          h('td', null, PB.jobLink(j.id)),
          h('td', null, PB.deviceLink(j.mac)),
          h('td', null, PB.bundleLink(j.bundle)),
          h('td', { class: 'msg bad-text' }, j.error || j.message || ''),
          h('td', null, PB.timeEl(j.finished_at || j.updated_at))));
      }
      if (!jobs.length) body.append(PB.emptyRow(5, 'No failed job.'));
    });
  }

  async function loadSeen() {
    await PB.load('#dash-seen', async () => {
      // Devices come most recently seen first.
      const devs = await PB.get('/devices?limit=100');
      const cutoff = Date.now() - HOUR;
      const seen = devs.filter((d) => { const t = PB.parseTime(d.last_seen); return t && t.getTime() >= cutoff; });
      const body = PB.clear($('#dash-seen-body'));
      for (const d of seen) {
        const ev = d.last_event;
        body.append(h('tr', { class: 'device-row', id: 'seen-' + PB.macID(d.mac), dataset: { mac: d.mac } },
          h('td', null, PB.deviceLink(d.mac, d.name), d.name ? h('div', { class: 'muted small mono' }, d.mac) : null),
          h('td', { class: 'mono' }, d.ip || ''),
          h('td', null, [d.manufacturer, d.product].filter(Boolean).join(' ')),
          h('td', { class: 'msg small' }, ev ? [PB.badge(ev.kind, ev.kind, 'kind-' + ev.kind), ' ', ev.message] : ''),
          h('td', null, PB.timeEl(d.last_seen))));
      }
      if (!seen.length) body.append(PB.emptyRow(5, 'No device booted from the network in the last hour.'));
      const more = $('#dash-seen-more');
      more.hidden = !(seen.length === devs.length && devs.length === 100);
      more.textContent = 'Showing the 100 most recent; see Devices for all.';
    });
  }

  function service(s) {
    const state = !s.enabled ? 'off' : s.up ? 'up' : 'down';
    return h('div', { class: 'service', id: 'service-' + s.name, dataset: { service: s.name, up: String(!!s.up), enabled: String(!!s.enabled) } },
      h('span', { class: 'name' }, s.name),
      PB.badge(state === 'off' ? 'off' : state, state),
      h('span', { class: 'mono small' }, (s.listen || []).join(', ')));
  }

  async function loadStatus() {
    const box = $('#health-body');
    let st;
    try {
      st = await PB.get('/status');
    } catch (err) {
      PB.replace(box, h('p', { class: err.status === 404 ? 'muted' : 'form-error' },
        err.status === 404 ? 'This server does not report its status (no /api/v1/status).' : 'Status unavailable: ' + err.message));
      return null;
    }
    const repo = st.image_repo || {};
    const used = repo.total_bytes > 0 ? repo.total_bytes - repo.free_bytes : 0;
    const pct = repo.total_bytes > 0 ? (used * 100) / repo.total_bytes : 0;
    const meter = h('div', { class: 'meter', id: 'repo-meter', role: 'meter', 'aria-label': 'Image repository disk used', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct.toFixed(1), dataset: { percent: pct.toFixed(1), level: pct > 90 ? 'high' : 'ok' } }, h('div'));
    meter.firstChild.style.width = pct.toFixed(1) + '%';
    PB.replace(box,
      PB.kv([['Version', st.version, 'version'], ['Up since', st.started_at ? [PB.fmtTime(st.started_at), ' (', PB.duration(st.uptime_seconds), ')'] : '', 'uptime']]),
      h('h3', null, 'Services'),
      h('div', { class: 'services', id: 'services' }, (st.services || []).map(service)),
      h('h3', null, 'Image repository'),
      h('div', { id: 'image-repo', dataset: { freeBytes: repo.free_bytes, totalBytes: repo.total_bytes } },
        h('div', { class: 'mono small' }, repo.path || ''),
        meter,
        h('div', { class: 'small' }, PB.bytes(repo.free_bytes) + ' free of ' + PB.bytes(repo.total_bytes) + ' · images use ' + PB.bytes(repo.used_by_images_bytes))));
    return st;
  }

  async function loadCounts(st) {
    const c = (st && st.counts) || null;
    const set = (k, v) => { const el = document.querySelector('[data-count="' + k + '"]'); if (el && v !== undefined && v !== null) el.textContent = String(v); };
    if (c) {
      for (const k of Object.keys(c)) set(k, c[k]);
      return;
    }
    // Without /status: what the lists tell.
    try {
      const r = await PB.api('GET', '/devices?limit=1');
      set('devices', r.headers.get('X-Total-Count'));
    } catch (e) { /* shown elsewhere */ }
    set('jobs_running', open);
  }

  async function loadEvents() {
    let newest = 0;
    await PB.load('#dash-events', async () => {
      const evs = await PB.get('/events?limit=12');
      const body = PB.clear($('#dash-events-body'));
      for (const ev of evs) body.append(PB.eventRow(ev));
      if (!evs.length) body.append(PB.emptyRow(5, 'No events yet.'));
      if (evs.length) newest = evs[0].id;
    });
    return newest;
  }

  const refreshJobs = PB.debounce(() => { loadJobs(); loadFailures(); }, 300);
  const refreshSeen = PB.debounce(loadSeen, 1000);
  const refreshCounts = PB.debounce(async () => loadCounts(await loadStatus()), 2000);

  async function start() {
    const [, , , , newest] = await Promise.all([loadJobs(), loadFailures(), loadSeen(), loadStatus().then(loadCounts), loadEvents()]);
    PB.follow({}, (ev) => {
      PB.prependEvent($('#dash-events-body'), ev, { max: 12 });
      if (ev.kind === 'job' || ev.kind === 'work') { refreshJobs(); refreshCounts(); }
      if (ev.mac) refreshSeen();
    }, { after: newest });
    // Progress reports are not events: poll while jobs are open.
    PB.every(2000, async () => { if (open > 0) await loadJobs(); });
    PB.every(30000, async () => loadCounts(await loadStatus()));
  }
  start();
})();

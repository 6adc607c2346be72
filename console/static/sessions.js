// Multicast sessions: every session, newest first, and each receiver's
// progress, rate, loss and how it got its bytes (multicast, repair, peers,
// unicast); cancel a session. Live: polled while the page is visible, and
// refreshed at once on multicast events.
'use strict';
(function () {
  const { h, $ } = PB;
  const SOURCES = ['multicast', 'repair', 'peers', 'unicast'];
  const ACTIVE = ['multicast', 'unicast', 'peers'];
  const cards = new Map(); // session id → {el, cancel, rows: Map receiver id → tr}

  const sessionOpen = (s) => s.state === 'waiting' || s.state === 'running';

  /** Bits per second with SI units: "500 Mbit/s". */
  function bits(bps) {
    if (!(bps > 0)) return '—';
    const units = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'];
    let v = bps;
    let i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return Number(v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)) + ' ' + units[i];
  }

  /** How much of what a receiver restores is written (0–100), or null. */
  function percent(r) {
    if (r.state === 'done') return 100;
    if (r.bytes_total > 0) return Math.max(0, Math.min(100, (r.bytes_done * 100) / r.bytes_total));
    if (r.chunks_total > 0) return Math.max(0, Math.min(100, (r.chunks_done * 100) / r.chunks_total));
    return null;
  }

  /** A receiver's progress bar (the jobs' .progress look). */
  function progress(r) {
    const el = h('div', { class: 'progress recv-progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-label': (r.name || r.addr) + ' progress' },
      h('div', { class: 'progress-track' }, h('div', { class: 'progress-bar' })),
      h('div', { class: 'progress-info' }, h('span', { class: 'percent' }), h('span', { class: 'phase' })));
    updateProgress(el, r);
    return el;
  }

  function updateProgress(el, r) {
    const p = percent(r);
    el.dataset.state = r.state;
    el.dataset.percent = p === null ? '' : p.toFixed(1);
    el.setAttribute('aria-valuenow', p === null ? 0 : p.toFixed(1));
    el.querySelector('.progress-bar').style.width = (p || 0).toFixed(2) + '%';
    const pct = p === null ? (r.state === 'waiting' ? 'waiting for the start' : '—') : p.toFixed(p >= 100 || p === 0 ? 0 : 1) + '%';
    el.querySelector('.percent').textContent = pct;
    const detail = [];
    if (r.bytes_total > 0) detail.push(PB.bytes(r.bytes_done) + ' of ' + PB.bytes(r.bytes_total));
    if (r.chunks_total > 0) detail.push(r.chunks_done + '/' + r.chunks_total + ' chunks');
    el.querySelector('.phase').textContent = detail.join(' · ');
    el.setAttribute('aria-valuetext', [pct, detail.join(', ')].filter(Boolean).join(', '));
  }

  /** How a receiver got its bytes: a stacked bar and the figures. */
  function sources(r) {
    const b = r.bytes || {};
    const total = SOURCES.reduce((n, k) => n + (b[k] || 0), 0);
    const data = {};
    for (const k of SOURCES) data[k] = b[k] || 0;
    const bar = h('div', { class: 'sources-bar', role: 'img', 'aria-label': SOURCES.map((k) => k + ' ' + PB.bytes(data[k])).join(', ') });
    for (const k of SOURCES) {
      const seg = h('div', { class: 'src src-' + k, dataset: { source: k }, title: k + ': ' + PB.bytes(data[k]) });
      seg.style.width = (total > 0 ? (data[k] * 100) / total : 0).toFixed(2) + '%'; // CSSOM: the CSP allows no style attribute
      bar.append(seg);
    }
    const legend = h('ul', { class: 'sources-legend' },
      SOURCES.map((k) => h('li', { dataset: { source: k, bytes: data[k] }, class: data[k] > 0 ? null : 'muted' },
        h('span', { class: 'src-key src-' + k }, k), ' ', h('span', { class: 'num' }, PB.bytes(data[k])))));
    return h('div', { class: 'sources', dataset: Object.assign({ total }, data) }, bar, legend);
  }

  function receiverCells(tr, r) {
    tr.dataset.state = r.state;
    PB.replace(tr.querySelector('.recv'), h('strong', null, r.name || r.addr || r.id), h('div', { class: 'small mono muted' }, r.addr || ''),
      r.job || r.device ? h('div', { class: 'small' }, r.job ? PB.jobLink(r.job) : null, r.job && r.device ? ' ' : null, r.device ? PB.deviceLink(r.device) : null) : null);
    PB.replace(tr.querySelector('.state'), PB.badge(r.state, r.state, 'recv-' + r.state),
      r.reason ? h('div', { class: 'small reason ' + (r.state === 'failed' || r.state === 'lost' ? 'bad-text' : 'warn-text') }, r.reason) : null);
    updateProgress(tr.querySelector('.progress'), r);
    tr.querySelector('.rate').textContent = ACTIVE.includes(r.state) ? PB.rate(r.rate) : '—';
    const loss = tr.querySelector('.loss');
    loss.textContent = r.state === 'waiting' || r.state === 'peers' ? '—' : (100 * (r.loss || 0)).toFixed(1) + '%';
    loss.dataset.loss = r.loss || 0;
    PB.replace(tr.querySelector('.sources-cell'), sources(r));
    PB.replace(tr.querySelector('.seen'), PB.timeEl(r.last_seen));
    const dropped = tr.querySelector('.dropped');
    dropped.textContent = r.dropped > 0 ? r.dropped + ' refused' : '';
    dropped.title = r.dropped > 0 ? 'packets and chunks refused: forged, out of session, undecodable or failing the hash check' : '';
  }

  function receiverRow(r) {
    const tr = h('tr', { class: 'receiver-row', dataset: { receiver: r.id } },
      h('td', { class: 'recv' }),
      h('td', { class: 'state' }),
      h('td', { class: 'progress-cell' }, progress(r)),
      h('td', { class: 'num rate nowrap' }),
      h('td', { class: 'num loss' }),
      h('td', { class: 'sources-cell' }),
      h('td', { class: 'when' }, h('span', { class: 'seen' }), h('div', { class: 'small muted dropped' })));
    return tr;
  }

  function startRule(s) {
    if (!(s.min_clients > 1)) return 'at the first receiver';
    let t = 'when ' + s.min_clients + ' receivers joined';
    if (s.max_wait && s.max_wait !== '0s') t += ', or ' + s.max_wait + ' after the first join';
    return t;
  }

  function overall(s) {
    let done = 0;
    let total = 0;
    for (const r of s.receivers || []) { done += Math.min(r.bytes_done || 0, r.bytes_total || 0); total += r.bytes_total || 0; }
    return total > 0 ? (done * 100) / total : null;
  }

  function newCard(s) {
    const id = s.id;
    const cancel = PB.confirmButton('Cancel session', async () => {
      const got = await PB.send('POST', '/sessions/' + PB.enc(id) + '/cancel');
      PB.flash('Session ' + id + ' cancelled: its receivers finish over unicast.');
      update(cards.get(id), got);
      await load();
    }, { class: 'danger small session-cancel', 'aria-label': 'Cancel session ' + id });
    const el = h('section', { class: 'card mc-session', dataset: { session: id }, 'aria-label': 'Session ' + id },
      h('div', { class: 'session-head' },
        h('h2', null, h('span', { class: 'session-image' }), ' ', h('span', { class: 'session-state' })),
        h('span', { class: 'muted small session-sub' }),
        h('div', { class: 'actions' }, cancel)),
      h('div', { class: 'session-kv' }),
      h('div', { class: 'table-wrap' },
        h('table', { class: 'data receivers' },
          h('thead', null, h('tr', null, h('th', null, 'Receiver'), h('th', null, 'State'), h('th', null, 'Progress'),
            h('th', { class: 'num' }, 'Rate'), h('th', { class: 'num' }, 'Loss'), h('th', null, 'How it got its bytes'), h('th', null, 'Last heard'))),
          h('tbody', { class: 'receivers-body' }))));
    return { el, cancel, rows: new Map() };
  }

  function update(c, s) {
    const el = c.el;
    el.dataset.state = s.state;
    const p = overall(s);
    el.dataset.percent = p === null ? '' : p.toFixed(1);
    el.querySelector('.session-image').textContent = s.image;
    PB.replace(el.querySelector('.session-state'), PB.badge(s.state, s.state, 'session-' + s.state));
    el.querySelector('.session-sub').textContent = 'session ' + s.id + ' · ' + (s.receivers || []).length + ' receivers' + (p === null ? '' : ' · ' + p.toFixed(0) + '% written overall');
    c.cancel.hidden = !sessionOpen(s);
    PB.replace(el.querySelector('.session-kv'), PB.kv([
      ['Group', s.group + (s.interface ? ' on ' + s.interface : ''), 'group'],
      ['Starts', startRule(s), 'start'],
      ['Rate cap', bits(s.rate), 'rate'],
      ['Image', s.chunks + ' chunks, ' + PB.bytes(s.image_bytes), 'image'],
      ['Sent to the group', PB.bytes(s.sent_data) + ' data + ' + PB.bytes(s.sent_repair) + ' repair, ' + s.sent_packets + ' packets', 'sent'],
      ['Served by unicast', PB.bytes(s.served) + (s.peer_redirects ? ', ' + s.peer_redirects + ' requests pointed at peers' : ''), 'served'],
      ['Created', PB.timeEl(s.created, false), 'created'],
      ['Started', PB.parseTime(s.started) ? PB.timeEl(s.started, false) : '', 'started'],
      ['Ended', PB.parseTime(s.ended) ? PB.timeEl(s.ended, false) : '', 'ended'],
    ], { class: 'kv session-info' }));
    const body = el.querySelector('.receivers-body');
    const keep = new Set();
    let prev = null;
    for (const r of s.receivers || []) {
      keep.add(r.id);
      let tr = c.rows.get(r.id);
      if (!tr) { tr = receiverRow(r); c.rows.set(r.id, tr); }
      receiverCells(tr, r);
      const want = prev ? prev.nextSibling : body.firstChild;
      if (want !== tr) body.insertBefore(tr, want);
      prev = tr;
    }
    for (const [rid, tr] of c.rows) if (!keep.has(rid)) { tr.remove(); c.rows.delete(rid); }
    const empty = body.querySelector('tr.empty');
    if (empty) empty.remove();
    if (!(s.receivers || []).length) body.append(PB.emptyRow(7, 'No receiver yet.'));
  }

  /** Shows the sessions; unavailable: the server has no multicast. */
  function render(list, unavailable) {
    const box = $('#sessions-list');
    const keep = new Set();
    let prev = null;
    for (const s of list) {
      keep.add(s.id);
      let c = cards.get(s.id);
      if (!c) { c = newCard(s); cards.set(s.id, c); }
      update(c, s);
      const want = prev ? prev.nextSibling : box.firstChild;
      if (want !== c.el) box.insertBefore(c.el, want);
      prev = c.el;
    }
    for (const [id, c] of cards) if (!keep.has(id)) { c.el.remove(); cards.delete(id); }
    let none = $('#sessions-none');
    if (!none) {
      none = h('p', { class: 'card muted', id: 'sessions-none' }, 'No multicast session. A multicast bundle starts one when its machines boot; ',
        h('code', null, 'preboot agent restore --multicast'), ' joins one by hand.');
      box.append(none);
    }
    none.hidden = list.length > 0 || !!unavailable;
    document.body.dataset.sessions = unavailable ? 'unavailable' : 'loaded';
  }

  async function load() {
    await PB.load('#sessions-card', async () => {
      const note = $('#sessions-unavailable');
      let list;
      try {
        list = await PB.get('/sessions');
      } catch (err) {
        if (err.status !== 503) throw err;
        note.textContent = err.message + '.';
        note.hidden = false;
        render([], true);
        return;
      }
      note.hidden = true;
      render(list, false);
    });
  }

  async function start() {
    await load();
    PB.follow({ kind: 'multicast' }, PB.debounce(load, 200));
    // Progress is not an event: poll (the list lives in the server's memory).
    PB.every(2000, load);
  }
  start();
})();

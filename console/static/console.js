// Preboot console: helpers shared by every page (loaded before the page's
// own script). No framework: fetch() for the REST API under /api/v1,
// EventSource for the event stream, DOM built with textContent only.
'use strict';

(function () {
  const PB = {};
  window.PB = PB;

  const meta = document.querySelector('meta[name="csrf-token"]');
  PB.csrf = meta ? meta.content : '';
  PB.page = document.body.dataset.page || '';

  // ---- the REST API ------------------------------------------------------

  /** An answer of the API that is not 2xx: status and its "error" text. */
  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
      this.body = body || null;
    }
  }
  PB.ApiError = ApiError;

  /**
   * Calls the API: method, path under /api/v1, optional JSON body.
   * Resolves to {data, headers, status}; rejects with an ApiError.
   * Non-GET requests carry the session's CSRF token.
   */
  PB.api = async function (method, path, body) {
    const opts = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    if (method !== 'GET' && method !== 'HEAD') opts.headers['X-CSRF-Token'] = PB.csrf;
    let res;
    try {
      res = await fetch('/api/v1' + path, opts);
    } catch (e) {
      throw new ApiError(0, 'the server cannot be reached (' + e.message + ')');
    }
    if (res.status === 401 && method === 'GET') {
      // The session ended: back to the login page, then here again.
      location.assign('/console/login?next=' + encodeURIComponent(location.pathname + location.search));
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' ? data.error : res.status + ' ' + res.statusText;
      throw new ApiError(res.status, msg, data);
    }
    return { data, headers: res.headers, status: res.status };
  };
  PB.get = async (path) => (await PB.api('GET', path)).data;
  PB.send = async (method, path, body) => (await PB.api(method, path, body)).data;

  /** Builds a query string from an object, leaving out empty values. */
  PB.query = function (params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v === undefined || v === null || v === '' || v === false) continue;
      q.set(k, String(v));
    }
    const s = q.toString();
    return s ? '?' + s : '';
  };
  PB.enc = encodeURIComponent;

  // ---- DOM ---------------------------------------------------------------

  /**
   * h(tag, attrs, ...children) creates an element. attrs: class, text,
   * dataset (object), on<event> (function), true for boolean attributes;
   * children: nodes or strings (always text, never HTML).
   */
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'dataset') {
        for (const [dk, dv] of Object.entries(v)) if (dv !== undefined && dv !== null) el.dataset[dk] = String(dv);
      } else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }
  PB.h = h;
  PB.$ = (sel, root) => (root || document).querySelector(sel);
  PB.$$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  PB.clear = function (el) { while (el.firstChild) el.removeChild(el.firstChild); return el; };
  PB.replace = function (el, ...kids) { PB.clear(el); el.append(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false)); return el; };

  /** A table row spanning every column that says the list is empty. */
  PB.emptyRow = function (cols, text) {
    return h('tr', { class: 'empty' }, h('td', { colspan: cols, text }));
  };

  /** A definition list from [label, value] pairs (values: text or nodes). */
  PB.kv = function (pairs, attrs) {
    const dl = h('dl', Object.assign({ class: 'kv' }, attrs || {}));
    for (const [k, v, key] of pairs) {
      if (v === undefined || v === null || v === '') continue;
      dl.append(h('dt', null, k), h('dd', key ? { dataset: { key } } : null, v));
    }
    return dl;
  };

  // ---- formatting --------------------------------------------------------

  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  /** 1536 → "1.50 KiB". */
  PB.bytes = function (n) {
    if (n === undefined || n === null || isNaN(n)) return '—';
    let v = Number(n);
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    if (i === 0) return v + ' B';
    return v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0) + ' ' + units[i];
  };
  /** Bytes per second, "—" when unknown. */
  PB.rate = (n) => (n > 0 ? PB.bytes(n) + '/s' : '—');
  const pad = (n) => String(n).padStart(2, '0');
  /** Seconds → "1h 02m", "3m 05s", "12s". */
  PB.duration = function (sec) {
    if (sec === null || sec === undefined || !isFinite(sec) || sec < 0) return '—';
    sec = Math.round(sec);
    const hh = Math.floor(sec / 3600);
    const mm = Math.floor((sec % 3600) / 60);
    const ss = sec % 60;
    if (hh > 0) return hh + 'h ' + pad(mm) + 'm';
    if (mm > 0) return mm + 'm ' + pad(ss) + 's';
    return ss + 's';
  };
  /** Parses an RFC 3339 time; null for absent or Go's zero time. */
  PB.parseTime = function (iso) {
    if (!iso || iso.startsWith('0001-')) return null;
    const d = new Date(iso);
    return isNaN(d) ? null : d;
  };
  /** Local "2026-11-25 08:03:11". */
  PB.fmtTime = function (iso) {
    const d = PB.parseTime(iso);
    if (!d) return '—';
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  };
  /** "12 s ago", "3 min ago", "2 h ago", "4 days ago". */
  PB.ago = function (iso) {
    const d = PB.parseTime(iso);
    if (!d) return 'never';
    const s = Math.round((Date.now() - d.getTime()) / 1000);
    if (s < 5) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' days ago';
  };
  /** A <time> element: relative text, the full time as its title. */
  PB.timeEl = function (iso, relative) {
    if (!PB.parseTime(iso)) return h('span', { class: 'muted' }, '—');
    return h('time', { datetime: iso, title: PB.fmtTime(iso), class: 'nowrap' }, relative === false ? PB.fmtTime(iso) : PB.ago(iso));
  };
  // Keep relative times fresh.
  setInterval(() => {
    for (const t of PB.$$('time[datetime]')) if (t.textContent !== PB.fmtTime(t.getAttribute('datetime'))) t.textContent = PB.ago(t.getAttribute('datetime'));
  }, 15000);

  /** A device link: its name if known, else the MAC. */
  PB.deviceLink = function (mac, name) {
    if (!mac) return h('span', { class: 'muted' }, '—');
    return h('a', { href: '/console/devices/' + PB.enc(mac), class: 'mono nowrap', dataset: { mac } }, name || mac);
  };
  PB.jobLink = (id) => (id ? h('a', { href: '/console/jobs/' + id, dataset: { job: id } }, '#' + id) : h('span', { class: 'muted' }, '—'));
  PB.bundleLink = (name) => (name ? h('a', { href: '/console/bundles#bundle-' + name }, name) : h('span', { class: 'muted' }, '—'));
  PB.groupLink = (name) => (name ? h('a', { href: '/console/groups/' + PB.enc(name) }, name) : h('span', { class: 'muted' }, '—'));
  PB.badge = (text, state, cls) => h('span', { class: 'badge' + (cls ? ' ' + cls : ''), dataset: { state } }, text);
  PB.macID = (mac) => String(mac || '').replace(/[^0-9a-f]/gi, '').toLowerCase();

  // ---- jobs and progress bars -------------------------------------------

  PB.jobOpen = (j) => j.state === 'pending' || j.state === 'booting' || j.state === 'running';
  /** Percent done of a job (0–100). */
  PB.percent = function (j) {
    if (j.state === 'succeeded') return 100;
    if (j.bytes_total > 0) return Math.max(0, Math.min(100, (j.bytes_done * 100) / j.bytes_total));
    return 0;
  };
  /** Seconds left at the current rate, or null. */
  PB.eta = function (j) {
    if (j.state !== 'running' || !(j.rate > 0) || !(j.bytes_total > j.bytes_done)) return null;
    return (j.bytes_total - j.bytes_done) / j.rate;
  };

  /** A progress bar for a job (.progress with data-percent, data-state…). */
  PB.progress = function (j, big) {
    const el = h('div', { class: 'progress' + (big ? ' big' : ''), role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-label': 'Job ' + j.id + ' progress' },
      h('div', { class: 'progress-track' }, h('div', { class: 'progress-bar' })),
      h('div', { class: 'progress-info' }, h('span', { class: 'percent' }), h('span', { class: 'rate' }), h('span', { class: 'eta' }), h('span', { class: 'phase' })));
    PB.updateProgress(el, j);
    return el;
  };
  /** Updates a progress bar in place from a job record. */
  PB.updateProgress = function (el, j) {
    const p = PB.percent(j);
    const eta = PB.eta(j);
    el.dataset.jobId = j.id;
    el.dataset.percent = p.toFixed(1);
    el.dataset.state = j.state;
    el.dataset.bytesDone = j.bytes_done || 0;
    el.dataset.bytesTotal = j.bytes_total || 0;
    el.dataset.rate = j.rate || 0;
    el.dataset.eta = eta === null ? '' : Math.round(eta);
    el.setAttribute('aria-valuenow', p.toFixed(1));
    el.querySelector('.progress-bar').style.width = p.toFixed(2) + '%';
    let pct = p.toFixed(p >= 100 || p === 0 ? 0 : 1) + '%';
    if (j.state === 'pending') pct = 'waiting for the device';
    else if (j.state === 'booting') pct = 'imaging environment booting';
    else if (j.state === 'running' && !(j.bytes_total > 0)) pct = 'running';
    el.querySelector('.percent').textContent = pct;
    const busy = j.state === 'running';
    el.querySelector('.rate').textContent = busy && j.rate > 0 ? PB.rate(j.rate) : '';
    el.querySelector('.eta').textContent = eta !== null ? 'ETA ' + PB.duration(eta) : '';
    const bytes = j.bytes_total > 0 ? PB.bytes(j.bytes_done) + ' of ' + PB.bytes(j.bytes_total) : '';
    el.querySelector('.phase').textContent = [j.phase, bytes].filter(Boolean).join(' · ');
    el.setAttribute('aria-valuetext', [pct, el.querySelector('.rate').textContent, el.querySelector('.eta').textContent].filter(Boolean).join(', '));
  };

  /**
   * Renders jobs into a <tbody>, keyed by id: existing rows (tr#job-ID)
   * are updated in place so their progress bars move rather than blink.
   * opts.device: show the device column.
   */
  PB.renderJobs = function (tbody, jobs, opts) {
    opts = opts || {};
    const cols = opts.device === false ? 6 : 7;
    const keep = new Set();
    let prev = null;
    for (const j of jobs) {
      const id = 'job-' + j.id;
      keep.add(id);
      let tr = tbody.querySelector('#' + id);
      if (!tr) {
        tr = h('tr', { id, class: 'job-row', dataset: { jobId: j.id } },
          h('td', { class: 'nowrap' }, PB.jobLink(j.id)),
          opts.device === false ? null : h('td', { class: 'device' }, PB.deviceLink(j.mac, opts.names && opts.names[j.mac])),
          h('td', { class: 'bundle' }),
          h('td', { class: 'state' }),
          h('td', { class: 'progress-cell' }, PB.progress(j)),
          h('td', { class: 'msg' }),
          h('td', { class: 'when' }));
      }
      tr.dataset.state = j.state;
      PB.replace(tr.querySelector('.bundle'), j.bundle ? PB.bundleLink(j.bundle) : h('span', { class: 'muted' }, '(menu)'), ' ', h('span', { class: 'muted small' }, j.kind));
      PB.replace(tr.querySelector('.state'), PB.badge(j.state, j.state));
      PB.updateProgress(tr.querySelector('.progress'), j);
      PB.replace(tr.querySelector('.msg'), j.error ? h('span', { class: 'bad-text' }, j.error) : (j.message || ''));
      PB.replace(tr.querySelector('.when'), PB.timeEl(j.finished_at || j.updated_at || j.created_at));
      // Keep the list's order.
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of PB.$$('tr', tbody)) if (!keep.has(tr.id)) tr.remove();
    if (!jobs.length) tbody.append(PB.emptyRow(cols, opts.empty || 'No jobs.'));
  };

  // ---- events ------------------------------------------------------------

  PB.KINDS = ['dhcp', 'boot', 'localboot', 'work', 'menu', 'admin', 'job', 'policy', 'security', 'multicast', 'wake'];

  /** A table row for an event (tr.event-row#event-ID with data-*). */
  PB.eventRow = function (ev, opts) {
    opts = opts || {};
    return h('tr', { id: 'event-' + ev.id, class: 'event-row', dataset: { eventId: ev.id, kind: ev.kind, mac: ev.mac || '', job: ev.job || '' } },
      h('td', { class: 'nowrap' }, PB.timeEl(ev.time, opts.absolute ? false : true)),
      h('td', null, PB.badge(ev.kind, ev.kind, 'kind-' + ev.kind)),
      opts.device === false ? null : h('td', null, ev.mac ? PB.deviceLink(ev.mac) : h('span', { class: 'muted' }, ev.actor || '—')),
      h('td', null, PB.jobLink(ev.job)),
      h('td', { class: 'msg' }, ev.message, opts.device === false && ev.actor ? h('span', { class: 'muted small' }, ' — ' + ev.actor) : null));
  };

  /** Prepends an event row (newest first), dropping rows beyond max. */
  PB.prependEvent = function (tbody, ev, opts) {
    if (tbody.querySelector('#event-' + ev.id)) return;
    const empty = tbody.querySelector('tr.empty');
    if (empty) empty.remove();
    tbody.insertBefore(PB.eventRow(ev, opts), tbody.firstChild);
    const max = (opts && opts.max) || 500;
    while (tbody.rows.length > max) tbody.deleteRow(tbody.rows.length - 1);
  };

  const streamStatus = () => document.getElementById('stream-status');
  function setStream(state, text) {
    const el = streamStatus();
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }

  /**
   * Follows /api/v1/events/stream with filters (device, kind, job) and
   * calls onEvent(ev) for each event. It starts after opts.after (an event
   * id), else after the newest stored event, so that nothing between the
   * page's first load and the stream is lost; after a failure it
   * reconnects from the last event seen. Returns {close()}.
   */
  PB.follow = function (filters, onEvent, opts) {
    opts = opts || {};
    let last = opts.after || 0;
    let es = null;
    let closed = false;
    let delay = 2000;
    const handle = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      if (ev.id && ev.id <= last) return;
      if (ev.id) last = ev.id;
      delay = 2000;
      onEvent(ev);
    };
    const open = () => {
      if (closed) return;
      setStream('connecting', 'connecting…');
      es = new EventSource('/api/v1/events/stream' + PB.query(Object.assign({}, filters, { after: last || '' })));
      for (const k of PB.KINDS) es.addEventListener(k, handle);
      es.addEventListener('message', handle);
      es.onopen = () => setStream('live', 'live');
      es.onerror = () => {
        if (closed) return;
        if (es.readyState === EventSource.CLOSED) {
          // Refused (e.g. the session ended): try again later, from the last event.
          setStream('closed', 'offline');
          setTimeout(open, delay);
          delay = Math.min(delay * 2, 30000);
        } else {
          setStream('connecting', 'reconnecting…');
        }
      };
    };
    const start = async () => {
      if (!last) {
        try {
          const evs = await PB.get('/events?limit=1');
          if (evs && evs.length) last = evs[0].id;
        } catch (e) { /* start from the live end */ }
      }
      open();
    };
    start();
    return {
      close() { closed = true; if (es) es.close(); setStream('idle', ''); },
      get last() { return last; },
    };
  };

  // ---- forms and errors --------------------------------------------------

  /**
   * The fields an API error line names: "mode \"x\": want…" → [mode],
   * "min_clients, max_wait: set…" → [min_clients, max_wait],
   * "unregistered.bundle: …" → [unregistered.bundle].
   */
  PB.errorFields = function (line) {
    const i = line.indexOf(':');
    if (i <= 0) return [];
    const head = line.slice(0, i).replace(/"(?:[^"\\]|\\.)*"/g, ' ');
    const out = [];
    for (const part of head.split(/,|\band\b|\bor\b/)) {
      const toks = part.trim().split(/\s+/).filter(Boolean);
      if (!toks.length || toks.length > 2) return [];
      if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(toks[0])) return [];
      // "bundle name \"x\": …" is about the name field.
      out.push(toks.length === 2 && toks[1] === 'name' ? 'name' : toks[0]);
    }
    return out;
  };

  function fieldFor(form, name) {
    const cands = PB.$$('[data-field]', form).filter((el) => !el.closest('fieldset[disabled]'));
    const dot = name.lastIndexOf('.');
    return cands.find((el) => el.dataset.field === name) || (dot > 0 ? cands.find((el) => el.dataset.field === name.slice(dot + 1)) : undefined);
  }

  /** Removes the errors and the status message a form shows. */
  PB.clearErrors = function (form) {
    for (const el of PB.$$('.field-error', form)) { el.textContent = ''; el.hidden = true; }
    for (const el of PB.$$('.has-error', form)) el.classList.remove('has-error');
    for (const el of PB.$$('[aria-invalid]', form)) el.removeAttribute('aria-invalid');
    const top = form.querySelector('.form-error');
    if (top) { top.textContent = ''; top.hidden = true; }
    const st = form.querySelector('.form-status');
    if (st) st.textContent = '';
    delete form.dataset.state;
  };

  /** Adds one message next to a field (its .field-error) or at the form's top. */
  function addError(form, wrap, line) {
    let slot = wrap ? wrap.querySelector('.field-error') : null;
    if (wrap && !slot) { slot = h('p', { class: 'field-error' }); wrap.append(slot); }
    if (!slot) {
      slot = form.querySelector('.form-error');
      if (!slot) { slot = h('div', { class: 'form-error', role: 'alert' }); form.prepend(slot); }
    }
    slot.textContent = slot.textContent ? slot.textContent + '\n' + line : line;
    slot.hidden = false;
    if (wrap) {
      wrap.classList.add('has-error');
      const input = wrap.querySelector('input, select, textarea');
      if (input) { input.setAttribute('aria-invalid', 'true'); if (slot.id) input.setAttribute('aria-describedby', slot.id); }
    }
  }

  /**
   * Shows an error on a form: each line of the API's message next to the
   * field it names ([data-field]), the others at the top (.form-error).
   */
  PB.showErrors = function (form, err) {
    PB.clearErrors(form);
    form.dataset.state = 'error';
    const msg = err && err.message ? err.message : String(err);
    let first = null;
    for (const line of msg.split('\n').map((l) => l.trim()).filter(Boolean)) {
      const wraps = PB.errorFields(line).map((f) => fieldFor(form, f)).filter(Boolean);
      if (!wraps.length) { addError(form, null, line); continue; }
      for (const w of new Set(wraps)) { addError(form, w, line); first = first || w; }
    }
    const focus = first ? first.querySelector('input, select, textarea') : null;
    if (focus) focus.focus();
  };

  /** Shows a short success message in a form's .form-status. */
  PB.formOK = function (form, text) {
    form.dataset.state = 'ok';
    let st = form.querySelector('.form-status');
    if (!st) {
      st = h('span', { class: 'form-status', role: 'status' });
      (form.querySelector('.form-actions') || form).append(st);
    }
    st.textContent = text || 'Saved.';
  };

  /**
   * Handles a form's submit with an async action: errors go to
   * PB.showErrors, the submit button is disabled meanwhile.
   */
  PB.onSubmit = function (form, action) {
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (form.dataset.busy === 'true') return;
      form.dataset.busy = 'true';
      const btns = PB.$$('button[type="submit"], button:not([type])', form);
      btns.forEach((b) => { b.disabled = true; });
      PB.clearErrors(form);
      try {
        await action(form);
      } catch (err) {
        PB.showErrors(form, err);
      } finally {
        form.dataset.busy = 'false';
        btns.forEach((b) => { b.disabled = false; });
      }
    });
  };

  /** Shows a message in a page-level area (#flash), kind ok|error. */
  PB.flash = function (text, kind) {
    const el = document.getElementById('flash');
    if (!el) return;
    el.dataset.kind = kind || 'ok';
    PB.replace(el, h('p', { class: kind === 'error' ? 'form-error' : 'notice' }, text));
  };

  /**
   * A button that asks for confirmation in place: the first press arms it
   * ("Really delete?"), the second within 5 s runs action.
   */
  PB.confirmButton = function (label, action, attrs) {
    const b = h('button', Object.assign({ type: 'button', class: 'danger small', dataset: { armed: 'false' } }, attrs || {}), label);
    let timer = null;
    b.addEventListener('click', async () => {
      if (b.dataset.armed !== 'true') {
        b.dataset.armed = 'true';
        b.textContent = 'Confirm: ' + label.toLowerCase();
        timer = setTimeout(() => { b.dataset.armed = 'false'; b.textContent = label; }, 5000);
        return;
      }
      clearTimeout(timer);
      b.disabled = true;
      try { await action(); } catch (err) { PB.flash(err.message, 'error'); } finally {
        b.disabled = false; b.dataset.armed = 'false'; b.textContent = label;
      }
    });
    return b;
  };

  /** Fills a <select> with options [{value, label}] keeping its value if it can. */
  PB.fillSelect = function (sel, options, value) {
    const keep = value !== undefined ? value : sel.value;
    const fixed = PB.$$('option[data-fixed]', sel);
    PB.clear(sel);
    fixed.forEach((o) => sel.append(o));
    for (const o of options) sel.append(h('option', { value: o.value }, o.label || o.value));
    if (PB.$$('option', sel).some((o) => o.value === keep)) sel.value = keep;
  };

  /** Lists every record of a paged list (limit/offset), up to max. */
  PB.all = async function (path, max) {
    max = max || 5000;
    const out = [];
    const sep = path.includes('?') ? '&' : '?';
    for (let off = 0; off < max; off += 1000) {
      const page = await PB.get(path + sep + 'limit=1000&offset=' + off);
      out.push(...page);
      if (page.length < 1000) break;
    }
    return out;
  };

  /**
   * Runs an async loader for a page section; a failure is shown in the
   * section (p.load-error) instead of being lost, and cleared on success.
   */
  PB.load = async function (section, fn) {
    const el = typeof section === 'string' ? document.querySelector(section) : section;
    try {
      const v = await fn();
      const old = el && el.querySelector(':scope > .load-error');
      if (old) old.remove();
      return v;
    } catch (err) {
      if (el) {
        let p = el.querySelector(':scope > .load-error');
        if (!p) {
          p = h('p', { class: 'form-error load-error', role: 'alert' });
          const head = el.querySelector(':scope > h1, :scope > h2, :scope > .page-head');
          if (head) head.after(p); else el.prepend(p);
        }
        p.textContent = err.message || String(err);
      }
      return undefined;
    }
  };

  /** Runs fn now and every ms while the page is visible (never overlapping). */
  PB.every = function (ms, fn) {
    let running = false;
    const tick = async () => {
      if (running || document.hidden) return;
      running = true;
      try { await fn(); } catch (e) { /* shown by fn, or next time */ } finally { running = false; }
    };
    const t = setInterval(tick, ms);
    return { stop() { clearInterval(t); }, now: tick };
  };

  /** Calls fn at most once per ms (trailing). */
  PB.debounce = function (fn, ms) {
    let t = null;
    return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
  };

  // ---- keyboard ----------------------------------------------------------

  // "/" focuses the page's search box ([data-search]) unless typing.
  document.addEventListener('keydown', (e) => {
    if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    const box = document.querySelector('[data-search]');
    if (!box) return;
    e.preventDefault();
    box.focus();
    box.select();
    // Some input paths (remote keyboards, automation) still deliver the
    // character: keep it out of the box.
    const guard = (ev) => { if (ev.data === '/') ev.preventDefault(); };
    box.addEventListener('beforeinput', guard, { once: true });
    setTimeout(() => box.removeEventListener('beforeinput', guard), 300);
  });

  // Menu preview text, as policy/ipxe.go writes it.
  PB.hotkeyLabel = function (name) {
    const n = String(name || '').trim().toLowerCase();
    if (n === 'esc' || n === 'escape') return 'Esc';
    if (n === 'space') return 'Space';
    if (/^ctrl-[a-z]$/.test(n)) return 'Ctrl-' + n.slice(5).toUpperCase();
    if (/^[a-z0-9]$/.test(n)) return n.toUpperCase();
    return 'Ctrl-P';
  };
})();

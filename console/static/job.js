// One job: progress bar, log and events, live while it is open.
'use strict';
(function () {
  const { h, $ } = PB;
  const id = document.body.dataset.job;
  let job = null;
  let bar = null;
  let cancelBtn = null;

  function renderLog(lines) {
    const pre = $('#job-log');
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    PB.clear(pre);
    for (const l of lines || []) {
      pre.append(h('span', { class: 'log-line' }, h('time', { datetime: l.time, title: PB.fmtTime(l.time) }, PB.fmtTime(l.time).slice(11)), l.line), '\n');
    }
    if (!(lines || []).length) pre.append(h('span', { class: 'muted' }, 'No log lines yet.'));
    pre.dataset.lines = (lines || []).length;
    if ($('#job-log-follow').checked || atEnd) pre.scrollTop = pre.scrollHeight;
  }

  // Where the time goes: shares of network, CPU, disk and waiting, the
  // bottleneck, the machine's parts and the hint (GET /jobs/{id}'s
  // timing and time_report; docs/imaging.md, "Why is my restore slow?").
  const timeParts = [['network', 'Network'], ['cpu', 'CPU'], ['disk', 'Disk'], ['waiting', 'Waiting']];
  function renderTime(j) {
    const box = $('#job-time');
    const r = j.time_report;
    const t = j.timing;
    box.hidden = !r || !t;
    if (box.hidden) return;
    const shares = t.shares || {};
    const bar = PB.clear($('#job-time-bar'));
    for (const [k, label] of timeParts) {
      const v = shares[k] || 0;
      const seg = h('span', { class: 'time-seg time-' + k, title: label + ' ' + v + ' %', dataset: { part: k, share: v } }, v >= 10 ? label + ' ' + v + ' %' : '');
      seg.style.width = v + '%';
      if (t.bottleneck === k) seg.dataset.bottleneck = 'true';
      bar.append(seg);
    }
    bar.setAttribute('aria-label', r.summary);
    box.dataset.bottleneck = t.bottleneck || '';
    $('#job-time-summary').textContent = r.summary;
    $('#job-time-machine').textContent = r.machine_text || '';
    $('#job-time-machine').hidden = !r.machine_text;
    $('#job-time-hint').textContent = r.hint || '';
    $('#job-time-hint').hidden = !r.hint;
  }

  function render(j) {
    job = j;
    document.title = 'Job ' + j.id + ' · Preboot';
    $('#job-title').textContent = 'Job ' + j.id + (j.bundle ? ': ' + j.bundle : '');
    PB.replace($('#job-state'), PB.badge(j.state, j.state));
    if (!bar) { bar = PB.progress(j, true); $('#job-' + id).append(bar); } else PB.updateProgress(bar, j);
    $('#job-' + id).dataset.state = j.state;
    const err = $('#job-error');
    err.hidden = !j.error;
    err.textContent = j.error || '';
    renderTime(j);
    PB.replace($('#job-details-body'), PB.kv([
      ['Device', PB.deviceLink(j.mac), 'device'],
      ['Bundle', j.bundle ? [PB.bundleLink(j.bundle), ' v' + (j.bundle_version || '')] : '(picked at the menu)', 'bundle'],
      ['Kind', j.kind, 'kind'],
      ['Image', j.image, 'image'],
      ['Disk', j.device, 'disk'],
      ['Then', j.after, 'after'],
      ['Phase', j.phase, 'phase'],
      ['Message', j.message, 'message'],
      ['Created', PB.timeEl(j.created_at, false), 'created'],
      ['Started', PB.parseTime(j.started_at) ? PB.timeEl(j.started_at, false) : '', 'started'],
      ['Finished', PB.parseTime(j.finished_at) ? PB.timeEl(j.finished_at, false) : '', 'finished'],
      ['Assignment', j.assignment_id ? '#' + j.assignment_id : '', 'assignment'],
    ], { id: 'job-kv' }));
    if (j.log) renderLog(j.log);
    if (cancelBtn) cancelBtn.hidden = !PB.jobOpen(j);
  }

  async function load() {
    try {
      render(await PB.get('/jobs/' + id));
    } catch (err) {
      PB.flash(err.status === 404 ? 'There is no job ' + id + '.' : 'Could not load the job: ' + err.message, 'error');
    }
  }

  async function loadEvents() {
    const evs = await PB.get('/events?job=' + id + '&limit=200');
    const body = PB.clear($('#job-events-body'));
    for (const ev of evs) body.append(PB.eventRow(ev, { device: false }));
    if (!evs.length) body.append(PB.emptyRow(4, 'No events.'));
    return evs.length ? evs[0].id : 0;
  }

  cancelBtn = PB.confirmButton('Cancel job', async () => { render(await PB.send('POST', '/jobs/' + id + '/cancel')); }, { id: 'job-cancel', hidden: true });
  $('#job-actions').append(cancelBtn);

  async function start() {
    await load();
    let after = 0;
    try { after = await loadEvents(); } catch (e) { /* shown as empty */ }
    const refresh = PB.debounce(load, 200);
    PB.follow({ job: id }, (ev) => { PB.prependEvent($('#job-events-body'), ev, { device: false }); refresh(); }, { after });
    PB.every(2000, async () => { if (job && PB.jobOpen(job)) await load(); });
  }
  start();
})();

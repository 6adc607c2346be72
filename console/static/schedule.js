// Scheduled work: assignments with a time, whether the server wakes their
// devices then (and whether it did), and a button to wake them now.
// Polled while the page is visible.
'use strict';
(function () {
  const { h, $ } = PB;
  const body = $('#schedule-body');
  const unavailable = $('#schedule-unavailable');

  function state(a) {
    if (a.woken_at) return PB.badge('woken', 'succeeded');
    if (PB.parseTime(a.at) <= Date.now()) return PB.badge('due', 'running');
    return PB.badge('waiting', 'pending');
  }

  async function wakeNow(a) {
    const path = a.group ? '/groups/' + PB.enc(a.group) + '/wake' : '/devices/' + PB.enc(a.device) + '/wake';
    const res = await PB.send('POST', path);
    const sent = res.results.filter((r) => r.sent).length;
    PB.flash(sent + ' of ' + res.results.length + ' devices sent their magic packet' +
      (res.results.length ? ' (' + res.results[0].targets.map((t) => t.addr + (t.interface ? ' on ' + t.interface : '')).join(', ') + ')' : ''),
    sent === res.results.length ? 'ok' : 'error');
  }

  function row(a) {
    return h('tr', { class: 'schedule-row', dataset: { id: String(a.id), wake: String(!!a.wake), woken: String(!!a.woken_at) } },
      h('td', { class: 'at' }, PB.timeEl(a.at, false)),
      h('td', { class: 'bundle' }, PB.bundleLink(a.bundle)),
      h('td', { class: 'target' }, a.group ? ['group ', PB.groupLink(a.group)] : PB.deviceLink(a.device)),
      h('td', { class: 'apply', text: a.once ? 'once' : 'always' }),
      h('td', { class: 'wake', text: a.wake ? (a.woken_at ? 'woken ' + PB.fmtTime(a.woken_at) : 'yes') : 'no' }),
      h('td', { class: 'state' }, state(a)),
      h('td', {}, h('button', { type: 'button', class: 'small wake-now', onclick: () => wakeNow(a).catch((err) => PB.flash(err.message, 'error')) }, 'Wake now')));
  }

  async function load() {
    try {
      const list = await PB.get('/assignments' + PB.query({ scheduled: 'true', limit: 1000 }));
      list.sort((x, y) => PB.parseTime(x.at) - PB.parseTime(y.at));
      unavailable.hidden = true;
      PB.replace(body, list.length ? list.map(row) : PB.emptyRow(7, 'Nothing scheduled.'));
    } catch (err) {
      unavailable.textContent = 'Schedule unavailable: ' + err.message;
      unavailable.hidden = false;
    }
  }

  load();
  setInterval(() => { if (!document.hidden) load(); }, 10000);
})();

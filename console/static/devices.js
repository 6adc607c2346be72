// Devices: search, filters and paging over GET /devices.
'use strict';
(function () {
  const { h, $ } = PB;
  const LIMIT = 50;
  const form = $('#devices-filter');
  const search = $('#device-search');
  const reg = $('#device-registered');
  const group = $('#device-group');
  const params = new URLSearchParams(location.search);
  let offset = Math.max(0, parseInt(params.get('offset') || '0', 10) || 0);
  search.value = params.get('q') || '';
  reg.value = params.get('registered') || '';
  let seq = 0;

  function filters() {
    return { q: search.value.trim(), registered: reg.value, group: group.value };
  }

  function row(d) {
    const ev = d.last_event;
    return h('tr', { class: 'device-row', id: 'device-' + PB.macID(d.mac), dataset: { mac: d.mac, registered: String(d.registered) } },
      h('td', null, h('a', { href: '/console/devices/' + PB.enc(d.mac), class: 'device-name' }, d.name || '(unnamed)')),
      h('td', { class: 'mono nowrap' }, d.mac),
      h('td', null, [d.manufacturer, d.product].filter(Boolean).join(' ') || h('span', { class: 'muted' }, '—')),
      h('td', { class: 'mono' }, d.ip || ''),
      h('td', null, PB.timeEl(d.last_seen)),
      h('td', { class: 'msg small' }, ev ? [PB.badge(ev.kind, ev.kind, 'kind-' + ev.kind), ' ', ev.message] : h('span', { class: 'muted' }, '—')),
      h('td', null, PB.badge(d.registered ? 'yes' : 'no', d.registered ? 'yes' : 'no')));
  }

  async function load() {
    const my = ++seq;
    const f = filters();
    const q = Object.assign({}, f, { limit: LIMIT, offset });
    history.replaceState(null, '', location.pathname + PB.query(Object.assign({}, f, { offset: offset || '' })));
    await PB.load('#devices-card', async () => {
      const r = await PB.api('GET', '/devices' + PB.query(q));
      if (my !== seq) return; // a newer search is on its way
      const total = parseInt(r.headers.get('X-Total-Count') || '0', 10);
      const body = PB.clear($('#devices-body'));
      for (const d of r.data) body.append(row(d));
      if (!r.data.length) body.append(PB.emptyRow(7, f.q || f.registered || f.group ? 'No device matches.' : 'No device has booted from the network yet.'));
      const table = $('#devices-table');
      table.dataset.total = total;
      table.dataset.offset = offset;
      $('#devices-count').textContent = total === 1 ? '1 device' : total + ' devices';
      const last = Math.min(offset + r.data.length, total);
      $('#devices-page').textContent = total ? (offset + 1) + '–' + last + ' of ' + total : '';
      $('#devices-prev').disabled = offset === 0;
      $('#devices-next').disabled = offset + LIMIT >= total;
    });
  }

  const reload = PB.debounce(() => { offset = 0; load(); }, 250);
  search.addEventListener('input', reload);
  reg.addEventListener('change', () => { offset = 0; load(); });
  group.addEventListener('change', () => { offset = 0; load(); });
  form.addEventListener('submit', (e) => { e.preventDefault(); offset = 0; load(); });
  $('#devices-prev').addEventListener('click', () => { offset = Math.max(0, offset - LIMIT); load(); });
  $('#devices-next').addEventListener('click', () => { offset += LIMIT; load(); });

  PB.onSubmit($('#device-add-form'), async (f) => {
    const body = { mac: f.mac.value.trim() };
    if (f.name.value.trim()) body.name = f.name.value.trim();
    const d = await PB.send('POST', '/devices', body);
    location.assign('/console/devices/' + PB.enc(d.mac));
  });

  async function start() {
    try {
      const groups = await PB.all('/groups');
      PB.fillSelect(group, groups.map((g) => ({ value: g.name })), params.get('group') || '');
    } catch (e) { /* the filter stays at "any" */ }
    await load();
    // New devices and boots show up by themselves.
    const refresh = PB.debounce(load, 1500);
    PB.follow({}, (ev) => { if (ev.mac && (ev.kind === 'dhcp' || ev.kind === 'boot' || ev.kind === 'policy' || ev.kind === 'admin')) refresh(); });
  }
  start();
})();

// DHCP leases: the embedded DHCPv4 and DHCPv6 servers' addresses, their
// clients (MAC, client id or DUID/IAID), hostnames, states and expiry.
// Polled while the page is visible.
'use strict';
(function () {
  const { h, $ } = PB;
  const body = $('#leases-body');
  const family = $('#leases-family');
  const active = $('#leases-active');
  const unavailable = $('#leases-unavailable');

  function leaseRow(l) {
    const state = l.active ? l.state : l.state + ' (free)';
    return h('tr', { class: 'lease-row', dataset: { ip: l.ip, family: String(l.family), state: l.state, active: String(l.active) } },
      h('td', { class: 'ip mono', text: l.ip }),
      h('td', { class: 'mac' }, l.mac ? PB.deviceLink(l.mac) : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'client mono', text: l.client_id || '—' }),
      h('td', { class: 'hostname', text: l.hostname || '—' }),
      h('td', { class: 'state' }, PB.badge(state, l.active ? l.state : 'free')),
      h('td', { class: 'expires' }, PB.timeEl(l.expires, false)),
      h('td', { class: 'server', text: l.server || '—' }));
  }

  async function load() {
    try {
      const list = await PB.get('/dhcp/leases' + PB.query({ family: family.value, active: active.checked ? 'true' : '', limit: 1000 }));
      unavailable.hidden = true;
      PB.replace(body, list.length ? list.map(leaseRow) : PB.emptyRow(7, 'No leases.'));
    } catch (err) {
      unavailable.textContent = 'Leases unavailable: ' + err.message;
      unavailable.hidden = false;
    }
  }

  family.addEventListener('change', load);
  active.addEventListener('change', load);
  load();
  setInterval(() => { if (!document.hidden) load(); }, 10000);
})();

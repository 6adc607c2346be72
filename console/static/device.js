// A device: identity, hardware and image-safe data from its last
// inventory, groups, assignment, the decision for its next boot, jobs and
// events (live), and the "assign a bundle" form.
'use strict';
(function () {
  const { h, $ } = PB;
  const mac = document.body.dataset.mac;
  const path = '/devices/' + PB.enc(mac);
  let dev = null;
  let editFilled = false;
  let openJobs = 0;

  const ACTIONS = {
    bundle: 'runs a bundle',
    local: 'boots its local disk',
    menu: 'shows the Preboot menu',
    ignore: 'is ignored (proxyDHCP does not answer it)',
  };

  function renderDecision(d) {
    const box = $('#device-decision');
    if (!d) { PB.replace($('#decision-body'), h('p', { class: 'muted' }, 'Unknown.')); return; }
    box.dataset.action = d.action;
    box.dataset.source = d.source;
    box.dataset.bundle = d.bundle ? d.bundle.name : '';
    const what = d.action === 'bundle' && d.bundle
      ? ['Runs ', PB.bundleLink(d.bundle.name), ' (' + d.bundle.kind + ')', d.assignment ? (d.assignment.once ? ', once' : ', always') + (d.assignment.force ? ', forced' : '') : '']
      : 'The device ' + (ACTIONS[d.action] || d.action) + '.';
    const menu = d.menu ? d.menu.mode + (d.menu.mode === 'hotkey' ? ' (' + PB.hotkeyLabel(d.menu.hotkey) + ', ' + d.menu.timeout + ')' : d.menu.mode === 'always' ? ' (' + d.menu.timeout + ')' : '') : '';
    PB.replace($('#decision-body'),
      h('p', { id: 'decision-action', class: 'decision', dataset: { action: d.action } }, h('strong', null, what)),
      PB.kv([
        ['Source', h('span', { id: 'decision-source', class: 'mono' }, d.source)],
        ['Reason', h('span', { id: 'decision-reason' }, d.reason)],
        ['Menu', menu],
        ['Boot program', d.boot_path ? h('span', { id: 'decision-boot-path', dataset: { secureBoot: String(d.boot_path.secure_boot) } },
          d.boot_path.program + (d.boot_path.secure_boot ? ' → GRUB (Secure Boot path)' : ' (iPXE)') + ': ' + d.boot_path.reason) : ''],
        ['Groups', (d.groups || []).length ? (d.groups || []).map((g, i) => [i ? ', ' : '', PB.groupLink(g)]) : ''],
        ['Joins group', d.join_group ? PB.groupLink(d.join_group) : ''],
        ['Registers it', d.register ? 'yes, when this decision is applied' : ''],
      ]));
  }

  function renderAssignment(a) {
    const box = $('#device-assignment');
    box.dataset.assignmentId = a ? a.id : '';
    if (!a) { PB.replace(box, h('p', { class: 'muted', id: 'assignment-none' }, 'The device has no assignment of its own.')); return; }
    PB.replace(box, h('p', { id: 'assignment-current', dataset: { bundle: a.bundle, once: String(a.once), force: String(a.force) } },
      'Bundle ', PB.bundleLink(a.bundle), ' (' + a.bundle_kind + '), ', a.once ? 'once' : 'always', a.force ? ', forced' : '',
      h('span', { class: 'muted' }, ' — since ', PB.timeEl(a.created_at)), ' ',
      PB.confirmButton('Remove', async () => { await PB.send('DELETE', '/assignments/' + a.id); await reload(); }, { id: 'assignment-remove' })));
  }

  function renderSummary(d) {
    const ram = d.ram_bytes ? PB.bytes(d.ram_bytes) : '';
    PB.replace($('#summary-body'), PB.kv([
      ['MAC', h('span', { class: 'mono' }, d.mac), 'mac'],
      ['Name', d.name, 'name'],
      ['IP', d.ip ? h('span', { class: 'mono' }, d.ip) : '', 'ip'],
      ['Maker', d.manufacturer, 'manufacturer'],
      ['Model', d.product, 'product'],
      ['Serial', d.serial, 'serial'],
      ['UUID', d.uuid ? h('span', { class: 'mono small' }, d.uuid) : '', 'uuid'],
      ['Asset tag', d.asset_tag, 'asset_tag'],
      ['Firmware', [d.arch, d.platform].filter(Boolean).join(' / '), 'arch'],
      ['RAM', ram, 'ram'],
      ['Disks', d.disk_bytes ? PB.bytes(d.disk_bytes) : '', 'disks'],
      ['First seen', PB.timeEl(d.first_seen, false), 'first_seen'],
      ['Last seen', [PB.timeEl(d.last_seen, false), ' (', PB.ago(d.last_seen), ')'], 'last_seen'],
      ['Last applied', d.applied ? [PB.bundleLink(d.applied.bundle), ' v' + d.applied.bundle_version + ' ', d.applied.job ? PB.jobLink(d.applied.job) : '', ' ', PB.timeEl(d.applied.time)] : '', 'applied'],
      ['Notes', d.notes, 'notes'],
    ], { id: 'summary-kv' }));
  }

  function renderHardware(info) {
    const box = $('#hardware-body');
    if (!info || !info.hardware) {
      PB.replace(box, h('p', { class: 'muted', id: 'hardware-none' }, 'No inventory yet: the hardware is known after the device ran an inventory bundle or any imaging job.'));
      return;
    }
    const hw = info.hardware;
    const nics = (hw.nics || []).map((n) => h('tr', { class: 'nic-row', dataset: { mac: n.mac } },
      h('td', null, n.name), h('td', { class: 'mono' }, n.mac), h('td', null, n.state || ''), h('td', null, n.speed_mbps ? n.speed_mbps + ' Mb/s' : ''), h('td', null, n.driver || '')));
    const disks = (info.disks || []).map((d) => h('tr', { class: 'disk-row', dataset: { path: d.path } },
      h('td', { class: 'mono' }, d.path || d.name),
      h('td', { class: 'num' }, PB.bytes(d.size)),
      h('td', null, [d.model, d.serial ? '(' + d.serial + ')' : ''].filter(Boolean).join(' '), d.error ? h('div', { class: 'bad-text small' }, d.error) : null),
      h('td', null, [d.table, d.rotational ? 'HDD' : 'SSD', d.removable ? 'removable' : ''].filter(Boolean).join(', ')),
      h('td', { class: 'small' }, (d.partitions || []).map((p) => h('div', null, '#' + p.index + ' ' + PB.bytes(p.size) + (p.fstype ? ' ' + p.fstype : '') + (p.name ? ' "' + p.name + '"' : '') + (p.bootable ? ' boot' : ''))))));
    PB.replace(box,
      PB.kv([
        ['Host name', info.hostname],
        ['System', [hw.vendor, hw.product].filter(Boolean).join(' '), 'system'],
        ['Serial', hw.serial],
        ['Firmware', [hw.firmware, hw.bios_vendor, hw.bios_version].filter(Boolean).join(' · '), 'firmware'],
        ['CPU', (hw.cpus ? hw.cpus + ' × ' : '') + (hw.cpu_model || ''), 'cpu'],
        ['RAM', hw.memory_bytes ? PB.bytes(hw.memory_bytes) : '', 'memory'],
      ], { id: 'hardware-kv' }),
      h('h3', null, 'Disks'),
      disks.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'data', id: 'disks-table' },
        h('thead', null, h('tr', null, h('th', null, 'Disk'), h('th', { class: 'num' }, 'Size'), h('th', null, 'Model'), h('th', null, 'Type'), h('th', null, 'Partitions'))),
        h('tbody', null, disks))) : h('p', { class: 'muted' }, 'No disk reported.'),
      h('h3', null, 'Network interfaces'),
      nics.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'data', id: 'nics-table' },
        h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'MAC'), h('th', null, 'State'), h('th', null, 'Speed'), h('th', null, 'Driver'))),
        h('tbody', null, nics))) : h('p', { class: 'muted' }, 'No interface reported.'));
  }

  function renderImageSafe(info) {
    const box = $('#imagesafe-body');
    const s = info && info.image_safe;
    if (!s) {
      PB.replace(box, h('p', { class: 'muted', id: 'imagesafe-none' }, info ? 'The disk has no image-safe record.' : 'Not known before an inventory.'));
      return;
    }
    const n = s.network || {};
    PB.replace(box, PB.kv([
      ['Device ID', s.device_id, 'device_id'],
      ['Host name', s.hostname, 'hostname'],
      ['Server', s.server, 'server'],
      ['Last image', s.last_image ? [s.last_image, PB.parseTime(s.last_image_at) ? [' ', PB.timeEl(s.last_image_at)] : null] : '', 'last_image'],
      ['Network', [n.interface, n.mode, n.address, n.gateway ? 'gw ' + n.gateway : '', (n.dns || []).length ? 'DNS ' + n.dns.join(' ') : '', n.domain].filter(Boolean).join(' · '), 'network'],
      ['Updated', PB.parseTime(s.updated) ? PB.timeEl(s.updated) : '', 'updated'],
      ...Object.entries(s.extra || {}).map(([k, v]) => [k, v]),
    ], { id: 'imagesafe-kv' }));
  }

  function renderGroups(d) {
    const stat = d.groups || [];
    const all = (d.decision && d.decision.groups) || stat.map((g) => g.name);
    const statNames = new Set(stat.map((g) => g.name));
    const items = all.map((name) => h('li', { class: 'group-item', dataset: { group: name } }, PB.groupLink(name),
      h('span', { class: 'muted small' }, statNames.has(name) ? ' (member)' : ' (matches its expression)')));
    PB.replace($('#groups-body'), items.length ? h('ul', { class: 'plain', id: 'groups-list' }, items) : h('p', { class: 'muted' }, 'In no group.'));
  }

  function renderHead(d) {
    $('#device-title').textContent = d.name || d.mac;
    PB.replace($('#device-registered'), PB.badge(d.registered ? 'registered' : 'unregistered', d.registered ? 'yes' : 'no'));
    document.title = (d.name || d.mac) + ' · Preboot';
  }

  function fillEdit(d) {
    const f = $('#device-edit-form');
    f.name.value = d.name || '';
    f.asset_tag.value = d.asset_tag || '';
    f.notes.value = d.notes || '';
    f.registered.checked = !!d.registered;
    editFilled = true;
  }

  async function reload() {
    let d;
    try {
      d = await PB.get(path + '?events=100');
    } catch (err) {
      if (err.status === 404) {
        $('#device-missing').hidden = false;
        renderDecision(null);
        renderAssignment(null);
        PB.renderJobs($('#device-jobs-body'), [], { device: false });
        return null;
      }
      PB.flash('Could not load the device: ' + err.message, 'error');
      return null;
    }
    dev = d;
    $('#device-missing').hidden = true;
    renderHead(d);
    renderDecision(d.decision);
    renderAssignment(d.assignment);
    renderSummary(d);
    renderHardware(d.info);
    renderImageSafe(d.info);
    renderGroups(d);
    PB.renderJobs($('#device-jobs-body'), d.jobs || [], { device: false, empty: 'No job yet.' });
    openJobs = (d.jobs || []).filter(PB.jobOpen).length;
    const body = PB.clear($('#device-events-body'));
    for (const ev of d.events || []) body.append(PB.eventRow(ev, { device: false }));
    if (!(d.events || []).length) body.append(PB.emptyRow(4, 'No events yet.'));
    if (!editFilled) fillEdit(d);
    return d;
  }

  async function loadBundles() {
    const bundles = await PB.all('/bundles');
    PB.fillSelect($('#assign-bundle'), bundles.map((b) => ({ value: b.name, label: b.name + ' (' + b.kind + ')' })));
  }

  PB.onSubmit($('#assign-form'), async (f) => {
    const bundle = f.bundle.value;
    if (!bundle) throw new Error('bundle: choose a bundle to assign');
    const a = await PB.send('POST', '/assignments', { bundle, device: mac, once: f.once.checked, force: f.force.checked, replace: true });
    await reload();
    PB.formOK(f, 'Assigned ' + a.bundle + '.');
  });

  PB.onSubmit($('#device-edit-form'), async (f) => {
    const d = await PB.send('PATCH', path, { name: f.name.value.trim(), asset_tag: f.asset_tag.value, notes: f.notes.value, registered: f.registered.checked });
    fillEdit(d);
    await reload();
    PB.formOK(f, 'Saved.');
  });

  $('#device-actions').append(h('a', { class: 'button secondary', id: 'device-menu-link', href: '/console/menu?scope=device:' + PB.enc(mac) }, 'Menu override'), ' ', PB.confirmButton('Delete device', async () => {
    await PB.send('DELETE', path);
    location.assign('/console/devices');
  }, { id: 'device-delete' }));

  async function pollJobs() {
    if (openJobs === 0) return;
    const jobs = await PB.get('/jobs?device=' + PB.enc(mac) + '&limit=10');
    const wasOpen = openJobs;
    openJobs = jobs.filter(PB.jobOpen).length;
    PB.renderJobs($('#device-jobs-body'), jobs, { device: false, empty: 'No job yet.' });
    if (openJobs < wasOpen) refresh(); // a job ended: the decision may have changed
  }
  const refresh = PB.debounce(reload, 400);

  async function start() {
    const [d] = await Promise.all([reload(), loadBundles().catch((e) => PB.showErrors($('#assign-form'), e))]);
    const after = d && d.events && d.events.length ? d.events[0].id : 0;
    PB.follow({ device: mac }, (ev) => {
      PB.prependEvent($('#device-events-body'), ev, { device: false, max: 200 });
      if (ev.kind !== 'dhcp') refresh();
    }, { after });
    PB.every(2000, pollJobs);
  }
  start();
})();

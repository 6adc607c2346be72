// One group: its assignment, members added by hand, settings.
'use strict';
(function () {
  const { h, $ } = PB;
  let name = document.body.dataset.group;
  const gpath = () => '/groups/' + PB.enc(name);

  function renderAssignment(a) {
    const box = $('#group-assignment-body');
    box.dataset.assignmentId = a ? a.id : '';
    if (!a) { PB.replace(box, h('p', { class: 'muted', id: 'group-assignment-none' }, 'The group has no assignment.')); return; }
    PB.replace(box, h('p', { id: 'group-assignment-current', dataset: { bundle: a.bundle } },
      'Bundle ', PB.bundleLink(a.bundle), ' (' + a.bundle_kind + '), ', a.once ? 'once per device' : 'always', a.force ? ', forced' : '', ' ',
      PB.confirmButton('Remove', async () => { await PB.send('DELETE', '/assignments/' + a.id); await load(); }, { id: 'group-assignment-remove' })));
  }

  async function load() {
    let g;
    try {
      g = await PB.get(gpath());
    } catch (err) {
      PB.flash(err.status === 404 ? 'There is no group ' + name + '.' : err.message, 'error');
      return;
    }
    $('#group-title').textContent = 'Group ' + g.name;
    $('#group-summary').textContent = 'priority ' + g.priority + (g.match ? ' · members by expression: ' + g.match : '');
    renderAssignment(g.assignment);
    const f = $('#group-edit-form');
    f.name.value = g.name;
    f.priority.value = g.priority;
    f.description.value = g.description || '';
    f.match.value = g.match || '';
    await loadMembers();
  }

  async function loadMembers() {
    await PB.load('#group-members', async () => {
      const devs = await PB.all(gpath() + '/members');
      const body = PB.clear($('#members-body'));
      for (const d of devs) {
        body.append(h('tr', { class: 'member-row', id: 'member-' + PB.macID(d.mac), dataset: { mac: d.mac } },
          h('td', null, PB.deviceLink(d.mac, d.name || '(unnamed)')),
          h('td', { class: 'mono' }, d.mac),
          h('td', null, [d.manufacturer, d.product].filter(Boolean).join(' ')),
          h('td', null, PB.timeEl(d.last_seen)),
          h('td', null, h('button', { type: 'button', class: 'secondary small remove', 'aria-label': 'Remove ' + d.mac + ' from the group',
            onclick: async () => { try { await PB.send('DELETE', gpath() + '/members/' + PB.enc(d.mac)); await load(); } catch (e) { PB.flash(e.message, 'error'); } } }, 'Remove'))));
      }
      if (!devs.length) body.append(PB.emptyRow(5, 'No member added by hand.'));
    });
  }

  PB.onSubmit($('#group-assign-form'), async (f) => {
    if (!f.bundle.value) throw new Error('bundle: choose a bundle to assign');
    const a = await PB.send('POST', '/assignments', { bundle: f.bundle.value, group: name, once: f.once.checked, force: f.force.checked, replace: true });
    await load();
    PB.formOK(f, 'Assigned ' + a.bundle + '.');
  });

  PB.onSubmit($('#member-form'), async (f) => {
    const mac = f.mac.value.trim();
    if (!mac) throw new Error('mac: the MAC of a known device');
    await PB.send('PUT', gpath() + '/members/' + PB.enc(mac));
    f.reset();
    await load();
    PB.formOK(f, 'Added.');
  });

  PB.onSubmit($('#group-edit-form'), async (f) => {
    const body = { name: f.name.value.trim(), description: f.description.value.trim(), match: f.match.value.trim() };
    if (!/^\d+$/.test(f.priority.value.trim())) throw new Error('priority: want a whole number');
    body.priority = Number(f.priority.value);
    const g = await PB.send('PATCH', gpath(), body);
    if (g.name !== name) {
      location.assign('/console/groups/' + PB.enc(g.name));
      return;
    }
    await load();
    PB.formOK(f, 'Saved.');
  });

  $('#group-actions').append(' ', PB.confirmButton('Delete group', async () => {
    await PB.send('DELETE', gpath());
    location.assign('/console/groups');
  }, { id: 'group-delete' }));

  async function start() {
    await load();
    try {
      const bundles = await PB.all('/bundles');
      PB.fillSelect($('#group-assign-bundle'), bundles.map((b) => ({ value: b.name, label: b.name + ' (' + b.kind + ')' })));
      const devs = await PB.get('/devices?limit=1000');
      PB.replace($('#device-macs'), devs.map((d) => h('option', { value: d.mac }, d.name || '')));
    } catch (e) { /* typed by hand */ }
  }
  start();
})();

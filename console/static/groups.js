// Groups: list with their assignments, create, delete.
'use strict';
(function () {
  const { h, $ } = PB;

  async function load() {
    await PB.load('#groups-card', async () => {
      const [groups, assigns] = await Promise.all([PB.all('/groups'), PB.all('/assignments')]);
      const byGroup = new Map(assigns.filter((a) => a.group).map((a) => [a.group, a]));
      const body = PB.clear($('#groups-body'));
      for (const g of groups) {
        const a = byGroup.get(g.name);
        body.append(h('tr', { id: 'group-' + g.name, class: 'group-row', dataset: { group: g.name, priority: g.priority } },
          h('td', { class: 'num' }, g.priority),
          h('td', null, h('a', { href: '/console/groups/' + PB.enc(g.name) }, h('strong', null, g.name)), g.description ? h('div', { class: 'muted small' }, g.description) : null),
          h('td', null, g.match ? h('code', null, g.match) : h('span', { class: 'muted' }, '—')),
          h('td', { class: 'num' }, g.members),
          h('td', { class: 'assignment' }, a ? [PB.bundleLink(a.bundle), h('span', { class: 'muted small' }, ' ' + (a.once ? 'once' : 'always') + (a.force ? ', forced' : ''))] : h('span', { class: 'muted' }, 'none')),
          h('td', { class: 'nowrap' },
            h('a', { class: 'button secondary small', href: '/console/groups/' + PB.enc(g.name) }, 'Open'), ' ',
            PB.confirmButton('Delete', async () => { await PB.send('DELETE', '/groups/' + PB.enc(g.name)); await load(); PB.flash('Group ' + g.name + ' deleted.'); }, { class: 'danger small delete', 'aria-label': 'Delete ' + g.name }))));
      }
      if (!groups.length) body.append(PB.emptyRow(6, 'No group yet.'));
    });
  }

  PB.onSubmit($('#group-form'), async (f) => {
    const body = { name: f.name.value.trim(), description: f.description.value.trim(), match: f.match.value.trim() };
    if (f.priority.value.trim() !== '') {
      if (!/^\d+$/.test(f.priority.value.trim())) throw new Error('priority: want a whole number (0 = after the last group)');
      body.priority = Number(f.priority.value);
    }
    const g = await PB.send('POST', '/groups', body);
    f.reset();
    await load();
    PB.flash('Group ' + g.name + ' created.');
  });

  load();
})();

// Menu: edit the server default menu, or a group's or device's override,
// with a live preview.
'use strict';
(function () {
  const { h, $ } = PB;
  const form = $('#menu-form');
  const scopeSel = $('#menu-scope');
  const ed = PB.menuEditor(form);
  let hasOverride = false;

  function scope() {
    const v = scopeSel.value;
    if (v.startsWith('group:')) return { kind: 'group', name: v.slice(6), path: '/groups/' + PB.enc(v.slice(6)) + '/menu' };
    if (v.startsWith('device:')) return { kind: 'device', name: v.slice(7), path: '/devices/' + PB.enc(v.slice(7)) + '/menu' };
    return { kind: 'server', path: '/menu' };
  }

  async function load() {
    const s = scope();
    PB.clearErrors(form);
    history.replaceState(null, '', location.pathname + (s.kind === 'server' ? '' : '?scope=' + PB.enc(scopeSel.value)));
    const note = $('#menu-scope-note');
    const slot = PB.clear($('#menu-remove-slot'));
    form.dataset.scope = scopeSel.value;
    try {
      if (s.kind === 'server') {
        ed.set(await PB.get('/menu'));
        note.hidden = true;
        hasOverride = false;
        return;
      }
      try {
        ed.set(await PB.get(s.path));
        hasOverride = true;
        note.textContent = 'This ' + s.kind + ' has its own menu; it beats ' + (s.kind === 'device' ? 'its groups\' and ' : '') + 'the server default.';
        slot.append(PB.confirmButton('Remove override', async () => { await PB.send('DELETE', s.path); await load(); PB.formOK(form, 'Override removed.'); }, { id: 'menu-remove' }));
      } catch (err) {
        if (err.status !== 404) throw err;
        hasOverride = false;
        ed.set(await PB.get('/menu'));
        note.textContent = 'This ' + s.kind + ' has no menu of its own: it uses ' + (s.kind === 'device' ? 'its first group\'s, else ' : '') + 'the server default (shown). Saving creates an override.';
      }
      note.hidden = false;
      form.dataset.override = String(hasOverride);
    } catch (err) {
      PB.showErrors(form, err);
    }
  }

  PB.onSubmit(form, async () => {
    const s = scope();
    const m = await PB.send('PUT', s.path, ed.get());
    ed.set(m);
    if (s.kind !== 'server' && !hasOverride) await load();
    PB.formOK(form, 'Saved.');
  });
  scopeSel.addEventListener('change', load);

  async function start() {
    const want = new URLSearchParams(location.search).get('scope') || 'server';
    try {
      const [bundles, groups] = await Promise.all([PB.all('/bundles'), PB.all('/groups')]);
      ed.setBundles(bundles);
      for (const g of groups) scopeSel.append(h('option', { value: 'group:' + g.name }, 'group ' + g.name));
    } catch (e) { PB.showErrors(form, e); }
    if (want.startsWith('device:')) scopeSel.append(h('option', { value: want }, 'device ' + want.slice(7)));
    if (want.startsWith('group:') && !Array.from(scopeSel.options).some((o) => o.value === want)) scopeSel.append(h('option', { value: want }, 'group ' + want.slice(6)));
    scopeSel.value = want;
    await load();
  }
  start();
})();

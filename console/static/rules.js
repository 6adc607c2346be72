// Rules: the ordered list (up/down, enable/disable), create/edit, test.
'use strict';
(function () {
  const { h, $ } = PB;
  const form = $('#rule-form');
  let rules = [];
  let editing = null;

  async function move(r, pos, focusSel) {
    try {
      await PB.send('PATCH', '/rules/' + PB.enc(r.name), { position: pos });
      await load();
      const el = document.querySelector('#rule-' + CSS.escape(r.name) + ' ' + focusSel);
      if (el && !el.disabled) el.focus();
      else { const row = document.getElementById('rule-' + r.name); if (row) row.querySelector('button').focus(); }
    } catch (err) { PB.flash(err.message, 'error'); }
  }

  async function toggle(r) {
    try {
      await PB.send('PATCH', '/rules/' + PB.enc(r.name), { enabled: !r.enabled });
      await load();
      const el = document.querySelector('#rule-' + CSS.escape(r.name) + ' .toggle');
      if (el) el.focus();
    } catch (err) { PB.flash(err.message, 'error'); }
  }

  function row(r, i, n) {
    return h('li', { id: 'rule-' + r.name, class: 'rule-row', dataset: { rule: r.name, position: r.position, enabled: String(r.enabled) } },
      h('span', { class: 'pos', 'aria-label': 'position ' + r.position }, r.position),
      h('div', null,
        h('strong', { class: 'rule-name' }, r.name), ' ',
        h('code', { class: 'rule-match' }, r.match),
        h('div', { class: 'small' },
          r.bundle ? ['runs ', PB.bundleLink(r.bundle)] : null,
          r.bundle && r.group ? ' · ' : null,
          r.group ? ['adds to ', PB.groupLink(r.group)] : null)),
      h('div', { class: 'rule-actions' },
        h('button', { type: 'button', class: 'secondary small up', disabled: i === 0, 'aria-label': 'Move ' + r.name + ' up', onclick: () => move(r, r.position - 1, '.up') }, '↑ Up'),
        h('button', { type: 'button', class: 'secondary small down', disabled: i === n - 1, 'aria-label': 'Move ' + r.name + ' down', onclick: () => move(r, r.position + 1, '.down') }, '↓ Down'),
        h('button', { type: 'button', class: 'small toggle', 'aria-pressed': String(r.enabled), 'aria-label': (r.enabled ? 'Disable ' : 'Enable ') + r.name, onclick: () => toggle(r) }, r.enabled ? 'Enabled' : 'Disabled'),
        h('button', { type: 'button', class: 'secondary small edit', 'aria-label': 'Edit ' + r.name, onclick: () => edit(r) }, 'Edit'),
        PB.confirmButton('Delete', async () => { await PB.send('DELETE', '/rules/' + PB.enc(r.name)); if (editing === r.name) resetForm(); await load(); }, { class: 'danger small delete', 'aria-label': 'Delete ' + r.name })));
  }

  async function load() {
    await PB.load('#rules-card', async () => {
      rules = await PB.get('/rules');
      const list = PB.replace($('#rules-list'), rules.map((r, i) => row(r, i, rules.length)));
      if (!rules.length) list.append(h('li', { class: 'muted empty' }, 'No rule: unregistered devices get the unregistered default (Settings).'));
    });
  }

  function resetForm() {
    editing = null;
    form.reset();
    form.dataset.mode = 'create';
    $('#rule-form-h').textContent = 'New rule';
    $('#rule-submit').textContent = 'Create rule';
    $('#rule-cancel').hidden = true;
    form.position.placeholder = '0 = last';
    PB.clearErrors(form);
  }

  function edit(r) {
    resetForm();
    editing = r.name;
    form.dataset.mode = 'edit';
    form.dataset.rule = r.name;
    form.name.value = r.name;
    form.position.value = r.position;
    form.match.value = r.match;
    form.bundle.value = r.bundle || '';
    form.group.value = r.group || '';
    form.enabled.checked = r.enabled;
    $('#rule-form-h').textContent = 'Edit rule ' + r.name;
    $('#rule-submit').textContent = 'Save changes';
    $('#rule-cancel').hidden = false;
    form.match.focus();
  }

  PB.onSubmit(form, async () => {
    const body = { name: form.name.value.trim(), match: form.match.value.trim(), bundle: form.bundle.value, group: form.group.value, enabled: form.enabled.checked };
    const pos = form.position.value.trim();
    if (pos !== '') {
      if (!/^\d+$/.test(pos)) throw new Error('position: want 1 for the first rule, or 0 for the last');
      body.position = Number(pos);
    }
    let r;
    if (editing) {
      if (body.name === editing) delete body.name;
      r = await PB.send('PATCH', '/rules/' + PB.enc(editing), body);
    } else {
      r = await PB.send('POST', '/rules', body);
    }
    const was = editing;
    resetForm();
    await load();
    PB.flash('Rule ' + r.name + (was ? ' saved.' : ' created at position ' + r.position + '.'));
  });
  $('#rule-cancel').addEventListener('click', resetForm);

  PB.onSubmit($('#rule-test-form'), async (f) => {
    const body = { device: f.device.value.trim() };
    if (f.match.value.trim()) body.match = f.match.value.trim();
    const res = await PB.send('POST', '/rules/test', body);
    const facts = Object.entries(res.facts || {}).filter(([, v]) => v !== '' && v !== 0 && v !== null).map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)]);
    PB.replace($('#rule-test-result'),
      h('p', { id: 'rule-test-outcome', dataset: { matched: String(res.matched), rule: res.rule || '' } },
        h('strong', null, res.matched ? (res.rule ? 'Matches rule ' + res.rule + '.' : 'The expression matches.') : 'No match.')),
      PB.kv(facts));
  });

  async function start() {
    try {
      const [bundles, groups] = await Promise.all([PB.all('/bundles'), PB.all('/groups')]);
      PB.fillSelect(form.bundle, bundles.map((b) => ({ value: b.name, label: b.name + ' (' + b.kind + ')' })));
      PB.fillSelect(form.group, groups.map((g) => ({ value: g.name })));
      const devs = await PB.get('/devices?limit=1000');
      PB.replace($('#rule-test-macs'), devs.map((d) => h('option', { value: d.mac }, d.name || '')));
    } catch (e) { PB.showErrors(form, e); }
    await load();
  }
  start();
})();

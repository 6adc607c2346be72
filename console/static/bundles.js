// Bundles: list, create and edit with the fields of each kind, delete.
'use strict';
(function () {
  const { h, $, $$ } = PB;
  const form = $('#bundle-form');
  const kindSel = $('#bundle-kind');
  let editing = null; // name of the bundle being edited

  const INT_LIST = new Set(['partitions']);
  const INT = new Set(['compression', 'min_clients', 'grow_partition']);
  const LINES = new Set(['initrd', 'disks']);
  const BOOL = new Set(['confirm', 'personalize', 'force']);

  function fieldset(kind) { return form.querySelector('fieldset[data-kind="' + kind + '"]'); }

  function showKind(kind) {
    for (const fs of $$('fieldset[data-kind]', form)) fs.disabled = fs.dataset.kind !== kind;
    form.dataset.kind = kind;
  }

  /** The params object of the visible fieldset; only fields that are set. */
  function params(kind) {
    const fs = fieldset(kind);
    const p = {};
    const problems = [];
    for (const el of $$('[name]', fs)) {
      const n = el.name;
      if (BOOL.has(n)) { p[n] = el.checked; continue; }
      const v = el.value.trim();
      if (v === '') continue;
      if (INT_LIST.has(n)) {
        const parts = v.split(/[\s,]+/).filter(Boolean);
        if (!parts.every((x) => /^\d+$/.test(x))) { problems.push(n + ': want partition numbers like 2,3'); continue; }
        p[n] = parts.map(Number);
      } else if (INT.has(n)) {
        if (!/^-?\d+$/.test(v)) { problems.push(n + ': want a whole number'); continue; }
        p[n] = Number(v);
      } else if (LINES.has(n)) {
        p[n] = v.split('\n').map((x) => x.trim()).filter(Boolean);
      } else if (n.includes('.')) {
        const [obj, key] = n.split('.', 2); // disk.serial → p.disk.serial
        p[obj] = Object.assign(p[obj] || {}, { [key]: v });
      } else {
        p[n] = v;
      }
    }
    if (problems.length) throw new Error(problems.join('\n'));
    return p;
  }

  function fillParams(kind, p) {
    const fs = fieldset(kind);
    for (const el of $$('[name]', fs)) {
      const dot = el.name.indexOf('.');
      const v = !p ? undefined : dot < 0 ? p[el.name] : (p[el.name.slice(0, dot)] || {})[el.name.slice(dot + 1)];
      if (BOOL.has(el.name)) { el.checked = !!v; continue; }
      if (el.tagName === 'SELECT') { el.value = v || el.options[0].value; continue; }
      if (v === undefined || v === null || v === 0 || v === '0s') { el.value = ''; continue; }
      el.value = Array.isArray(v) ? v.join(LINES.has(el.name) ? '\n' : ',') : String(v);
    }
  }

  function resetForm() {
    editing = null;
    form.reset();
    form.dataset.mode = 'create';
    kindSel.disabled = false;
    showKind(kindSel.value);
    $('#bundle-form-h').textContent = 'New bundle';
    $('#bundle-submit').textContent = 'Create bundle';
    $('#bundle-cancel').hidden = true;
    PB.clearErrors(form);
  }

  function edit(b) {
    resetForm();
    editing = b.name;
    form.dataset.mode = 'edit';
    form.dataset.bundle = b.name;
    form.name.value = b.name;
    kindSel.value = b.kind;
    kindSel.disabled = true;
    form.description.value = b.description || '';
    showKind(b.kind);
    fillParams(b.kind, b.params || {});
    $('#bundle-form-h').textContent = 'Edit bundle ' + b.name;
    $('#bundle-submit').textContent = 'Save changes';
    $('#bundle-cancel').hidden = false;
    $('#bundle-form-card').scrollIntoView({ block: 'start' });
    form.name.focus();
  }

  function summary(p) {
    const out = [];
    for (const [k, v] of Object.entries(p || {})) {
      if (v === '' || v === null || v === false || (Array.isArray(v) && !v.length)) continue;
      // secrets: only their names (the API shows every value as "(secret)").
      let s = Array.isArray(v) ? v.join(', ') : (v && typeof v === 'object') ? Object.keys(v).join(', ') : String(v);
      if (k === 'script') s = s.split('\n').filter((l) => l && !l.startsWith('#!'))[0] || '…';
      if (s.length > 60) s = s.slice(0, 57) + '…';
      out.push(h('span', { class: 'nowrap small' }, h('span', { class: 'muted' }, k + ' '), h('code', null, s)));
    }
    return out.map((x, i) => [i ? ' · ' : '', x]);
  }

  async function load() {
    await PB.load('#bundles-card', async () => {
      const bundles = await PB.all('/bundles');
      const body = PB.clear($('#bundles-body'));
      for (const b of bundles) {
        body.append(h('tr', { id: 'bundle-' + b.name, class: 'bundle-row', dataset: { bundle: b.name, kind: b.kind, version: b.version } },
          h('td', null, h('strong', null, b.name), b.description ? h('div', { class: 'muted small' }, b.description) : null),
          h('td', null, PB.badge(b.kind, b.kind)),
          h('td', { class: 'msg' }, summary(b.params)),
          h('td', { class: 'num' }, b.version),
          h('td', null, PB.timeEl(b.updated_at)),
          h('td', { class: 'nowrap' },
            h('button', { type: 'button', class: 'secondary small edit', onclick: () => edit(b), 'aria-label': 'Edit ' + b.name }, 'Edit'), ' ',
            PB.confirmButton('Delete', async () => { await PB.send('DELETE', '/bundles/' + PB.enc(b.name)); if (editing === b.name) resetForm(); await load(); PB.flash('Bundle ' + b.name + ' deleted.'); }, { class: 'danger small delete', 'aria-label': 'Delete ' + b.name }))));
      }
      if (!bundles.length) body.append(PB.emptyRow(6, 'No bundle yet: create one below.'));
      if (location.hash && location.hash.startsWith('#bundle-')) {
        const row = document.getElementById(location.hash.slice(1));
        if (row) row.scrollIntoView({ block: 'center' });
      }
    });
  }

  kindSel.addEventListener('change', () => showKind(kindSel.value));
  $('#bundle-cancel').addEventListener('click', resetForm);
  $('#bundle-new').addEventListener('click', (e) => { e.preventDefault(); resetForm(); $('#bundle-form-card').scrollIntoView({ block: 'start' }); form.name.focus(); });

  PB.onSubmit(form, async () => {
    const kind = kindSel.value;
    const body = { name: form.name.value.trim(), description: form.description.value.trim(), params: params(kind) };
    let b;
    if (editing) {
      if (body.name === editing) delete body.name;
      b = await PB.send('PATCH', '/bundles/' + PB.enc(editing), body);
    } else {
      body.kind = kind;
      b = await PB.send('POST', '/bundles', body);
    }
    const was = editing;
    resetForm();
    await load();
    PB.flash(was ? 'Bundle ' + b.name + ' saved (version ' + b.version + ').' : 'Bundle ' + b.name + ' created.');
    const row = document.getElementById('bundle-' + b.name);
    if (row) row.scrollIntoView({ block: 'center' });
  });

  async function loadImages() {
    try {
      const list = await PB.get('/images');
      PB.replace($('#image-names'), (list.images || []).map((i) => h('option', { value: i.name })));
    } catch (e) { /* names can be typed */ }
  }

  showKind(kindSel.value);
  load();
  loadImages();
})();

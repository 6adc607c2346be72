// The Preboot menu editor and its preview (Menu and Settings pages). The
// preview reproduces what policy/ipxe.go writes for iPXE's menu command.
'use strict';
(function () {
  const { h, $, $$ } = PB;

  /** Seconds in a Go duration string ("1m30s", "500ms"); NaN if unparsable. */
  function seconds(d) {
    if (typeof d === 'number') return d;
    const s = String(d || '').trim();
    if (s === '' || s === '0') return 0;
    const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)/g;
    let total = 0;
    let used = 0;
    let m;
    const mult = { ns: 1e-9, us: 1e-6, 'µs': 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };
    while ((m = re.exec(s)) !== null) { total += parseFloat(m[1]) * mult[m[2]]; used += m[0].length; }
    return used === s.length ? total : NaN;
  }
  PB.seconds = seconds;

  // iPXE's menu text: no '$', no control characters.
  const menuText = (s) => String(s || '').replace(/[$\u0000-\u001f\u007f]/g, '');

  /**
   * Binds a menu form (fields of the "menu-editor" template) and its
   * preview. opts.bundles: the bundle list (name, kind).
   */
  PB.menuEditor = function (form) {
    let chosen = [];
    let bundles = [];
    const boxes = $('#menu-bundles', form);

    function renderBundles() {
      PB.replace(boxes, bundles.map((b) => h('label', { class: 'menu-bundle', dataset: { bundle: b.name } },
        h('input', { type: 'checkbox', name: 'menu-bundle', value: b.name, checked: chosen.includes(b.name), onchange: (e) => {
          if (e.target.checked) { if (!chosen.includes(b.name)) chosen.push(b.name); } else chosen = chosen.filter((n) => n !== b.name);
          preview();
        } }), b.name, h('span', { class: 'muted small' }, ' ' + b.kind))));
      if (!bundles.length) boxes.append(h('span', { class: 'muted' }, 'No bundle exists yet.'));
      const sel = $('#preview-assigned');
      if (sel) PB.fillSelect(sel, bundles.map((b) => ({ value: b.name, label: b.name + ' (' + b.kind + ')' })));
    }

    function get() {
      let t = form.timeout.value.trim();
      if (/^\d+$/.test(t)) t += 's';
      const m = { mode: form.mode.value, timeout: t || '0s', title: form.title.value.trim(), shell: form.shell.checked, bundles: chosen.slice() };
      if (form.hotkey.value.trim()) m.hotkey = form.hotkey.value.trim();
      return m;
    }

    function set(m) {
      m = m || { mode: 'never', timeout: '0s', shell: false };
      form.mode.value = m.mode || 'never';
      form.hotkey.value = m.hotkey || '';
      form.timeout.value = m.timeout && m.timeout !== '0s' ? m.timeout : '';
      form.title.value = m.title || '';
      form.shell.checked = !!m.shell;
      chosen = (m.bundles || []).slice();
      // Offered bundles that no longer exist stay visible, so they can be unchecked.
      for (const n of chosen) if (!bundles.some((b) => b.name === n)) bundles.push({ name: n, kind: '?' });
      renderBundles();
      preview();
    }

    function setBundles(list) {
      bundles = list.slice();
      renderBundles();
      preview();
    }

    /** Renders the preview: the lines policy/ipxe.go menuScript writes. */
    function preview() {
      const screen = $('#menu-preview');
      if (!screen) return;
      const m = get();
      const assignedName = $('#preview-assigned') ? $('#preview-assigned').value : '';
      const assigned = bundles.find((b) => b.name === assignedName);
      const mac = ($('#preview-mac') && $('#preview-mac').value.trim()) || '52:54:00:12:34:56';
      const title = m.title || 'Preboot';
      const items = [];
      if (assigned) {
        items.push({ gap: true, text: 'Assigned: ' + menuText(assigned.name) + ' (' + assigned.kind + ')' });
        items.push({ id: 'work', text: 'Start assigned work' });
      } else {
        items.push({ gap: true, text: 'No work assigned' });
      }
      if (m.bundles.length) {
        items.push({ gap: true, text: 'Bundles' });
        m.bundles.forEach((n, i) => items.push({ id: 'b' + i, text: menuText(n) }));
      }
      if (m.shell) items.push({ id: 'shell', text: 'Maintenance shell' });
      items.push({ id: 'local', text: 'Boot local disk' });
      items.push({ id: 'exit', text: 'Exit' });
      const def = assigned ? 'work' : 'local';
      PB.replace(screen,
        h('div', { class: 'title' }, menuText(title) + ' - ' + mac),
        items.map((it) => h('div', { class: 'item' + (it.gap ? ' gap' : ' choice') + (it.id === def ? ' selected' : ''), dataset: { item: it.id || 'gap' } }, it.text)));
      screen.dataset.mode = m.mode;
      screen.dataset.items = items.filter((it) => !it.gap).map((it) => it.id).join(',');
      const secs = seconds(m.timeout);
      const defText = assigned ? 'Start assigned work' : 'Boot local disk';
      const prompt = $('#menu-prompt');
      const label = PB.hotkeyLabel(m.hotkey || 'ctrl-p');
      if (prompt) {
        prompt.hidden = m.mode !== 'hotkey';
        PB.replace(prompt, h('div', { class: 'prompt' }, 'Press ' + label + ' for the ' + menuText(title) + ' menu...'));
      }
      let note;
      if (m.mode === 'never') note = 'Mode never: the machine does not show the menu; it runs its work or boots its disk. (The menu is still used when the unregistered default is "menu".)';
      else if (m.mode === 'hotkey') note = 'Mode hotkey: the prompt waits ' + PB.duration(secs) + ' for ' + label + '; without it: ' + defText.toLowerCase() + '. In the menu, the default is "' + defText + '"' + (secs > 0 ? ' after ' + PB.duration(secs) : '') + '.';
      else note = 'Mode always: the menu is shown at every boot; ' + (secs > 0 ? '"' + defText + '" is chosen after ' + PB.duration(secs) + '.' : 'it waits for a choice (no timeout).');
      $('#menu-preview-note').textContent = note;
      form.hotkey.disabled = m.mode !== 'hotkey';
    }

    form.addEventListener('input', preview);
    form.addEventListener('change', preview);
    for (const id of ['#preview-assigned', '#preview-mac']) {
      const el = $(id);
      if (el) { el.addEventListener('input', preview); el.addEventListener('change', preview); }
    }
    return { get, set, setBundles, preview };
  };
})();

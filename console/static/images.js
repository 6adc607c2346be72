// Images: sizes (logical, used, stored, unique, shared), where each came
// from, the bundles that use it; verify and delete.
'use strict';
(function () {
  const { h, $ } = PB;

  function source(src) {
    if (!src) return h('span', { class: 'muted' }, '—');
    const out = [];
    if (src.mac) out.push(PB.deviceLink(src.mac));
    if (src.hostname) out.push(h('span', null, src.hostname));
    if (src.device) out.push(h('span', { class: 'mono small' }, src.device));
    for (const [k, v] of Object.entries(src)) if (!['mac', 'hostname', 'device', 'device_id'].includes(k)) out.push(h('span', { class: 'small' }, k + ': ' + v));
    return out.map((x, i) => [i ? h('br') : null, x]);
  }

  function parts(ps) {
    return (ps || []).map((p) => h('div', { class: 'small nowrap' }, '#' + p.index + ' ' + (p.fstype || 'raw') + ' ' + PB.bytes(p.used) + ' / ' + PB.bytes(p.size)));
  }

  async function load() {
    await PB.load('#images-card', async () => {
      const [list, bundles] = await Promise.all([PB.get('/images'), PB.all('/bundles').catch(() => [])]);
      const images = list.images || [];
      $('#repo-images').textContent = images.length;
      $('#repo-stored').textContent = PB.bytes(list.stored_bytes);
      $('#repo-chunks').textContent = list.chunks;
      $('#repo-garbage').textContent = PB.bytes(list.garbage_bytes);
      const users = new Map();
      for (const b of bundles) {
        const img = b.params && b.params.image;
        if (img) { if (!users.has(img)) users.set(img, []); users.get(img).push(b); }
      }
      const body = PB.clear($('#images-body'));
      for (const im of images) {
        const result = h('div', { class: 'verify-result small', 'aria-live': 'polite' });
        const verify = h('button', { type: 'button', class: 'secondary small verify', 'aria-label': 'Verify ' + im.name, onclick: async () => {
          verify.disabled = true;
          result.textContent = 'verifying…';
          delete result.dataset.ok;
          try {
            const r = await PB.send('POST', '/images/' + PB.enc(im.name) + '/verify');
            result.dataset.ok = String(r.ok);
            result.className = 'verify-result small ' + (r.ok ? 'ok-text' : 'bad-text');
            result.textContent = r.ok ? 'OK: ' + r.chunks + ' chunks' : 'Damaged: ' + r.error;
          } catch (err) {
            result.dataset.ok = 'false';
            result.className = 'verify-result small bad-text';
            result.textContent = err.message;
          } finally { verify.disabled = false; }
        } }, 'Verify');
        body.append(h('tr', { id: 'image-' + im.name, class: 'image-row', dataset: { image: im.name, logical: im.logical, stored: im.stored, shared: im.shared, unique: im.unique } },
          h('td', null, h('a', { href: '/console/images/' + PB.enc(im.name), class: 'explore', title: 'Browse the files inside ' + im.name }, h('strong', null, im.name))),
          h('td', null, PB.timeEl(im.created)),
          h('td', null, source(im.source)),
          h('td', { class: 'num' }, PB.bytes(im.logical)),
          h('td', { class: 'num' }, PB.bytes(im.used)),
          h('td', { class: 'num' }, PB.bytes(im.stored)),
          h('td', { class: 'num' }, PB.bytes(im.unique)),
          h('td', { class: 'num' }, PB.bytes(im.shared)),
          h('td', null, parts(im.partitions), (im.warnings || []).map((w) => h('div', { class: 'small bad-text warning' }, '⚠ ' + w))),
          h('td', null, (users.get(im.name) || []).map((b, i) => [i ? ', ' : '', PB.bundleLink(b.name)])),
          h('td', { class: 'nowrap' }, verify, ' ',
            PB.confirmButton('Delete', async () => { await PB.send('DELETE', '/images/' + PB.enc(im.name)); await load(); PB.flash('Image ' + im.name + ' deleted; its chunks are freed by the next garbage collection.'); }, { class: 'danger small delete', 'aria-label': 'Delete ' + im.name }),
            result)));
      }
      if (!images.length) body.append(PB.emptyRow(11, 'No image yet: capture one with an image-capture bundle.'));
    });
  }
  load();
})();

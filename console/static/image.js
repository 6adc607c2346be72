// Image explorer: an image's partitions, then the directories and files of
// one of them (read by the server from the image's chunks); files download.
// The partition and path live in the URL's hash (#p=2&path=/etc), so the
// browser's back button walks back up.
'use strict';
(function () {
  const { h, $ } = PB;
  const ref = $('#explorer-image').dataset.image;
  const base = '/images/' + PB.enc(ref) + '/partitions';

  function state() {
    const q = new URLSearchParams(location.hash.slice(1));
    const p = q.get('p');
    return { part: p === null ? null : Number(p), path: q.get('path') || '/' };
  }
  function go(part, path) {
    location.hash = 'p=' + part + '&path=' + encodeURIComponent(path);
  }
  function join(dir, name) { return (dir.endsWith('/') ? dir : dir + '/') + name; }

  async function partitions() {
    await PB.load('#partitions-card', async () => {
      const pl = await PB.get('/images/' + PB.enc(ref) + '/partitions');
      const body = PB.clear($('#partitions-body'));
      for (const p of pl.partitions) {
        body.append(h('tr', { class: 'partition-row', dataset: { index: p.index, fstype: p.fstype } },
          h('td', null, '#' + p.index),
          h('td', null, p.fstype || 'raw'),
          h('td', { class: 'num' }, PB.bytes(p.size)),
          h('td', { class: 'num' }, PB.bytes(p.used)),
          h('td', null, p.browsable
            ? h('button', { type: 'button', class: 'secondary small browse', 'aria-label': 'Browse partition ' + p.index, onclick: () => go(p.index, '/') }, 'Browse')
            : h('span', { class: 'muted small' }, 'not readable (' + (p.fstype || 'raw') + ')'))));
      }
      if (!pl.partitions.length) body.append(PB.emptyRow(5, 'This image has no partition.'));
    });
  }

  function crumbs(part, path) {
    const out = [h('a', { href: '#p=' + part + '&path=%2F' }, '/')];
    let acc = '';
    for (const c of path.split('/').filter(Boolean)) {
      acc += '/' + c;
      out.push(' ', h('a', { href: '#p=' + part + '&path=' + encodeURIComponent(acc) }, c), ' /');
    }
    return out;
  }

  async function files() {
    const { part, path } = state();
    const card = $('#files-card');
    if (part === null || isNaN(part)) { card.hidden = true; return; }
    card.hidden = false;
    $('#files-partition').textContent = '#' + part;
    $('#files-path').textContent = path;
    PB.replace($('#files-crumbs'), crumbs(part, path));
    const err = $('#files-error');
    const body = PB.clear($('#files-body'));
    body.append(PB.emptyRow(5, 'Reading…'));
    try {
      const fl = await PB.get(base + '/' + part + '/files?path=' + encodeURIComponent(path));
      err.hidden = true;
      PB.clear(body);
      $('#files-path').textContent = fl.path;
      const list = fl.entry.type === 'dir' || fl.entries.length ? fl.entries : [Object.assign({}, fl.entry, { self: true })];
      for (const e of list) {
        const full = e.self ? fl.path : join(fl.path, e.name);
        let name;
        if (e.type === 'dir') name = h('a', { href: '#p=' + part + '&path=' + encodeURIComponent(full), class: 'dir' }, e.name + '/');
        else name = h('span', { class: e.type }, e.name);
        const href = '/api/v1' + base + '/' + part + '/content?path=' + encodeURIComponent(full);
        body.append(h('tr', { class: 'file-row', dataset: { name: e.name, type: e.type, size: e.size } },
          h('td', { class: 'name' }, name, e.target ? h('span', { class: 'muted small' }, ' → ' + e.target) : null),
          h('td', { class: 'num' }, e.type === 'dir' ? '' : PB.bytes(e.size)),
          h('td', { class: 'mono small' }, e.mode),
          h('td', null, e.mtime && !e.mtime.startsWith('0001') ? PB.timeEl(e.mtime, false) : h('span', { class: 'muted' }, '—')),
          h('td', null, e.type === 'file' || (e.type === 'symlink' && e.self)
            ? h('a', { href, download: e.name, class: 'download', 'aria-label': 'Download ' + e.name }, 'Download')
            : null)));
      }
      if (!list.length) body.append(PB.emptyRow(5, 'Empty directory.'));
    } catch (e) {
      PB.clear(body);
      err.hidden = false;
      err.textContent = e.message;
    }
  }

  window.addEventListener('hashchange', files);
  partitions();
  files();
})();

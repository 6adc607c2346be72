// Settings: the default menu, the unregistered default, naming (PATCH
// /settings); the server's configuration, read only, from /status.
'use strict';
(function () {
  const { h, $ } = PB;
  const menuForm = $('#menu-form');
  const unregForm = $('#unregistered-form');
  const namingForm = $('#naming-form');
  const ed = PB.menuEditor(menuForm);

  function syncUnreg() {
    unregForm.bundle.disabled = unregForm.action.value !== 'bundle';
  }

  function example() {
    const p = namingForm.prefix.value.trim();
    const ex = { '': '(unnamed)', serial: p + 'CZC1234XYZ', asset: p + 'A-00172', mac: p + '525400123456', sequence: p + '001' };
    $('#naming-example').textContent = ex[namingForm.from.value] || '';
  }

  function fill(s) {
    ed.set(s.menu);
    unregForm.action.value = s.unregistered.action || 'local';
    unregForm.bundle.value = s.unregistered.bundle || '';
    syncUnreg();
    namingForm.prefix.value = s.naming.prefix || '';
    namingForm.from.value = s.naming.from || '';
    example();
  }

  async function patch(section, value, form) {
    const s = await PB.send('PATCH', '/settings', { [section]: value });
    fill(s);
    PB.formOK(form, 'Saved.');
  }

  PB.onSubmit(menuForm, () => patch('menu', ed.get(), menuForm));
  PB.onSubmit(unregForm, () => {
    const u = { action: unregForm.action.value };
    if (u.action === 'bundle') u.bundle = unregForm.bundle.value;
    return patch('unregistered', u, unregForm);
  });
  PB.onSubmit(namingForm, () => patch('naming', { prefix: namingForm.prefix.value.trim(), from: namingForm.from.value }, namingForm));
  unregForm.action.addEventListener('change', syncUnreg);
  namingForm.addEventListener('input', example);
  namingForm.addEventListener('change', example);

  const yes = (b) => PB.badge(b ? 'on' : 'off', b ? 'enabled' : 'disabled');
  const mono = (s) => (s ? h('span', { class: 'mono' }, s) : '');

  async function loadStatus() {
    const box = $('#server-config-body');
    let st;
    try {
      st = await PB.get('/status');
    } catch (err) {
      PB.replace(box, h('p', { class: err.status === 404 ? 'muted' : 'form-error' }, err.status === 404 ? 'This server does not report its configuration (no /api/v1/status).' : err.message));
      return;
    }
    const c = st.config || {};
    const pd = c.proxydhcp || {};
    const tf = c.tftp || {};
    const hp = c.http || {};
    const sto = c.store || {};
    const repo = st.image_repo || {};
    PB.replace(box,
      h('h3', null, 'proxyDHCP'),
      PB.kv([['Enabled', yes(pd.enabled), 'proxydhcp.enabled'], ['DHCP port', mono(pd.dhcp_listen), 'proxydhcp.dhcp_listen'], ['PXE port', mono(pd.pxe_listen), 'proxydhcp.pxe_listen'], ['Interface', mono(pd.interface || '(all)'), 'proxydhcp.interface']], { id: 'config-proxydhcp' }),
      h('h3', null, 'TFTP'),
      PB.kv([['Enabled', yes(tf.enabled), 'tftp.enabled'], ['Listen', mono(tf.listen), 'tftp.listen'], ['Root', mono(tf.root), 'tftp.root'], ['Max block size', tf.max_blksize, 'tftp.max_blksize'], ['Max window size', tf.max_windowsize, 'tftp.max_windowsize']], { id: 'config-tftp' }),
      h('h3', null, 'HTTP'),
      PB.kv([['Listen', mono(hp.listen), 'http.listen'], ['HTTPS', mono(hp.tls_listen || '(off)'), 'http.tls_listen'], ['Certificate', mono(hp.tls_fingerprint || ''), 'http.tls_fingerprint'], ['Admin socket', mono(hp.admin_socket || '(off)'), 'http.admin_socket'], ['Trust loopback', yes(hp.trust_loopback), 'http.trust_loopback']], { id: 'config-http' }),
      h('h3', null, 'Store and images'),
      PB.kv([['Database', sto.driver, 'store.driver'], ['Image repository', mono(repo.path), 'image_repo.path'], ['Free', repo.total_bytes ? PB.bytes(repo.free_bytes) + ' of ' + PB.bytes(repo.total_bytes) : '', 'image_repo.free']], { id: 'config-store' }),
      h('p', { class: 'muted small' }, 'Preboot ' + (st.version || '') + ', up ' + PB.duration(st.uptime_seconds)));
  }

  async function start() {
    try {
      const bundles = await PB.all('/bundles');
      ed.setBundles(bundles);
      PB.fillSelect(unregForm.bundle, bundles.filter((b) => b.kind !== 'wipe').map((b) => ({ value: b.name, label: b.name + ' (' + b.kind + ')' })));
      fill(await PB.get('/settings'));
    } catch (err) {
      PB.showErrors(menuForm, err);
    }
    loadStatus();
  }
  start();
})();

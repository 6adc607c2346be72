// Images page, on a site server (preboot serve --upstream): the images it
// replicates from its upstream, their state, progress and lag. Hidden on
// servers without an upstream (the API answers 503).
'use strict';
(function () {
  const { h, $ } = PB;

  function lag(s) {
    if (!s) return '—';
    if (s < 60) return Math.round(s) + ' s';
    if (s < 3600) return Math.round(s / 60) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  }

  async function load() {
    let st;
    try {
      st = await PB.get('/replicas');
    } catch (err) {
      // Not a site server (503): the section stays hidden, no more asking.
      if (err.status === 503) clearInterval(timer);
      return;
    }
    const card = $('#replicas-card');
    card.hidden = false;
    $('#replicas-upstream').textContent = st.upstream + ' · ' + st.select + ' · every ' + st.interval +
      (st.last_round ? ' · last round ' + PB.ago(st.last_round) : '') + (st.keep_deleted ? ' · keeps what the upstream removed' : '');
    const err = $('#replicas-error');
    err.textContent = st.round_error || '';
    err.hidden = !st.round_error;
    const body = PB.clear($('#replicas-body'));
    for (const im of st.images || []) {
      const prog = im.chunks_total ? im.chunks_done + ' / ' + im.chunks_total + ' chunks, ' + PB.bytes(im.bytes) : '—';
      body.append(h('tr', { class: 'replica-row', dataset: { image: im.name, state: im.state } },
        h('td', null, h('strong', null, im.name)),
        h('td', { class: im.state === 'failed' ? 'bad-text' : (im.state === 'in-sync' ? 'ok-text' : '') }, im.state),
        h('td', { class: 'num' }, String(im.version || '—')),
        h('td', { class: 'num' }, String(im.upstream_version || '—')),
        h('td', null, prog),
        h('td', null, im.last_success ? PB.ago(im.last_success) : '—'),
        h('td', null, lag(im.lag_seconds)),
        h('td', { class: 'small bad-text' }, im.error || '')));
    }
    if (!(st.images || []).length) body.append(PB.emptyRow(8, 'Nothing replicated yet.'));
  }
  const timer = setInterval(load, 10000);
  load();
})();

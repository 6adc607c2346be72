// Jobs: the list with filters, newest first, live progress bars.
'use strict';
(function () {
  const { $ } = PB;
  const LIMIT = 50;
  const f = $('#jobs-filter');
  const params = new URLSearchParams(location.search);
  f.state.value = params.get('state') || '';
  f.open.checked = params.get('open') === 'true';
  f.device.value = params.get('device') || '';
  let before = 0;
  let jobs = [];
  let seq = 0;

  function filters() {
    return { state: f.state.value, open: f.open.checked ? 'true' : '', device: f.device.value.trim(), bundle: f.bundle.value };
  }

  async function load() {
    const my = ++seq;
    const fl = filters();
    history.replaceState(null, '', location.pathname + PB.query(fl));
    await PB.load('#jobs-card', async () => {
      const list = await PB.get('/jobs' + PB.query(Object.assign({}, fl, { limit: LIMIT, before: before || '' })));
      if (my !== seq) return;
      jobs = list;
      PB.renderJobs($('#jobs-body'), jobs, { empty: 'No job matches.' });
      $('#jobs-older').disabled = list.length < LIMIT;
      $('#jobs-newest').disabled = !before;
    });
  }

  const reload = PB.debounce(() => { before = 0; load(); }, 300);
  f.addEventListener('change', reload);
  f.device.addEventListener('input', reload);
  f.addEventListener('submit', (e) => { e.preventDefault(); reload(); });
  $('#jobs-older').addEventListener('click', () => {
    if (!jobs.length) return;
    before = Math.min(...jobs.map((j) => j.id));
    load();
  });
  $('#jobs-newest').addEventListener('click', () => { before = 0; load(); });

  async function start() {
    try {
      const bundles = await PB.all('/bundles');
      PB.fillSelect(f.bundle, bundles.map((b) => ({ value: b.name })), params.get('bundle') || '');
    } catch (e) { /* the filter stays at "any" */ }
    await load();
    const refresh = PB.debounce(() => { if (!before) load(); }, 300);
    PB.follow({ kind: 'job' }, refresh);
    // Progress reports are not events: poll while a listed job is open.
    PB.every(2000, async () => { if (!before && jobs.some(PB.jobOpen)) await load(); });
  }
  start();
})();

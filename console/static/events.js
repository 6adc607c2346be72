// Events: the newest events with filters, and a live tail of new ones
// from the event stream.
'use strict';
(function () {
  const { $ } = PB;
  const LIMIT = 100;
  const f = $('#events-filter');
  const body = $('#events-body');
  const pause = $('#events-pause');
  const params = new URLSearchParams(location.search);
  f.kind.value = params.get('kind') || '';
  f.device.value = params.get('device') || '';
  f.job.value = params.get('job') || '';
  let stream = null;
  let oldest = 0;
  let newest = 0;
  let live = true;
  let held = [];
  let seq = 0;

  function filters() {
    return { kind: f.kind.value, device: f.device.value.trim(), job: f.job.value.trim() };
  }

  function add(ev) {
    newest = Math.max(newest, ev.id);
    if (!live) { held.push(ev); pause.textContent = 'Paused (' + held.length + ' new)'; return; }
    PB.prependEvent(body, ev, { max: 1000 });
  }

  async function load() {
    const my = ++seq;
    const fl = filters();
    history.replaceState(null, '', location.pathname + PB.query(fl));
    if (stream) { stream.close(); stream = null; }
    await PB.load('#events-card', async () => {
      const evs = await PB.get('/events' + PB.query(Object.assign({}, fl, { limit: LIMIT })));
      if (my !== seq) return;
      PB.clear(body);
      for (const ev of evs) body.append(PB.eventRow(ev));
      if (!evs.length) body.append(PB.emptyRow(5, 'No event matches.'));
      newest = evs.length ? evs[0].id : 0;
      oldest = evs.length ? evs[evs.length - 1].id : 0;
      $('#events-older').disabled = evs.length < LIMIT;
      held = [];
      stream = PB.follow(fl, add, { after: newest });
    });
  }

  async function older() {
    if (!oldest) return;
    await PB.load('#events-card', async () => {
      const evs = await PB.get('/events' + PB.query(Object.assign({}, filters(), { limit: LIMIT, before: oldest })));
      for (const ev of evs) body.append(PB.eventRow(ev));
      if (evs.length) oldest = evs[evs.length - 1].id;
      $('#events-older').disabled = evs.length < LIMIT;
    });
  }

  pause.addEventListener('click', () => {
    live = !live;
    pause.setAttribute('aria-pressed', String(live));
    pause.textContent = live ? 'Live' : 'Paused';
    if (live) { for (const ev of held) PB.prependEvent(body, ev, { max: 1000 }); held = []; }
  });
  const reload = PB.debounce(load, 300);
  f.addEventListener('change', reload);
  f.device.addEventListener('input', reload);
  f.addEventListener('submit', (e) => { e.preventDefault(); reload(); });
  $('#events-older').addEventListener('click', older);
  load();
})();

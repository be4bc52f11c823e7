// The "Printers" board: every registered printer with its state, errors, media and
// the age of its last successful probe, from the status cache
// (GET /api/printers/status), then kept current by `printer.status` envelopes of
// the `printers` topic.  A board of the live page (see the comment at the top of
// index.html).
//
// Order of the two sources: the subscription opens first and its envelopes wait
// until the snapshot is in; an envelope older than a row's `captured_at` is stale
// and skipped.  A printer first heard of through an envelope (registered after the
// page loaded) is fetched by id.  A gap refetches the whole snapshot.

import { badge, cell, emptyRow } from "./_dom.js";

const TOPIC = "printers";
const TICK_MS = 1000; // how often the ages are redrawn

const TEMPLATE = `
  <div class="toolbar">
    <button id="printers-refresh" type="button" class="secondary">Refresh</button>
  </div>
  <dl class="status" aria-label="Printers summary">
    <div><dt>Printers</dt><dd id="printers-total">0</dd></div>
    <div><dt>Online</dt><dd id="printers-online">0</dd></div>
    <div><dt>Offline</dt><dd id="printers-offline">0</dd></div>
    <div><dt>With errors</dt><dd id="printers-with-errors">0</dd></div>
    <div><dt>Not probed yet</dt><dd id="printers-unprobed">0</dd></div>
    <div><dt>Live</dt><dd><span id="printers-state" class="state" data-state="connecting" role="status">connecting</span></dd></div>
  </dl>
  <div class="log">
    <table>
      <caption>The probe's cache, never the printers themselves; the age is that of the last successful probe.</caption>
      <colgroup><col style="width:14rem"><col style="width:6.5rem"><col style="width:7rem">
        <col><col style="width:11rem"><col style="width:8rem"><col style="width:14rem"></colgroup>
      <thead><tr><th scope="col">Printer</th><th scope="col">Status</th><th scope="col">State</th>
        <th scope="col">Errors</th><th scope="col">Media</th><th scope="col">Last success</th>
        <th scope="col">Last error</th></tr></thead>
      <tbody id="printers-rows"><tr class="empty"><td colspan="7">Loading…</td></tr></tbody>
    </table>
  </div>`;

/** "12 s", "4 min", "3 h", "2 d": an age in seconds, rounded down. */
export function formatAge(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "never";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172800) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

function mediaText(media) {
  if (!media) return "—";
  const parts = [];
  if (media.name) parts.push(String(media.name));
  if (media.width_mm != null) parts.push(`${media.width_mm} mm`);
  return parts.length ? parts.join(" · ") : "—";
}

function when(iso) {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? null : t;
}

export function mount(container, ctx) {
  container.innerHTML = TEMPLATE; // a constant: no data goes through innerHTML
  const $ = (id) => container.querySelector(`#${id}`);
  const ui = {
    refresh: $("printers-refresh"), rows: $("printers-rows"), state: $("printers-state"),
    total: $("printers-total"), online: $("printers-online"), offline: $("printers-offline"),
    withErrors: $("printers-with-errors"), unprobed: $("printers-unprobed"),
  };
  const printers = new Map(); // printer_id -> status (as GET /api/printers/status shows it)
  const rows = new Map(); // printer_id -> <tr>
  let loaded = false;
  let waiting = []; // envelopes received before the snapshot
  const fetching = new Set(); // printer ids being fetched one by one
  // Hook for the console and tests: the board's view of each printer.
  window.heraldPrinters = printers;

  function render(p) {
    let tr = rows.get(p.printer_id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.printerId = p.printer_id;
      rows.set(p.printer_id, tr);
    }
    const status = p.online === true ? ["online", "ok"] : p.online === false ? ["offline", "bad"]
      : ["not probed", "muted"];
    const name = cell(p.name || p.printer_id, "name");
    name.title = `${p.model || ""} · ${p.printer_id}`;
    const model = document.createElement("div");
    model.className = "hint";
    model.textContent = p.model || "";
    name.append(model);
    const badgeCell = cell("", "status");
    badgeCell.append(badge(status[0], status[1]));
    if (p.rebooted) badgeCell.append(" ", badge("rebooted", "warn"));
    const errors = cell("", "errors");
    if (p.errors && p.errors.length) {
      for (const e of p.errors) errors.append(badge(String(e), "warn"), " ");
    } else {
      errors.textContent = p.online == null ? "—" : "none";
    }
    const age = cell("", "age");
    age.dataset.lastSuccessAt = p.last_success_at || "";
    tr.dataset.status = status[0];
    tr.dataset.state = p.state || "";
    tr.replaceChildren(name, badgeCell, cell(p.state || "—", "state"), errors,
                       cell(mediaText(p.media), "media"), age,
                       cell(p.online === false ? p.last_error || "—" : "—", "last-error"));
    drawAge(age);
  }

  function drawAge(td) {
    const at = when(td.dataset.lastSuccessAt);
    td.textContent = at == null ? "never" : `${formatAge((Date.now() - at) / 1000)} ago`;
    if (at != null) td.title = td.dataset.lastSuccessAt;
  }

  function layout() {
    const sorted = [...printers.values()].sort((a, b) =>
      String(a.name).localeCompare(String(b.name)) || String(a.printer_id).localeCompare(String(b.printer_id)));
    if (!sorted.length) {
      ui.rows.replaceChildren(emptyRow("No printers registered.", 7));
    } else {
      ui.rows.replaceChildren(...sorted.map((p) => rows.get(p.printer_id)));
    }
    const all = [...printers.values()];
    ui.total.textContent = String(all.length);
    ui.online.textContent = String(all.filter((p) => p.online === true).length);
    ui.offline.textContent = String(all.filter((p) => p.online === false).length);
    ui.withErrors.textContent = String(all.filter((p) => p.errors && p.errors.length).length);
    ui.unprobed.textContent = String(all.filter((p) => p.online == null).length);
  }

  function put(p) {
    printers.set(p.printer_id, p);
    render(p);
  }

  async function loadAll() {
    try {
      const body = await ctx.fetchJSON("/api/printers/status");
      printers.clear();
      rows.clear();
      for (const p of body.printers) put(p);
      loaded = true;
      const early = waiting;
      waiting = [];
      for (const data of early) apply(data);
      layout();
    } catch (err) {
      if (ctx.signal.aborted) return;
      ctx.say(`Printers: ${err.message}`, true);
    }
  }

  async function loadOne(id) {
    if (fetching.has(id)) return;
    fetching.add(id);
    try {
      const p = await ctx.fetchJSON(`/api/printers/${encodeURIComponent(id)}/status`);
      const known = printers.get(id);
      if (!known || (when(p.captured_at) ?? 0) >= (when(known.captured_at) ?? 0)) put({ ...known, ...p });
      layout();
    } catch (err) {
      if (!ctx.signal.aborted && err.status !== 404) ctx.say(`Printers: ${err.message}`, true);
    } finally {
      fetching.delete(id);
    }
  }

  function apply(data) {
    const id = data && data.printer_id;
    if (!id) return;
    const known = printers.get(id);
    if (!known) {
      loadOne(id); // registered after the snapshot: its name and model come from the API
      return;
    }
    if ((when(data.captured_at) ?? 0) < (when(known.captured_at) ?? 0)) return; // stale
    const next = { ...known, ...data, rebooted: Boolean(data.rebooted) };
    if (data.online) next.last_error = null;
    put(next);
    layout();
  }

  const sub = ctx.subscribe({
    topics: [TOPIC],
    onEvent: (envelope) => {
      if (envelope.type !== "printer.status") return;
      if (loaded) apply(envelope.data);
      else waiting.push(envelope.data);
    },
    onGap: () => loadAll(), // something may be missing: the cache is the truth
    onState: (s) => {
      ui.state.textContent = s.state;
      ui.state.dataset.state = s.state;
      if (s.state === "closed" && s.error) ctx.say(`Printers: ${s.error}${s.detail ? ` (${s.detail})` : ""}.`, true);
    },
  });
  ui.refresh.addEventListener("click", () => loadAll());
  loadAll();
  const ticker = setInterval(() => {
    for (const td of ui.rows.querySelectorAll("td[data-col=age]")) drawAge(td);
  }, TICK_MS);
  return () => {
    clearInterval(ticker);
    sub.close();
  };
}

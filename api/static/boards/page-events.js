// The "Page events" board: which page event applies to a route now, re-resolved
// whenever `page_event.changed` arrives on topic `page-events` (a change, or a
// window opening or closing), and the list of events (admins only).
// A board of the live page (see the comment at the top of index.html).

const TOPIC = "page-events";
const MAX_CHANGES = 200; // change rows kept

const TEMPLATE = `
  <form class="toolbar" data-role="pe-form" autocomplete="off">
    <label><span>Page route <span class="hint">(sent as X-Page-Route)</span></span>
      <input id="pe-route" type="text" spellcheck="false" autocomplete="off" placeholder="/reviews/spring">
    </label>
    <button type="submit">Resolve</button>
  </form>
  <dl class="status" aria-label="Page event">
    <div><dt>State</dt><dd><span id="pe-state" class="state" data-state="connecting" role="status">connecting</span></dd></div>
    <div><dt>Resolutions</dt><dd id="pe-resolved">0</dd></div>
    <div><dt>Changes heard</dt><dd id="pe-heard">0</dd></div>
    <div class="cursor"><dt>Applies now</dt><dd id="pe-current" data-kind="none">—</dd></div>
    <div class="cursor"><dt>Filters</dt><dd id="pe-filters" class="mono">—</dd></div>
  </dl>
  <div class="log" tabindex="0" aria-label="Page events">
    <table>
      <caption id="pe-caption">Page events (admins see the list).</caption>
      <colgroup><col style="width:12rem"><col style="width:12rem"><col style="width:5rem">
        <col style="width:18rem"><col></colgroup>
      <thead><tr><th scope="col">Name</th><th scope="col">Route</th><th scope="col">Active</th>
        <th scope="col">Window</th><th scope="col">Uid</th></tr></thead>
      <tbody id="pe-rows"><tr class="empty"><td colspan="5">No page events.</td></tr></tbody>
    </table>
  </div>
  <div class="log" tabindex="0" aria-label="Changes heard" style="margin-top:.75rem">
    <table>
      <caption>page_event.changed, newest at the bottom.</caption>
      <colgroup><col style="width:8rem"><col style="width:10rem"><col style="width:14rem"><col></colgroup>
      <thead><tr><th scope="col">Time</th><th scope="col">Change</th><th scope="col">Route</th>
        <th scope="col">Uid</th></tr></thead>
      <tbody id="pe-changes"><tr class="empty"><td colspan="4">Nothing yet.</td></tr></tbody>
    </table>
  </div>`;

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function windowText(e) {
  if (!e.start_date && !e.end_date) return "always";
  return `${e.start_date || "…"} → ${e.end_date || "…"}`;
}

export function mount(container, ctx) {
  container.innerHTML = TEMPLATE; // a constant: no data goes through innerHTML
  const $ = (id) => container.querySelector(`#${id}`);
  const ui = {
    form: container.querySelector("[data-role=pe-form]"), route: $("pe-route"),
    state: $("pe-state"), resolved: $("pe-resolved"), heard: $("pe-heard"),
    current: $("pe-current"), filters: $("pe-filters"), caption: $("pe-caption"),
    rows: $("pe-rows"), changes: $("pe-changes"),
  };
  // Hooks for the console and tests: what was resolved and heard, in order.
  const hooks = { resolutions: [], changes: [] };
  window.heraldPageEvents = hooks;
  let route = ctx.params.get("route") || "";
  ui.route.value = route;
  let resolving = null; // the route being resolved; a newer request wins
  let again = false;

  function showCurrent(kind, text, filters) {
    ui.current.dataset.kind = kind;
    ui.current.textContent = text;
    ui.filters.textContent = filters === undefined ? "—" : JSON.stringify(filters);
  }

  async function resolve() {
    if (resolving !== null) { again = true; return; }
    resolving = route;
    try {
      do {
        again = false;
        const asked = route;
        if (!asked) {
          showCurrent("none", "— (type a route)");
          continue;
        }
        let outcome;
        try {
          const event = await ctx.fetchJSON("/api/page-events/current", { headers: { "X-Page-Route": asked } });
          outcome = event ? { kind: "event", event } : { kind: "none" };
        } catch (err) {
          if (err.name === "AbortError") return;
          outcome = err.status === 409 ? { kind: "ambiguous", uids: err.body.uids } : { kind: "error", error: err.message };
        }
        if (asked !== route) { again = true; continue; }
        hooks.resolutions.push({ route: asked, ...outcome });
        ui.resolved.textContent = String(hooks.resolutions.length);
        if (outcome.kind === "event") {
          showCurrent("event", `${outcome.event.name} (${outcome.event.uid})`, outcome.event.filters);
        } else if (outcome.kind === "ambiguous") {
          showCurrent("ambiguous", `ambiguous: ${outcome.uids.join(", ")}`);
        } else if (outcome.kind === "none") {
          showCurrent("none", "none");
        } else {
          showCurrent("error", outcome.error);
        }
      } while (again);
    } finally {
      resolving = null;
    }
  }

  let listing = false;
  async function refreshList() {
    if (listing || !(ctx.user && ctx.user.roles && ctx.user.roles.includes("admin"))) {
      if (!listing) ui.caption.textContent = "Listing page events needs the admin role.";
      return;
    }
    listing = true;
    try {
      const { events } = await ctx.fetchJSON("/api/page-events?limit=1000");
      const rows = events.map((e) => {
        const tr = document.createElement("tr");
        tr.dataset.uid = e.uid;
        tr.append(cell(e.name), cell(e.page_context), cell(e.is_active ? "yes" : "no"),
                  cell(windowText(e)), cell(e.uid));
        return tr;
      });
      if (rows.length === 0) {
        const tr = document.createElement("tr");
        tr.className = "empty";
        const td = cell("No page events.");
        td.colSpan = 5;
        tr.append(td);
        rows.push(tr);
      }
      ui.rows.replaceChildren(...rows);
      ui.caption.textContent = `${events.length} page event(s), by route.`;
    } catch (err) {
      if (err.name !== "AbortError") ctx.say(`Could not list page events: ${err.message}`, true);
    } finally {
      listing = false;
    }
  }

  function heard(envelope) {
    if (envelope.type !== "page_event.changed") return;
    const d = envelope.data || {};
    hooks.changes.push(d);
    if (hooks.changes.length > MAX_CHANGES) hooks.changes.splice(0, hooks.changes.length - MAX_CHANGES);
    ui.heard.textContent = String(Number(ui.heard.textContent) + 1);
    const empty = ui.changes.querySelector("tr.empty");
    if (empty) empty.remove();
    const tr = document.createElement("tr");
    tr.dataset.change = String(d.change);
    tr.append(cell(new Date(envelope.time).toLocaleTimeString()), cell(String(d.change)),
              cell(String(d.page_context)), cell(String(d.uid)));
    ui.changes.append(tr);
    while (ui.changes.rows.length > MAX_CHANGES) ui.changes.rows[0].remove();
    if (route && (d.page_context === route || d.previous_page_context === route)) resolve();
    refreshList();
  }

  ctx.subscribe({
    topics: [TOPIC],
    onEvent: (envelope) => heard(envelope),
    // Changes may be missing: resolve and list again rather than trust what is shown.
    onGap: () => { resolve(); refreshList(); },
    onState: (s) => {
      ui.state.textContent = s.state;
      ui.state.dataset.state = s.state;
      // Events may have been missed while the stream was down: ask again.
      if (s.state === "open") { resolve(); refreshList(); }
      if (s.state === "closed" && s.error) ctx.say(`Page events: ${s.error}${s.detail ? ` (${s.detail})` : ""}.`, true);
    },
  });

  ui.form.addEventListener("submit", (e) => {
    e.preventDefault();
    route = ui.route.value.trim();
    resolve();
  });
  resolve();
  refreshList();
}

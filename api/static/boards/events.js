// The "Events" board: the caller's user stream plus chosen topics, one row per
// envelope, with the stream it came from, the connection state and the cursor.
// A board of the live page (see the comment at the top of index.html).

const MAX_ROWS = 500; // DOM rows kept; older ones are dropped
const MAX_KEPT = 1000; // envelopes kept in window.heraldEvents
const MAX_STATES = 200; // state changes kept in window.heraldStates

const TEMPLATE = `
  <form class="toolbar" data-role="topics-form" autocomplete="off">
    <label><span>Topics <span class="hint">(comma-separated, optional)</span></span>
      <input id="topics" type="text" spellcheck="false" autocomplete="off" placeholder="printers, maintenance">
    </label>
    <button type="submit">Apply</button>
    <button id="clear" type="button" class="secondary">Clear</button>
  </form>
  <dl class="status" aria-label="Connection">
    <div><dt>State</dt><dd><span id="state" class="state" data-state="connecting" role="status">connecting</span></dd></div>
    <div><dt>Connection</dt><dd id="leader">—</dd></div>
    <div><dt>Events</dt><dd id="count">0</dd></div>
    <div><dt>Reconnects</dt><dd id="reconnects">0</dd></div>
    <div><dt>Failed attempts</dt><dd id="failures">0</dd></div>
    <div><dt>Gaps</dt><dd id="gaps">0</dd></div>
    <div class="cursor"><dt>Cursor</dt><dd id="cursor" class="mono">—</dd></div>
  </dl>
  <div class="log" id="log" tabindex="0" aria-label="Received events">
    <table>
      <caption>Newest at the bottom; the board keeps the last ${MAX_ROWS} rows.</caption>
      <colgroup><col style="width:4rem"><col style="width:7.5rem"><col style="width:9rem">
        <col style="width:13rem"><col style="width:11rem"><col></colgroup>
      <thead><tr><th scope="col">#</th><th scope="col">Time</th><th scope="col">Stream</th>
        <th scope="col">Type</th><th scope="col">Id</th><th scope="col">Data</th></tr></thead>
      <tbody id="rows"><tr class="empty"><td colspan="6">No events yet.</td></tr></tbody>
    </table>
  </div>`;

function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}

function shortTime(iso) {
  const t = new Date(iso);
  if (!iso || Number.isNaN(t.getTime())) return iso ? String(iso) : "";
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}.${pad(t.getMilliseconds(), 3)}`;
}

function gapText(d = {}) {
  const first = d.first_available == null ? "nothing (stream emptied)" : String(d.first_available);
  let text = `Gap in ${d.stream}: events after ${d.after} up to ${first} may be missing (reason: ${d.reason})`;
  if (d.skipped_to) text += `; skipped to ${d.skipped_to}`;
  return text;
}

export function mount(container, ctx) {
  container.innerHTML = TEMPLATE; // a constant: no data goes through innerHTML
  const $ = (id) => container.querySelector(`#${id}`);
  const ui = {
    form: container.querySelector("[data-role=topics-form]"), topics: $("topics"), clear: $("clear"),
    state: $("state"), leader: $("leader"), count: $("count"), reconnects: $("reconnects"),
    failures: $("failures"), gaps: $("gaps"), cursor: $("cursor"), log: $("log"), rows: $("rows"),
  };
  // Envelopes and state changes in arrival order (bounded): hooks for the console and tests.
  const events = [];
  const states = [];
  window.heraldEvents = events;
  window.heraldStates = states;

  const st = { count: 0, opened: 0, failures: 0, gaps: 0, cursor: "" };
  let sub = null;

  function show() {
    ui.count.textContent = String(st.count);
    ui.reconnects.textContent = String(Math.max(0, st.opened - 1));
    ui.failures.textContent = String(st.failures);
    ui.gaps.textContent = String(st.gaps);
    ui.cursor.textContent = st.cursor || "—";
  }

  // Rows are added once per animation frame, however many events arrived: one
  // layout per frame instead of one per event (a burst of thousands stays smooth).
  let pending = [];
  let scheduled = false;

  function flush() {
    scheduled = false;
    const atBottom = ui.log.scrollTop + ui.log.clientHeight >= ui.log.scrollHeight - 4;
    const empty = ui.rows.querySelector("tr.empty");
    if (empty && pending.length > 0) empty.remove();
    const fragment = document.createDocumentFragment();
    for (const row of pending) fragment.append(row);
    pending = [];
    ui.rows.append(fragment);
    const excess = ui.rows.rows.length - MAX_ROWS;
    for (let i = 0; i < excess; i++) ui.rows.rows[0].remove();
    show();
    if (atBottom) ui.log.scrollTop = ui.log.scrollHeight; // follow only while at the bottom
  }

  function addRow(envelope, stream, gap) {
    const tr = document.createElement("tr");
    const type = String(envelope.type ?? "");
    tr.dataset.type = type;
    tr.dataset.stream = stream || "";
    // data-n mirrors a numeric data.n, so sequenced demo events can be checked from the DOM.
    const n = envelope.data && envelope.data.n;
    if (typeof n === "number" || typeof n === "string") tr.dataset.n = String(n);
    if (gap) tr.className = "gap";
    const data = gap ? gapText(envelope.data) : JSON.stringify(envelope.data ?? null);
    const time = cell(shortTime(envelope.time), "time");
    if (envelope.time) time.title = String(envelope.time);
    tr.append(cell(String(st.count), "seq"), time, cell(stream || "", "stream"), cell(type, "type"),
              cell(String(envelope.id ?? ""), "id"), cell(data, "data"));
    pending.push(tr);
    if (pending.length > MAX_ROWS) pending.splice(0, pending.length - MAX_ROWS);
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(flush);
    }
  }

  function receive(envelope, meta, gap) {
    st.count += 1;
    if (meta.cursor) st.cursor = meta.cursor;
    if (gap) st.gaps += 1;
    events.push(envelope);
    if (events.length > MAX_KEPT) events.splice(0, events.length - MAX_KEPT);
    addRow(envelope, meta.stream, gap);
  }

  function onState(s) {
    states.push({ at: Date.now(), ...s });
    if (states.length > MAX_STATES) states.splice(0, states.length - MAX_STATES);
    if (s.state === "open") st.opened += 1;
    if (s.state === "backoff") st.failures += 1;
    ui.state.textContent = s.state;
    ui.state.dataset.state = s.state;
    ui.leader.textContent = !s.shared ? "own (this tab)"
      : s.leader ? "shared, held by this tab" : "shared, held by another tab";
    ui.leader.dataset.leader = String(s.leader);
    if (s.state === "backoff") {
      const why = s.error ? `${s.status ? `HTTP ${s.status} ` : ""}${s.error}` : `HTTP ${s.status}`;
      ctx.say(`${why}; retrying in ${(s.delayMs / 1000).toFixed(1)} s…`, true);
    } else if (s.state === "open") {
      ctx.say("");
    } else if (s.state === "closed" && s.error) {
      ctx.say(`Stopped: ${s.error}${s.detail ? ` (${s.detail})` : ""}.`, true);
    }
    show();
  }

  function start() {
    if (sub) sub.close();
    const topics = ui.topics.value.split(",").map((t) => t.trim()).filter(Boolean);
    sub = ctx.subscribe({
      topics,
      onEvent: (envelope, meta) => receive(envelope, meta, false),
      onGap: (_gap, envelope, meta) => {
        receive(envelope, meta, true);
        ctx.say(gapText(envelope.data), true);
      },
      onState,
    });
  }

  ui.topics.value = ctx.params.get("topics") || "";
  ui.form.addEventListener("submit", (e) => {
    e.preventDefault();
    start();
  });
  ui.clear.addEventListener("click", () => {
    ui.rows.replaceChildren();
    pending = [];
    events.length = 0;
  });
  start();
  return () => {
    if (sub) sub.close();
  };
}

// The "Maintenance" board: the jobs shown in the UI (schedule, next run, enabled,
// last run) and the newest runs (job, trigger, started, finished, duration, a
// status badge and the result's counts) with summary stats, kept current by the
// `maintenance` topic (`maintenance.run.*` carry the whole run, and
// `maintenance.job.updated` the whole job).  Admins get a "Run now" button per job
// and "Run retention now" (the hidden `retention_cleanup_manual` job).  A board of
// the live page (see the comment at the top of index.html).
//
// The subscription opens before the snapshot is fetched; envelopes received
// meanwhile are applied after it.  A run's status only moves forward (running →
// success | failed | skipped), so a late or replayed envelope never undoes a newer
// one.  A gap refetches the snapshot.

import { badge, cell, emptyRow } from "./_dom.js";

const TOPIC = "maintenance";
const RUNS = 50; // runs fetched and kept on the board
const RANK = { running: 1, success: 2, failed: 2, skipped: 2 };
const TONE = { running: "warn", success: "ok", failed: "bad", skipped: "muted" };

const TEMPLATE = `
  <div class="toolbar">
    <button id="maintenance-retention" type="button" hidden>Run retention now</button>
    <button id="maintenance-refresh" type="button" class="secondary">Refresh</button>
  </div>
  <dl class="status" aria-label="Runs summary">
    <div><dt>Runs shown</dt><dd id="maintenance-total">0</dd></div>
    <div><dt>Running</dt><dd id="maintenance-running">0</dd></div>
    <div><dt>Succeeded</dt><dd id="maintenance-success">0</dd></div>
    <div><dt>Failed</dt><dd id="maintenance-failed">0</dd></div>
    <div><dt>Skipped</dt><dd id="maintenance-skipped">0</dd></div>
    <div><dt>Mean duration</dt><dd id="maintenance-mean">—</dd></div>
    <div><dt>Live</dt><dd><span id="maintenance-state" class="state" data-state="connecting" role="status">connecting</span></dd></div>
  </dl>
  <div class="log">
    <table>
      <caption>Jobs</caption>
      <colgroup><col style="width:16rem"><col style="width:11rem"><col style="width:10rem">
        <col style="width:7rem"><col><col style="width:7rem"></colgroup>
      <thead><tr><th scope="col">Job</th><th scope="col">Schedule</th><th scope="col">Next run</th>
        <th scope="col">Enabled</th><th scope="col">Last run</th><th scope="col"></th></tr></thead>
      <tbody id="maintenance-jobs"><tr class="empty"><td colspan="6">Loading…</td></tr></tbody>
    </table>
  </div>
  <div class="log" style="margin-top:.75rem">
    <table>
      <caption>Runs, newest first</caption>
      <colgroup><col style="width:14rem"><col style="width:6rem"><col style="width:9rem">
        <col style="width:9rem"><col style="width:6rem"><col style="width:6.5rem"><col></colgroup>
      <thead><tr><th scope="col">Job</th><th scope="col">Trigger</th><th scope="col">Started</th>
        <th scope="col">Finished</th><th scope="col">Duration</th><th scope="col">Status</th>
        <th scope="col">Result</th></tr></thead>
      <tbody id="maintenance-runs"><tr class="empty"><td colspan="7">Loading…</td></tr></tbody>
    </table>
  </div>`;

function localTime(iso) {
  const t = iso ? new Date(iso) : null;
  if (!t || Number.isNaN(t.getTime())) return "—";
  return t.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function duration(seconds) {
  if (seconds == null || !Number.isFinite(Number(seconds))) return "—";
  const s = Number(seconds);
  return s < 60 ? `${s.toFixed(s < 10 ? 2 : 1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** The counts of a run's result, e.g. "deleted 12 · message_events_retention 7 · …". */
export function resultText(run) {
  const result = run.result;
  if (!result || typeof result !== "object") return run.message || "—";
  const parts = [];
  for (const [key, value] of Object.entries(result)) {
    if (typeof value === "number") parts.push(`${key} ${value}`);
  }
  if (result.parts && typeof result.parts === "object") {
    for (const [name, part] of Object.entries(result.parts)) {
      if (part && part.error) parts.push(`${name}: ${part.error.code}`);
      else if (part && typeof part.deleted === "number") parts.push(`${name} ${part.deleted}`);
    }
  }
  if (result.error && result.error.code) parts.push(`error ${result.error.code}`);
  if (run.status === "failed" && run.message) parts.push(run.message);
  return parts.length ? parts.join(" · ") : "—";
}

/** A run as GET /api/maintenance/runs shows it, from a maintenance.run.* envelope's data. */
function runOf(data) {
  const { run_id: id, key: job, code: _code, ...rest } = data;
  return { id, job, ...rest };
}

export function mount(container, ctx) {
  container.innerHTML = TEMPLATE; // a constant: no data goes through innerHTML
  const $ = (id) => container.querySelector(`#${id}`);
  const ui = {
    retention: $("maintenance-retention"), refresh: $("maintenance-refresh"),
    jobs: $("maintenance-jobs"), runs: $("maintenance-runs"), state: $("maintenance-state"),
    total: $("maintenance-total"), running: $("maintenance-running"),
    success: $("maintenance-success"), failed: $("maintenance-failed"),
    skipped: $("maintenance-skipped"), mean: $("maintenance-mean"),
  };
  const admin = Boolean(ctx.user && Array.isArray(ctx.user.roles) && ctx.user.roles.includes("admin"));
  const jobs = new Map(); // key -> job (as the API shows it)
  const runs = new Map(); // run id -> run
  let loaded = false;
  let waiting = [];
  // Hooks for the console and tests.
  window.heraldRuns = runs;
  window.heraldJobs = jobs;
  ui.retention.hidden = !admin;

  function drawJobs() {
    const list = [...jobs.values()].sort((a, b) => a.key.localeCompare(b.key));
    if (!list.length) {
      ui.jobs.replaceChildren(emptyRow("No jobs shown in the UI.", 6));
      return;
    }
    ui.jobs.replaceChildren(...list.map((job) => {
      const tr = document.createElement("tr");
      tr.dataset.job = job.key;
      const name = cell(job.key, "key");
      const type = document.createElement("div");
      type.className = "hint";
      type.textContent = job.job_type;
      name.append(type);
      const schedule = job.schedule_cron ? `${job.schedule_cron} (${job.timezone})` : "on demand";
      const last = cell("", "last-run");
      if (job.last_run) {
        last.append(badge(job.last_run.status, TONE[job.last_run.status] || "muted"), " ",
                    localTime(job.last_run.finished_at || job.last_run.started_at || job.last_run.created_at));
      } else {
        last.textContent = "never";
      }
      const enabled = cell("", "enabled");
      enabled.append(job.enabled ? badge("enabled", "ok") : badge("disabled", "muted"));
      const action = cell("", "action");
      if (admin) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "secondary";
        button.textContent = "Run now";
        button.dataset.action = "run";
        button.disabled = job.last_run && job.last_run.status === "running";
        button.addEventListener("click", () => start(`/api/maintenance/jobs/${encodeURIComponent(job.key)}/run`, job.key, button));
        action.append(button);
      }
      tr.append(name, cell(schedule, "schedule"),
                cell(job.enabled && job.next_run_at ? localTime(job.next_run_at) : "—", "next-run"),
                enabled, last, action);
      return tr;
    }));
  }

  function drawRuns() {
    const list = [...runs.values()]
      .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)) || String(b.id).localeCompare(String(a.id)))
      .slice(0, RUNS);
    for (const [id] of runs) if (!list.some((r) => r.id === id)) runs.delete(id);
    if (!list.length) {
      ui.runs.replaceChildren(emptyRow("No runs yet.", 7));
    } else {
      ui.runs.replaceChildren(...list.map((run) => {
        const tr = document.createElement("tr");
        tr.dataset.runId = run.id;
        tr.dataset.status = run.status;
        tr.dataset.job = run.job;
        const status = cell("", "status");
        status.append(badge(run.status, TONE[run.status] || "muted"));
        const result = cell(resultText(run), "result");
        if (run.message) result.title = run.message;
        tr.append(cell(run.job, "job"), cell(run.trigger, "trigger"), cell(localTime(run.started_at), "started"),
                  cell(localTime(run.finished_at), "finished"), cell(duration(run.duration_s), "duration"),
                  status, result);
        return tr;
      }));
    }
    const count = (s) => list.filter((r) => r.status === s).length;
    ui.total.textContent = String(list.length);
    ui.running.textContent = String(count("running"));
    ui.success.textContent = String(count("success"));
    ui.failed.textContent = String(count("failed"));
    ui.skipped.textContent = String(count("skipped"));
    const timed = list.filter((r) => r.duration_s != null).map((r) => Number(r.duration_s));
    ui.mean.textContent = timed.length ? duration(timed.reduce((a, b) => a + b, 0) / timed.length) : "—";
  }

  function putRun(run) {
    const known = runs.get(run.id);
    if (known && (RANK[run.status] || 0) < (RANK[known.status] || 0)) return false; // stale
    runs.set(run.id, known ? { ...known, ...run } : run);
    const job = jobs.get(run.job);
    if (job && (!job.last_run || job.last_run.id === run.id
                || String(run.created_at) >= String(job.last_run.created_at))) {
      job.last_run = runs.get(run.id);
    }
    return true;
  }

  function apply(envelope) {
    if (envelope.type === "maintenance.job.updated") {
      const job = envelope.data;
      if (job.visible_in_ui) jobs.set(job.key, job);
      else jobs.delete(job.key);
    } else if (envelope.type.startsWith("maintenance.run.")) {
      putRun(runOf(envelope.data));
    }
  }

  async function loadAll() {
    try {
      const [jobList, runList] = await Promise.all([
        ctx.fetchJSON("/api/maintenance/jobs"),
        ctx.fetchJSON(`/api/maintenance/runs?limit=${RUNS}`),
      ]);
      jobs.clear();
      runs.clear();
      for (const job of jobList.jobs) jobs.set(job.key, job);
      for (const run of runList.runs) runs.set(run.id, run);
      loaded = true;
      const early = waiting;
      waiting = [];
      for (const envelope of early) apply(envelope);
      drawJobs();
      drawRuns();
    } catch (err) {
      if (ctx.signal.aborted) return;
      ctx.say(`Maintenance: ${err.message}`, true);
    }
  }

  async function start(path, what, button) {
    button.disabled = true;
    try {
      const { run_id: runId } = await ctx.fetchJSON(path, { method: "POST" });
      ctx.say(`Started a run of ${what}.`);
      // Shown at once; its events bring it up to date (they may even have come first).
      const run = await ctx.fetchJSON(`/api/maintenance/runs/${encodeURIComponent(runId)}`);
      if (putRun(run)) {
        drawJobs();
        drawRuns();
      }
    } catch (err) {
      if (ctx.signal.aborted) return;
      ctx.say(err.status === 409 ? `${what} is already running.` : `Could not start ${what}: ${err.message}`, true);
    } finally {
      button.disabled = false;
    }
  }

  const sub = ctx.subscribe({
    topics: [TOPIC],
    onEvent: (envelope) => {
      if (!String(envelope.type).startsWith("maintenance.")) return;
      if (!loaded) {
        waiting.push(envelope);
        return;
      }
      apply(envelope);
      drawJobs();
      drawRuns();
    },
    onGap: () => loadAll(),
    onState: (s) => {
      ui.state.textContent = s.state;
      ui.state.dataset.state = s.state;
      if (s.state === "closed" && s.error) ctx.say(`Maintenance: ${s.error}${s.detail ? ` (${s.detail})` : ""}.`, true);
    },
  });
  ui.retention.addEventListener("click", () => start("/api/maintenance/retention/run", "retention", ui.retention));
  ui.refresh.addEventListener("click", () => loadAll());
  loadAll();
  return () => sub.close();
}

// app.js: Herald's task page (GET /), the main module.
//
// Plain modern JavaScript, ES modules, no build step, no dependencies, nothing from a CDN.
// Why: the page must work offline and ship inside the package, the onefile and the .deb
// as they are (a browser loads these files straight from the web service), its strict
// Content-Security-Policy allows scripts from this origin only, and it is small enough
// (a form, a list, a detail view) that a framework would be more code to vet and keep
// up to date than the page itself. The live channel is herald-live.js, the same
// protocol rules as the Python client (docs/protocol.md), checked by the same vectors.
//
// What it talks to: GET /api/session (who, the CSRF token, the notifier's URL),
// GET /api/catalog (each task's JSON Schema and display), GET/POST /api/tasks,
// POST /api/tasks/{id}/cancel, GET /api/tasks/{id}/events, POST /api/logout, and the
// notifier's WebSocket (authenticated by the session cookie). Every request that changes
// something carries the session's CSRF token in X-Herald-CSRF.

import { LiveChannel, TERMINAL_EVENTS } from "./herald-live.js";
import { TaskForm } from "./form.js";
import { renderError, renderResult, summary } from "./results.js";

const CSRF_HEADER = "X-Herald-CSRF";
const PAGE_SIZE = 100; // tasks listed
const MAX_OUTPUT_LINES = 5000; // kept per task in the detail view
const MAX_LIVE_EVENTS = 5000; // per task, for its timeline

const $ = (id) => document.getElementById(id);

const state = {
  session: null,
  catalog: new Map(), // name -> task entry (title, schema, display)
  tasks: new Map(), // id -> task record (as GET /api/tasks answers, then folded events)
  order: [], // ids listed, newest first
  query: "",
  form: null,
  detail: null, // the id shown
  fetched: new Map(), // id -> events read from the API when its detail opened
  live: new Map(), // id -> events received live, in the order received
  output: new Map(), // id -> output lines
  channel: null,
  welcomes: 0,
};

// ------------------------------------------------------------------------- requests

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.fields = error.fields || null;
  }
}

async function api(method, path, body = undefined) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers[CSRF_HEADER] = state.session ? state.session.csrf || "" : "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) {
    signedOut();
    throw new ApiError(401, null);
  }
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

function notice(message) {
  const box = $("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

function signedOut() {
  if (state.channel) state.channel.close();
  window.location.replace("/"); // the server's page says how to sign in again
}

// ---------------------------------------------------------------------------- tasks

function taskTitle(task) {
  const entry = state.catalog.get(task.task);
  return entry ? entry.title || task.task : task.task;
}

function lineOf(task) {
  if (task.state === "succeeded") {
    const entry = state.catalog.get(task.task);
    return summary(task.result, entry ? entry.display : null) || "Done";
  }
  if (task.state === "failed") return (task.error && task.error.message) || task.message || "Failed";
  if (task.state === "cancelled") return task.message || "Cancelled";
  if (task.cancel_requested && task.state === "running") return "Cancelling…";
  const progress = typeof task.progress === "number" ? `${Math.round(task.progress * 100)} %` : "";
  return [progress, task.message].filter(Boolean).join(" · ") || task.state;
}

function argsText(args) {
  return Object.entries(args || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
}

function renderRow(li, task) {
  li.dataset.id = task.id;
  li.dataset.state = task.state;
  let button = li.firstElementChild;
  if (!button) {
    button = document.createElement("button");
    button.type = "button";
    button.className = "task";
    button.addEventListener("click", () => openDetail(task.id));
    const name = document.createElement("span");
    name.className = "name";
    const badge = document.createElement("span");
    const line = document.createElement("span");
    line.className = "line";
    const bar = document.createElement("progress");
    bar.max = 1;
    button.append(name, badge, line, bar);
    li.append(button);
  }
  const [name, badge, line, bar] = button.children;
  name.textContent = `${taskTitle(task)} ${argsText(task.args)}`;
  badge.className = `state ${task.state}`;
  badge.textContent = task.state;
  line.textContent = lineOf(task);
  bar.hidden = task.state !== "running";
  if (typeof task.progress === "number") bar.value = task.progress;
  else bar.removeAttribute("value");
  bar.setAttribute("aria-label", `Progress of ${taskTitle(task)}`);
  button.setAttribute("aria-current", state.detail === task.id ? "true" : "false");
  button.setAttribute("aria-label", `${taskTitle(task)}, ${task.state}: ${line.textContent}`);
}

function renderList() {
  const list = $("tasks");
  const rows = new Map([...list.children].map((li) => [li.dataset.id, li]));
  const wanted = [];
  for (const id of state.order) {
    const task = state.tasks.get(id);
    if (!task) continue;
    const li = rows.get(id) || document.createElement("li");
    renderRow(li, task);
    wanted.push(li);
    rows.delete(id);
  }
  for (const li of rows.values()) li.remove();
  wanted.forEach((li, i) => {
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  $("no-tasks").hidden = wanted.length > 0;
  $("no-tasks").textContent = state.query ? "No task matches this search." : "No tasks yet: run one.";
}

function renderTask(id) {
  const li = [...$("tasks").children].find((n) => n.dataset.id === id);
  const task = state.tasks.get(id);
  if (li && task) renderRow(li, task);
  if (state.detail === id) renderDetail();
}

async function loadTasks() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.query) params.set("q", state.query);
  const searchError = $("search-error");
  let page;
  try {
    page = await api("GET", `/api/tasks?${params}`);
  } catch (error) {
    if (error.status === 400 || error.status === 422) {
      searchError.textContent = (error.fields && error.fields.q) || error.message;
      searchError.hidden = false;
      $("search").setAttribute("aria-invalid", "true");
      return;
    }
    throw error;
  }
  searchError.hidden = true;
  $("search").removeAttribute("aria-invalid");
  state.order = [];
  for (const task of page.tasks) {
    state.tasks.set(task.id, task);
    state.order.push(task.id);
  }
  renderList();
  if (state.detail) renderDetail();
}

async function refreshTask(id) {
  try {
    const task = await api("GET", `/api/tasks/${id}`);
    state.tasks.set(id, task);
    renderTask(id);
  } catch (error) {
    if (error.status !== 404) throw error;
  }
}

// What each event does to a task (services/core/taskview.py's fold, in short); a
// terminal event also reads the task again, for its whole result.
function applyEvent(ev) {
  const task = state.tasks.get(ev.task);
  const live = state.live.get(ev.task) || [];
  if (live.length < MAX_LIVE_EVENTS) live.push(ev);
  state.live.set(ev.task, live);
  if (ev.event === "output") {
    const lines = state.output.get(ev.task) || [];
    lines.push(...(ev.data.lines || []).map(String));
    state.output.set(ev.task, lines.slice(-MAX_OUTPUT_LINES));
  }
  if (!task) {
    if (ev.event === "queued" && !state.query) {
      state.order.unshift(ev.task);
      refreshTask(ev.task).then(() => renderList());
    }
    return;
  }
  const done = ["succeeded", "failed", "cancelled"].includes(task.state);
  if (done && !TERMINAL_EVENTS.has(ev.event)) {
    if (state.detail === ev.task) renderDetail();
    return; // older than what the list read
  }
  switch (ev.event) {
    case "started":
      Object.assign(task, { state: "running", progress: null, message: null, result: null,
        error: null, attempt: ev.data.attempt || task.attempt });
      break;
    case "progress":
      task.state = "running";
      task.progress = ev.data.fraction ?? null;
      task.message = ev.data.message ?? null;
      break;
    case "cancel_requested":
      task.cancel_requested = true;
      break;
    case "retrying":
      task.state = "queued";
      task.message = (ev.data.error && ev.data.error.message) || "retrying";
      break;
    case "succeeded":
      Object.assign(task, { state: "succeeded", result: ev.data.result ?? null, progress: 1 });
      break;
    case "failed":
      Object.assign(task, { state: "failed", error: ev.data.error ?? null,
        message: ev.data.error && ev.data.error.message });
      break;
    case "cancelled":
      task.state = "cancelled";
      break;
    default:
      break;
  }
  renderTask(ev.task);
  if (TERMINAL_EVENTS.has(ev.event)) refreshTask(ev.task);
}

// --------------------------------------------------------------------------- detail

function timelineOf(id) {
  // The events read when the detail opened, up to the first one received live; then
  // every live event as it came (the live channel sends each once, in order).
  const live = state.live.get(id) || [];
  const first = live.length ? live[0].seq : Infinity;
  return [...(state.fetched.get(id) || []).filter((e) => e.seq < first), ...live];
}

async function openDetail(id, { focus = true } = {}) {
  const previous = state.detail;
  state.detail = id;
  if (previous && previous !== id) renderTask(previous);
  renderTask(id);
  $("detail").hidden = false;
  renderDetail();
  if (focus) $("detail-close").focus();
  if (!state.fetched.has(id)) {
    const events = [];
    let path = `/api/tasks/${id}/events?limit=500`;
    for (let pages = 0; path && pages < 20; pages += 1) {
      const page = await api("GET", path);
      events.push(...page.events.map((e) => ({ seq: e.seq, task: e.task, event: e.event,
        ts: e.ts, attempt: e.attempt, data: e.data || {} })));
      path = page.next || null;
    }
    state.fetched.set(id, events);
    if (!state.live.has(id) || !state.live.get(id).length) {
      const lines = [];
      for (const e of events) if (e.event === "output") lines.push(...(e.data.lines || []));
      state.output.set(id, lines.slice(-MAX_OUTPUT_LINES));
    } else {
      const first = state.live.get(id)[0].seq;
      const earlier = [];
      for (const e of events) {
        if (e.event === "output" && e.seq < first) earlier.push(...(e.data.lines || []));
      }
      const liveLines = [];
      for (const e of state.live.get(id)) if (e.event === "output") liveLines.push(...(e.data.lines || []));
      state.output.set(id, [...earlier, ...liveLines].slice(-MAX_OUTPUT_LINES));
    }
    if (state.detail === id) renderDetail();
  }
}

function closeDetail() {
  const id = state.detail;
  if (!id) return;
  state.detail = null;
  $("detail").hidden = true;
  renderTask(id);
  const li = [...$("tasks").children].find((n) => n.dataset.id === id);
  if (li) li.firstElementChild.focus();
}

function renderDetail() {
  const id = state.detail;
  const task = id && state.tasks.get(id);
  if (!task) return;
  const box = $("detail");
  box.dataset.id = id;
  box.dataset.state = task.state;
  $("detail-title").textContent = taskTitle(task);
  const badge = $("detail-state");
  badge.className = `state ${task.state}`;
  badge.textContent = task.state;
  const meta = [`id ${task.id.slice(0, 12)}`, argsText(task.args)];
  if (task.attempt > 1) meta.push(`attempt ${task.attempt} of ${task.max_attempts}`);
  if (task.created_at) meta.push(`created ${new Date(task.created_at).toLocaleString()}`);
  $("detail-meta").textContent = meta.filter(Boolean).join(" · ");
  const bar = $("detail-progress");
  if (typeof task.progress === "number") bar.value = task.progress;
  else bar.removeAttribute("value");
  bar.hidden = !(task.state === "running" || task.state === "queued" || task.state === "succeeded");
  $("detail-message").textContent = task.state === "succeeded" ? "" : lineOf(task);
  const done = ["succeeded", "failed", "cancelled"].includes(task.state);
  $("detail-cancel").disabled = done || task.cancel_requested;
  $("detail-rerun").disabled = !done || !state.catalog.has(task.task);
  const errorBox = $("detail-error");
  errorBox.hidden = !(task.state === "failed" && task.error);
  if (!errorBox.hidden) errorBox.replaceChildren(renderError(task.error));
  const result = $("detail-result");
  $("result-heading").hidden = task.state !== "succeeded";
  if (task.state === "succeeded") {
    const entry = state.catalog.get(task.task);
    result.replaceChildren(renderResult(task.result, entry ? entry.display : null));
  } else {
    result.replaceChildren();
  }
  const out = $("detail-output");
  const lines = state.output.get(id) || [];
  const text = lines.join("\n");
  if (out.textContent !== text) {
    const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
    out.textContent = text;
    if (atEnd) out.scrollTop = out.scrollHeight;
  }
  const timeline = $("detail-timeline");
  const events = timelineOf(id);
  timeline.replaceChildren(...events.map((e) => {
    const li = document.createElement("li");
    li.dataset.seq = String(e.seq);
    li.dataset.event = e.event;
    const extra = e.event === "progress" ? ` ${Math.round((e.data.fraction || 0) * 100)} %` : "";
    li.textContent = `#${e.seq} ${e.event}${extra}`;
    return li;
  }));
}

// ----------------------------------------------------------------------------- form

function selectTask(name) {
  const entry = state.catalog.get(name);
  if (!entry || (state.form && state.form.task.name === name)) return; // what was typed stays
  $("task-description").textContent = entry.description || "";
  state.form = new TaskForm(entry);
  state.form.render($("fields"));
  $("form-error").hidden = true;
  $("form-status").textContent = "";
}

async function submit(taskName, args, form = null) {
  const status = $("form-status");
  const formError = $("form-error");
  formError.hidden = true;
  if (form) form.clearErrors();
  status.textContent = "Submitting…";
  $("submit").disabled = true;
  try {
    const task = await api("POST", "/api/tasks", { task: taskName, args });
    status.textContent = `Submitted ${taskTitle(task)}.`;
    state.tasks.set(task.id, { ...task, ...(state.tasks.get(task.id) || {}) });
    if (!state.order.includes(task.id)) state.order.unshift(task.id);
    renderList();
    openDetail(task.id, { focus: false });
    return task;
  } catch (error) {
    status.textContent = "";
    const others = form && error.fields ? form.showErrors(error.fields) : error.fields || {};
    const rest = Object.entries(others).map(([k, v]) => `${k}: ${v}`);
    if (!error.fields || rest.length) {
      formError.textContent = [error.message, ...rest].join(" ");
      formError.hidden = false;
    }
    return null;
  } finally {
    $("submit").disabled = false;
  }
}

// ----------------------------------------------------------------------------- live

function onLive(msg) {
  if (msg.type === "welcome") {
    state.welcomes += 1;
    $("live").dataset.welcomes = String(state.welcomes);
    if (state.welcomes === 1) loadTasks().catch(report);
  } else if (msg.type === "event") {
    applyEvent(msg.event);
  } else if (msg.type === "reset") {
    // Events the page was owed are gone: read the tasks again.
    state.fetched.clear();
    loadTasks().catch(report);
  }
}

function onLiveState(name, retryIn) {
  const live = $("live");
  live.dataset.state = name;
  live.textContent = {
    connecting: "Connecting…",
    connected: "Live",
    reconnecting: `Reconnecting${retryIn ? ` in ${retryIn.toFixed(1)} s` : ""}…`,
    closed: "Offline",
  }[name] || name;
  if (name === "closed" && state.channel && state.channel.closeCode === 4401) signedOut();
}

function report(error) {
  if (error && error.status === 401) return;
  notice(error && error.message ? error.message : String(error));
}

// ----------------------------------------------------------------------------- start

async function start() {
  state.session = await api("GET", "/api/session");
  $("who").textContent = `Signed in as ${state.session.principal}`;
  const catalog = await api("GET", "/api/catalog");
  const select = $("task-select");
  for (const entry of catalog.tasks) {
    state.catalog.set(entry.name, entry);
    const option = document.createElement("option");
    option.value = entry.name;
    option.textContent = `${entry.title || entry.name} (${entry.name})`;
    select.append(option);
  }
  select.addEventListener("change", () => selectTask(select.value));
  if (catalog.tasks.length) selectTask(catalog.tasks[0].name);

  $("task-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.form) submit(state.form.task.name, state.form.values(), state.form).catch(report);
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.query = $("search").value.trim();
    loadTasks().catch(report);
  });
  let typing = null;
  $("search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.query = $("search").value.trim();
      loadTasks().catch(report);
    }, 300);
  });
  $("detail-close").addEventListener("click", closeDetail);
  $("detail-cancel").addEventListener("click", async () => {
    const id = state.detail;
    try {
      const task = await api("POST", `/api/tasks/${id}/cancel`);
      state.tasks.set(id, { ...state.tasks.get(id), ...task });
      renderTask(id);
    } catch (error) {
      report(error);
    }
  });
  $("detail-rerun").addEventListener("click", () => {
    const task = state.tasks.get(state.detail);
    if (task) submit(task.task, task.args || {}).catch(report);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.detail) {
      event.preventDefault();
      closeDetail();
    }
  });
  $("signout").addEventListener("click", async () => {
    try {
      await api("POST", "/api/logout");
    } finally {
      signedOut();
    }
  });

  if (state.session.ws) {
    state.channel = new LiveChannel(state.session.ws, { onMessage: onLive, onState: onLiveState });
    state.channel.open();
  } else {
    notice("The notifier is not running: tasks are shown without live updates.");
    await loadTasks();
  }
}

start().catch(report);

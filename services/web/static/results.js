// results.js: a task's result and error as people read them, by the task's declared
// display (GET /api/catalog's "display"): the rules of services/core/resultview.py, which
// the desktop app and `herald show` use, so a result reads the same everywhere. A task with
// no display shows its result as pretty-printed JSON; a table field (a CSV report's
// columns, a checksum's manifest) as a table.

const ELLIPSIS = "…";
const SHORT_DIGEST = 12;
const MAX_TABLE_ROWS = 1000;
const RIGHT = new Set(["bytes", "count", "number", "ratio", "seconds", "code"]);

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);

export function formatBytes(n) {
  if (n < 1024) return `${Math.trunc(n)} B`;
  for (const unit of ["KiB", "MiB", "GiB", "TiB", "PiB"]) {
    n /= 1024;
    if (n < 1023.95 || unit === "PiB") return `${n.toFixed(1)} ${unit}`;
  }
  return "";
}

function formatSeconds(s) {
  if (s < 60) return `${Number(s.toFixed(s < 10 ? 1 : 0))} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function numberText(value) {
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return value.toLocaleString("en-US");
  if (isNumber(value)) {
    return Math.abs(value) >= 1e-4
      ? value.toLocaleString("en-US", { maximumSignificantDigits: 6 })
      : value.toPrecision(3);
  }
  return text(value);
}

function text(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return numberText(value);
  return JSON.stringify(value);
}

function lookup(result, key) {
  if (result === null || typeof result !== "object" || Array.isArray(result)) return [false];
  if (key.includes("/")) {
    const [top, bottom] = key.split("/", 2);
    const a = result[top];
    const b = result[bottom];
    if (!isNumber(a) || !isNumber(b)) return [false];
    return [true, b ? a / b : null];
  }
  if (!(key in result) || result[key] === null) return [false];
  return [true, result[key]];
}

export function fill(template, result) {
  if (template === null || template === undefined) return null;
  let out = "";
  let ok = true;
  out = template.replace(/\{([^{}:]+)(?::([^{}]*))?\}/g, (_, name, spec) => {
    const [present, value] = lookup(result, name);
    if (!present) ok = false;
    return ok ? part(value, spec || "") : "";
  });
  return ok ? out : null;
}

function part(value, spec) {
  const [kind, noun] = spec ? [spec.split(":")[0], spec.split(":")[1]] : ["text", undefined];
  if (kind === "short") {
    const t = text(value);
    return t.slice(0, SHORT_DIGEST) + (t.length > SHORT_DIGEST ? ELLIPSIS : "");
  }
  if (kind === "name") {
    const t = text(value).replaceAll("\\", "/").replace(/\/+$/, "") || text(value);
    return t.split("/").pop();
  }
  if (value === null) return "—";
  return formatValue(value, kind, { noun });
}

export function formatValue(value, kind, { item = null, noun = null } = {}) {
  if (kind === "bytes" && isNumber(value)) return formatBytes(value);
  if (kind === "seconds" && isNumber(value)) return formatSeconds(value);
  if (kind === "count" || kind === "output") {
    if (Array.isArray(value)) value = value.length;
    else if (value && typeof value === "object") value = Object.keys(value).length;
    if (Number.isInteger(value)) {
      let t = value.toLocaleString("en-US");
      if (noun) t += ` ${noun}${value === 1 ? "" : "s"}`;
      else if (kind === "output") t += ` line${value === 1 ? "" : "s"}`;
      return t;
    }
  }
  if (kind === "ratio" && isNumber(value)) return `${(value * 100).toFixed(1)} %`;
  if ((kind === "number" || kind === "code") && isNumber(value)) {
    return kind === "code" ? String(value) : numberText(value);
  }
  if (kind === "list" && Array.isArray(value)) {
    return value.map((v) => (item && v && typeof v === "object" ? fill(item, v) : null) ?? text(v))
      .join(", ");
  }
  if (kind === "table" && Array.isArray(value)) {
    return `${value.length.toLocaleString("en-US")} row${value.length === 1 ? "" : "s"}`;
  }
  return text(value);
}

function label(key) {
  const t = key.replaceAll("_", " ").trim();
  return t.slice(0, 1).toUpperCase() + t.slice(1);
}

/** The one-line summary of a result (the task list's line). */
export function summary(result, display, width = 80) {
  if (result === null || result === undefined) return "";
  let templates = (display && display.summary) || [];
  if (typeof templates === "string") templates = [templates];
  for (const template of templates) {
    const t = fill(template, result);
    if (t !== null) return shorten(t, width);
  }
  if (typeof result === "string") {
    const lines = result.trim().split("\n");
    return shorten((lines[0] || "") + (lines.length > 1 ? ` ${ELLIPSIS}` : ""), width);
  }
  if (result && typeof result === "object" && typeof result.path === "string" && result.path) {
    return shorten(part(result.path, "name"), width);
  }
  return shorten(text(result), width);
}

function shorten(t, width) {
  t = t.split(/\s+/).filter(Boolean).join(" ");
  return t.length <= width ? t : `${t.slice(0, width - 1)}${ELLIPSIS}`;
}

function node(tag, attrs = {}, content = null) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (content !== null) n.textContent = content;
  return n;
}

function table(field, rows, caption) {
  const wrap = node("div", { class: "table-wrap", tabindex: "0" });
  const t = node("table");
  t.append(node("caption", {}, caption));
  const head = node("tr");
  for (const col of field.columns) {
    const numeric = RIGHT.has(col.type || "text") && rows.some((r) => r && isNumber(r[col.key]));
    head.append(node("th", numeric ? { scope: "col", class: "num" } : { scope: "col" },
      col.label || label(col.key)));
  }
  const thead = node("thead");
  thead.append(head);
  t.append(thead);
  const body = node("tbody");
  for (const record of rows.slice(0, MAX_TABLE_ROWS)) {
    const tr = node("tr");
    for (const col of field.columns) {
      const value = record && typeof record === "object" ? record[col.key] : null;
      const kind = col.type || "text";
      tr.append(node("td", RIGHT.has(kind) && isNumber(value) ? { class: "num" } : {},
        value === null || value === undefined ? "" : formatValue(value, kind, { item: col.item })));
    }
    body.append(tr);
  }
  t.append(body);
  wrap.append(t);
  if (rows.length > MAX_TABLE_ROWS) {
    wrap.append(node("p", { class: "hint" },
      `… and ${(rows.length - MAX_TABLE_ROWS).toLocaleString("en-US")} more rows`));
  }
  return wrap;
}

/** A result as an element: its summary, then its declared fields (or its JSON). */
export function renderResult(result, display) {
  const out = node("div");
  out.append(node("p", { class: "summary" }, summary(result, display)));
  if (!display || result === null || typeof result !== "object" || Array.isArray(result)) {
    if (result !== null && typeof result === "object") {
      out.append(node("pre", { class: "json" }, JSON.stringify(result, null, 2)));
    }
    return out;
  }
  const list = node("dl");
  const tables = [];
  for (const spec of display.fields || []) {
    const kind = spec.type || "text";
    const key = kind === "ratio" && spec.of ? `${spec.key}/${spec.of}` : spec.key;
    const [present, value] = lookup(result, key);
    if (!present || (value && typeof value === "object" && !Object.keys(value).length
                     && kind !== "count")) continue;
    const name = spec.label || label(spec.key);
    if (kind === "table" && Array.isArray(value)) {
      tables.push(table(spec, value, `${name} (${formatValue(value, "table")})`));
      continue;
    }
    list.append(node("dt", {}, name));
    const dd = node("dd", kind === "digest" || kind === "path" ? { class: "mono" } : {},
      formatValue(value, kind, { item: spec.item }));
    list.append(dd);
  }
  if (list.childElementCount) out.append(list);
  out.append(...tables);
  return out;
}

/** A task's error ({code, message, ...}) as an element. */
export function renderError(error) {
  const out = node("div");
  if (!error || typeof error !== "object") {
    out.append(node("p", {}, text(error)));
    return out;
  }
  const head = node("p");
  head.append(node("strong", {}, error.message || "The task failed."));
  if (error.code) head.append(` (${error.code})`);
  out.append(head);
  const rest = Object.fromEntries(Object.entries(error)
    .filter(([k]) => k !== "message" && k !== "code"));
  if (typeof rest.traceback === "string") {
    out.append(node("pre", {}, rest.traceback));
    delete rest.traceback;
  }
  if (Object.keys(rest).length) out.append(node("pre", {}, JSON.stringify(rest, null, 2)));
  return out;
}

// form.js: a task's form, generated from its arguments' JSON Schema (GET /api/catalog's
// "schema", services/core/params.py args_schema), and the API's 422 field errors shown
// next to their fields. No validation of its own beyond what the inputs say (min, max,
// required): the server's verdict is the one shown, with its words.

/** The schema's types, without "null" (null means: optional, the default applies). */
function typesOf(prop) {
  const types = Array.isArray(prop.type) ? prop.type : [prop.type];
  return types.filter((t) => t !== "null" && t !== undefined);
}

function kindOf(prop) {
  const types = typesOf(prop);
  if (Array.isArray(prop.enum)) return "choice";
  if (types.includes("boolean")) return "boolean";
  if (types.includes("integer")) return "integer";
  if (types.includes("number")) return "number";
  if (types.includes("array")) {
    const items = prop.items || {};
    return typesOf(items).includes("integer") ? "integer_list" : "string_list";
  }
  return "string";
}

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(key, value === true ? "" : String(value));
  }
  if (text !== null) node.textContent = text;
  return node;
}

/**
 * The form of one task: `render(container)` draws its fields; `values()` the arguments to
 * send (fields left empty are left out: the server applies their defaults); `showErrors`
 * puts the API's field errors next to their fields (the others are returned).
 */
export class TaskForm {
  constructor(task) {
    this.task = task;
    this.schema = task.schema || { properties: {} };
    this.required = new Set(this.schema.required || []);
    this.fields = new Map(); // name -> { kind, input, error, prop }
  }

  render(container) {
    container.replaceChildren();
    this.fields.clear();
    const props = this.schema.properties || {};
    for (const [name, prop] of Object.entries(props)) {
      container.append(this._field(name, prop));
    }
    if (!Object.keys(props).length) {
      container.append(el("p", { class: "hint" }, "This task takes no arguments."));
    }
  }

  _field(name, prop) {
    const kind = kindOf(prop);
    const id = `arg-${name}`;
    const required = this.required.has(name);
    const wrap = el("div", { class: kind === "boolean" ? "field check" : "field" });
    const label = el("label", { for: id, class: "field-label" }, prop.title || name);
    if (required) {
      label.append(" ", el("span", { class: "required", "aria-hidden": "true" }, "*"));
    }
    const hintId = `${id}-hint`;
    const errorId = `${id}-error`;
    let input;
    const fallback = prop.default;
    if (kind === "choice") {
      input = el("select", { id, name });
      if (!required && fallback === undefined) input.append(el("option", { value: "" }, "—"));
      for (const choice of prop.enum.filter((c) => c !== null)) {
        const option = el("option", { value: String(choice) }, String(choice));
        if (choice === fallback) option.selected = true;
        input.append(option);
      }
    } else if (kind === "boolean") {
      input = el("input", { id, name, type: "checkbox" });
      input.checked = fallback === true;
    } else if (kind === "integer" || kind === "number") {
      input = el("input", {
        id, name, type: "number", inputmode: kind === "integer" ? "numeric" : "decimal",
        step: kind === "integer" ? "1" : "any", min: prop.minimum ?? prop.exclusiveMinimum,
        max: prop.maximum ?? prop.exclusiveMaximum,
      });
      if (typeof fallback === "number") input.value = String(fallback);
    } else if (kind === "string_list" || kind === "integer_list") {
      input = el("textarea", { id, name, rows: 3 });
      input.value = Array.isArray(fallback) ? fallback.join("\n") : "";
    } else {
      input = el("input", {
        id, name, type: "text", spellcheck: "false", autocomplete: "off",
        minlength: prop.minLength, maxlength: prop.maxLength,
      });
      if (typeof fallback === "string") input.value = fallback;
    }
    if (required) {
      input.required = true;
      input.setAttribute("aria-required", "true");
    }
    const parts = [];
    if (prop.description) parts.push(prop.description);
    if (kind === "string_list") parts.push("One item per line.");
    if (kind === "integer_list") parts.push("Whole numbers, one per line or separated by commas.");
    const bounds = [];
    if (prop.minimum !== undefined) bounds.push(`at least ${prop.minimum}`);
    if (prop.maximum !== undefined) bounds.push(`at most ${prop.maximum}`);
    if (bounds.length) {
      const said = bounds.join(", ");
      parts.push(`${said[0].toUpperCase()}${said.slice(1)}.`);
    }
    if (!required && fallback !== undefined && fallback !== null && kind !== "boolean") {
      parts.push(`Default: ${Array.isArray(fallback) ? fallback.join(", ") || "none" : fallback}.`);
    }
    const hint = el("p", { id: hintId, class: "hint" }, parts.join(" "));
    const error = el("p", { id: errorId, class: "field-error", hidden: true });
    input.setAttribute("aria-describedby", `${hintId} ${errorId}`);
    if (kind === "boolean") wrap.append(input, label, hint, error);
    else wrap.append(label, input, hint, error);
    this.fields.set(name, { kind, input, error, prop });
    return wrap;
  }

  /** The arguments as typed: a JSON object for POST /api/tasks. */
  values() {
    const args = {};
    for (const [name, { kind, input }] of this.fields) {
      if (kind === "boolean") {
        args[name] = input.checked;
        continue;
      }
      const text = input.value;
      if (text.trim() === "") continue; // the default applies
      if (kind === "integer" || kind === "number") {
        // The server says what is wrong with a value that is not a number: send it as is.
        const number = Number(text);
        args[name] = Number.isFinite(number) ? number : text;
      } else if (kind === "string_list") {
        args[name] = text.split("\n").filter((line) => line !== "");
      } else if (kind === "integer_list") {
        args[name] = text.split(/[\s,]+/).filter(Boolean)
          .map((part) => (/^[+-]?\d+$/.test(part) ? Number(part) : part));
      } else {
        args[name] = text;
      }
    }
    return args;
  }

  clearErrors() {
    for (const { input, error } of this.fields.values()) {
      input.removeAttribute("aria-invalid");
      error.hidden = true;
      error.textContent = "";
    }
  }

  /** Show `fields` ({name: message}) next to their inputs; returns those with no input. */
  showErrors(fields) {
    this.clearErrors();
    const others = {};
    let first = null;
    for (const [name, message] of Object.entries(fields || {})) {
      const field = this.fields.get(name) || this.fields.get(name.replace(/^args\./, ""));
      if (!field) {
        others[name] = message;
        continue;
      }
      field.input.setAttribute("aria-invalid", "true");
      field.error.textContent = message;
      field.error.hidden = false;
      first = first || field.input;
    }
    if (first) first.focus();
    return others;
  }

  focusFirst() {
    const first = this.fields.values().next().value;
    if (first) first.input.focus();
  }
}

// Parley Studio's shell: the session, the /v1 API client, History-API routing (every page has
// its own URL under /studio), the header and navigation, sign-in, accepting an invite, and the
// small DOM helpers every page module uses. Page modules live in ./pages/<name>.js, import from
// this file and call register(...). Nothing here writes HTML as text: the strict CSP (no inline
// scripts or styles) holds, and what users typed is always shown as text.

const API = "/v1";
const BASE = "/studio";
const PAGES = ["datasets", "training", "models", "try", "bots", "channels", "analytics", "improve", "admin"];
const NAV_ORDER = ["Datasets", "Training", "Models", "Try it", "Bots", "Channels", "Analytics", "Improve", "Admin"];
const STUDIO_ROLES = ["admin", "builder"];
const WRITE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** The signed-in user: `{me: StudioSession|null}` (`me.user`, `me.scopes`, `me.csrf_token`). */
export const state = { me: null };

const routes = [];
let bootError = null;
let currentPage = null; // {controller: AbortController}

// --- the API ------------------------------------------------------------------------------

/** An error answer of the API: `status` (HTTP), `code` (`error`), `details` ([{field|path|line, message}]), `body`. */
export class ApiError extends Error {
  constructor(status, code, message, details, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details || [];
    this.body = body;
  }
}

/** `/datasets` → `/v1/datasets`; paths already under /v1 (or /studio) are kept. A path with a
 * `.` or `..` segment (an id from a URL that was not encoded) is refused: it would reach
 * another route than the page meant. */
export function apiUrl(path, query) {
  let url = path.startsWith(API + "/") || path.startsWith(BASE + "/") || /^https?:/.test(path) ? path : API + path;
  if (/(^|\/)\.\.?(\/|$)/.test(url.split(/[?#]/)[0])) throw new ApiError(400, "bad_path", `Not a Parley address: ${url}`);
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value === undefined || value === null || value === "") continue;
      params.set(key, String(value));
    }
    const qs = params.toString();
    if (qs) url += (url.includes("?") ? "&" : "?") + qs;
  }
  return url;
}

function csrfHeaders(method) {
  const headers = {};
  if (WRITE_METHODS.has(method) && state.me && state.me.csrf_token) headers["X-CSRF-Token"] = state.me.csrf_token;
  return headers;
}

function errorFrom(status, text, statusText) {
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (e) {
    body = null;
  }
  const message =
    body && typeof body.message === "string"
      ? body.message
      : body && typeof body.detail === "string"
        ? body.detail
        : `The server answered ${status} ${statusText || ""}`.trim() + ".";
  const code = (body && body.error) || `http_${status}`;
  // the API's lists of problems: `details` [{field|path|line, message}] or a dataset's `errors` [{line, message}]
  const list = body && (Array.isArray(body.details) ? body.details : Array.isArray(body.errors) ? body.errors : []);
  return new ApiError(status, code, message, (list || []).filter((d) => d && typeof d === "object"), body);
}

/** An answer 401 to someone signed in means the session ended (signed out elsewhere, expired,
 * the user disabled): wherever the call came from (a page, a form, a poll), go to sign-in and
 * come back here after. Returns `err` for the caller to throw. */
function sessionEnded(err, url) {
  if (err.status === 401 && state.me && !url.startsWith(API + "/auth/")) {
    state.me = null;
    toast("Your session has ended: sign in again.", "error");
    navigate(`/login?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
  }
  return err;
}

function parse(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (e) {
    return text;
  }
}

function xhrUpload(method, url, form, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    xhr.withCredentials = true;
    for (const [key, value] of Object.entries(csrfHeaders(method))) xhr.setRequestHeader(key, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(xhr.status === 204 ? null : parse(xhr.responseText));
      } else {
        reject(sessionEnded(errorFrom(xhr.status, xhr.responseText, xhr.statusText), url));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "The upload failed: the server could not be reached.")));
    xhr.addEventListener("abort", () => reject(new DOMException("The upload was cancelled.", "AbortError")));
    if (signal) signal.addEventListener("abort", () => xhr.abort());
    xhr.send(form);
  });
}

/**
 * Call the API with the session cookie: parsed JSON (204 → null; `raw: true` → the Response).
 * Writes carry the X-CSRF-Token header. `form` (FormData) with `onProgress(fraction)` is sent
 * with XMLHttpRequest, which reports upload progress. Throws ApiError on an error answer.
 */
export async function api(method, path, { json, form, query, onProgress, raw, signal } = {}) {
  method = method.toUpperCase();
  const url = apiUrl(path, query);
  if (form && onProgress) return xhrUpload(method, url, form, onProgress, signal);
  const init = { method, credentials: "same-origin", headers: csrfHeaders(method), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, "network", "The server could not be reached; check that Parley is running.");
  }
  if (raw && response.ok) return response;
  if (!response.ok) throw sessionEnded(errorFrom(response.status, await response.text(), response.statusText), url);
  if (response.status === 204) return null;
  return parse(await response.text());
}

// --- DOM helpers --------------------------------------------------------------------------

function append(parent, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    for (const c of child) append(parent, c);
  } else if (child instanceof Node) {
    parent.appendChild(child);
  } else {
    parent.appendChild(document.createTextNode(String(child)));
  }
}

const PROPERTIES = new Set(["value", "checked", "selected", "disabled", "hidden", "indeterminate", "multiple"]);

/**
 * Build an element: `h("button", {class: "btn", on: {click: fn}, "aria-label": "x"}, "text")`.
 * Strings become text nodes (never markup); arrays are flattened; null/false are skipped.
 * `style` takes an object applied through element.style (CSP-safe).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (key === "on") {
      for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    } else if (key === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else if (key === "dataset" && typeof value === "object") {
      Object.assign(el.dataset, value);
    } else if (PROPERTIES.has(key)) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** An `<a>` to a Studio URL that navigates without reloading (modifier clicks open as usual). */
export function link(href, text, attrs = {}) {
  const url = studioUrl(href);
  const userClick = attrs.on && attrs.on.click;
  return h("a", {
    ...attrs,
    href: url,
    on: {
      ...(attrs.on || {}),
      click: (event) => {
        if (userClick) userClick(event);
        if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
        event.preventDefault();
        navigate(url);
      },
    },
  }, text);
}

/** Say something briefly (kind: info, success, error); read out by screen readers. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: ["toast", `toast-${kind}`], "data-testid": "toast", role: kind === "error" ? "alert" : null }, message);
  box.appendChild(item);
  setTimeout(() => item.remove(), kind === "error" ? 10000 : 5000);
  return item;
}

/** An error for the page: its message, and its details as a list with their path or line. */
export function errorBox(err) {
  const message = err && err.message ? err.message : String(err);
  const details = (err && err.details) || [];
  return h(
    "div",
    { class: "error-box", role: "alert", "data-testid": "error-box" },
    h("p", { class: "error-message" }, message),
    details.length
      ? h(
          "ul",
          { class: "error-details", "data-testid": "error-details" },
          details.map((d) => {
            const where = d.field || d.path || (d.line !== undefined && d.line !== null ? `line ${d.line}` : null);
            return h("li", null, where ? h("code", null, String(where)) : null, where ? ": " : null, d.message || "");
          }),
        )
      : null,
  );
}

/** A server-drawn chart (SVG or PNG endpoint) as `<figure><img></figure>`; a chart the server
 * cannot draw says why. */
export function chartImg(src, alt, caption) {
  const url = apiUrl(src);
  const img = h("img", { src: url, alt, class: "chart-img", decoding: "async" });
  const figure = h("figure", { class: "chart", "data-testid": "chart" }, img, caption ? h("figcaption", null, caption) : null);
  img.addEventListener("error", async () => {
    let reason = "The chart could not be drawn.";
    try {
      await api("GET", url, { raw: true });
    } catch (e) {
      reason = e.message;
    }
    img.replaceWith(h("p", { class: "chart-missing", "data-testid": "chart-missing" }, `${alt}: ${reason}`));
  });
  return figure;
}

// scripts, HTML islands, styles, and SMIL animation (<set>/<animate> can write an href or an
// event attribute after the sanitiser has looked)
const SVG_DROP = new Set([
  "script", "foreignObject", "style", "iframe", "object", "embed", "metadata",
  "set", "animate", "animateMotion", "animateTransform", "discard", "handler", "listener",
]);
const SVG_NS = "http://www.w3.org/2000/svg"; // anything outside it (XHTML islands…) is dropped

/**
 * Fetch an SVG chart (with the session) and return it as a sanitised `<svg>` element, so its
 * parts can be styled and clicked: no scripts, event attributes or outside links; `style`
 * attributes are re-applied through element.style (the CSP blocks them as attributes).
 */
export async function inlineSvg(path) {
  const response = await api("GET", path, { raw: true });
  // a parsed document keeps the page's CSP: style attributes, <style> elements and event
  // attributes would be refused (a console error each) as they are parsed, so styles move to
  // data-style first and event attributes to data-on… (both dropped below)
  const text = (await response.text())
    .replace(/<style[\s\S]*?<\/style>/g, "")
    .replace(/<[a-zA-Z][^>]*>/g, (tag) => tag.replace(/\sstyle=/g, " data-style=").replace(/\s(?:[\w-]+:)?on(\w+\s*=)/gi, " data-on$1"));
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (!root || root.localName !== "svg" || root.namespaceURI !== SVG_NS) throw new ApiError(0, "bad_svg", "The chart is not an SVG image.");
  const styles = [];
  const walk = (el) => {
    for (const child of Array.from(el.children)) {
      if (SVG_DROP.has(child.localName) || child.namespaceURI !== SVG_NS) {
        child.remove();
        continue;
      }
      walk(child);
    }
    for (const attr of Array.from(el.attributes)) {
      const name = attr.name.toLowerCase();
      const local = attr.localName.toLowerCase(); // any prefix: xlink:href, x:href, href
      if (local.startsWith("on") || local.startsWith("data-on")) el.removeAttribute(attr.name);
      else if (local === "href" || local === "src") {
        if (!attr.value.trim().startsWith("#")) el.removeAttribute(attr.name);
      } else if (name === "style" || name === "data-style") {
        styles.push([el, attr.value]);
        el.removeAttribute(attr.name);
      }
    }
  };
  walk(root);
  const svg = document.importNode(root, true);
  // re-apply the styles on the imported copies (same tree order)
  const originals = [root, ...root.querySelectorAll("*")];
  const copies = [svg, ...svg.querySelectorAll("*")];
  const copyOf = new Map(originals.map((el, i) => [el, copies[i]]));
  for (const [el, text] of styles) {
    const copy = copyOf.get(el);
    if (!copy || !copy.style) continue;
    for (const declaration of text.split(";")) {
      const colon = declaration.indexOf(":");
      if (colon < 0) continue;
      copy.style.setProperty(declaration.slice(0, colon).trim(), declaration.slice(colon + 1).trim());
    }
  }
  svg.classList.add("inline-svg");
  return svg;
}

/**
 * An accessible table: `columns` [{key, label, numeric?, render?(row)}], `rows` objects.
 * `sortable` puts a button in each header that sorts by that column (aria-sort says how).
 */
export function table(columns, rows, { sortable = false, caption, empty = "Nothing here yet.", testid } = {}) {
  const tbody = h("tbody");
  const order = { key: null, dir: 1 };
  const heads = [];
  const fill = () => {
    tbody.replaceChildren();
    let list = rows.slice();
    if (order.key !== null) {
      const col = columns.find((c) => c.key === order.key);
      list.sort((a, b) => {
        const x = a[col.key];
        const y = b[col.key];
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        const cmp = col.numeric ? Number(x) - Number(y) : String(x).localeCompare(String(y));
        return cmp * order.dir;
      });
    }
    if (!list.length) {
      tbody.appendChild(h("tr", null, h("td", { colspan: columns.length, class: "empty" }, empty)));
    }
    for (const row of list) {
      tbody.appendChild(
        h("tr", null, columns.map((c) => h("td", { class: c.numeric ? "num" : null }, c.render ? c.render(row) : fmt(row[c.key])))),
      );
    }
  };
  const thead = h(
    "thead",
    null,
    h(
      "tr",
      null,
      columns.map((c) => {
        const th = h("th", { scope: "col", class: c.numeric ? "num" : null });
        if (sortable && c.sortable !== false) {
          th.setAttribute("aria-sort", "none");
          heads.push(th); // only sortable columns say how they are sorted
          th.appendChild(
            h("button", {
              type: "button",
              class: "sort",
              on: {
                click: () => {
                  order.dir = order.key === c.key ? -order.dir : 1;
                  order.key = c.key;
                  for (const other of heads) other.setAttribute("aria-sort", "none");
                  th.setAttribute("aria-sort", order.dir === 1 ? "ascending" : "descending");
                  fill();
                },
              },
            }, c.label),
          );
        } else {
          th.textContent = c.label;
        }
        return th;
      }),
    ),
  );
  fill();
  const element = h("table", { class: "table", "data-testid": testid }, caption ? h("caption", null, caption) : null, thead, tbody);
  /** New rows (a poll's answer): the chosen sort stays, and so does the keyboard focus on a
   * control in a row (found again by its accessible name). */
  element.setRows = (next) => {
    const active = document.activeElement;
    const nameOf = (el) => el.getAttribute("aria-label") || el.textContent;
    const focused = active && tbody.contains(active) ? nameOf(active) : null;
    rows = next;
    fill();
    if (focused !== null) {
      const again = Array.from(tbody.querySelectorAll("a, button, input, select, textarea")).find((el) => nameOf(el) === focused);
      if (again) again.focus();
    }
  };
  return element;
}

function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(3);
  return String(value);
}

/** Call `fn` now and every `ms` after it finishes, until it returns true or `signal` aborts;
 * resolves then (rejects with what `fn` threw). */
export function poll(fn, ms, signal) {
  return new Promise((resolve, reject) => {
    let timer = null;
    const stop = () => {
      clearTimeout(timer);
      resolve(false);
    };
    if (signal) {
      if (signal.aborted) return resolve(false);
      signal.addEventListener("abort", stop, { once: true });
    }
    const tick = async () => {
      if (signal && signal.aborted) return;
      try {
        if (await fn()) {
          if (signal) signal.removeEventListener("abort", stop);
          return resolve(true);
        }
      } catch (e) {
        if (signal) signal.removeEventListener("abort", stop);
        return reject(e);
      }
      if (!signal || !signal.aborted) timer = setTimeout(tick, ms);
    };
    tick();
  });
}

/** A button that copies `text` to the clipboard and says so. */
export function copyButton(text, label = "Copy") {
  return h(
    "button",
    {
      type: "button",
      class: "btn btn-small",
      "data-copy": text,
      "data-testid": "copy",
      on: {
        click: async () => {
          try {
            await navigator.clipboard.writeText(text);
            toast("Copied to the clipboard.", "success");
          } catch (e) {
            const area = h("textarea", { class: "visually-hidden", "aria-hidden": "true" }, text);
            document.body.appendChild(area);
            area.select();
            const done = document.execCommand("copy");
            area.remove();
            toast(done ? "Copied to the clipboard." : "Copying was refused by the browser: select the text and copy it.", done ? "success" : "error");
          }
        },
      },
    },
    label,
  );
}

/** Code (curl, Python…) in a `<pre>`, with a copy button. */
export function codeBlock(text, lang = "") {
  return h(
    "div",
    { class: "code-block", "data-lang": lang || null },
    h("div", { class: "code-head" }, h("span", { class: "code-lang" }, lang), copyButton(text, "Copy")),
    h("pre", null, h("code", { class: lang ? `lang-${lang}` : null }, text)),
  );
}

let fieldCount = 0;

/**
 * A labelled form control in a `.field` wrapper (the control is `wrapper.control`):
 * type text/number/password/email/file/textarea/select/checkbox; `options` for select
 * ([value] or [{value, label}]); `help` is linked by aria-describedby. Other keys
 * (min, max, step, placeholder, accept, autocomplete…) become attributes.
 */
export function field({ label, name, type = "text", value, help, required, options, id, ...rest } = {}) {
  const controlId = id || `f-${name || "field"}-${++fieldCount}`;
  const helpId = help ? `${controlId}-help` : null;
  const common = { id: controlId, name, required: required || null, "aria-describedby": helpId, ...rest };
  let control;
  if (type === "select") {
    control = h(
      "select",
      common,
      (options || []).map((o) => {
        const opt = typeof o === "object" ? o : { value: o, label: String(o) };
        return h("option", { value: String(opt.value), selected: String(opt.value) === String(value) }, opt.label ?? String(opt.value));
      }),
    );
  } else if (type === "textarea") {
    control = h("textarea", common);
    if (value !== undefined && value !== null) control.value = String(value);
  } else if (type === "checkbox") {
    control = h("input", { ...common, type: "checkbox", checked: Boolean(value) });
  } else {
    control = h("input", { ...common, type });
    if (value !== undefined && value !== null && type !== "file") control.value = String(value);
  }
  const labelEl = h("label", { for: controlId }, label, required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null);
  const wrapper =
    type === "checkbox"
      ? h("div", { class: "field field-check" }, control, labelEl, help ? h("p", { class: "help", id: helpId }, help) : null)
      : h("div", { class: "field" }, labelEl, control, help ? h("p", { class: "help", id: helpId }, help) : null);
  wrapper.control = control;
  return wrapper;
}

/** A labelled progress bar; `bar.set(fraction, text?)` updates it. */
export function progressBar(label, fraction = 0) {
  const progress = h("progress", { max: "1", value: String(fraction), "aria-label": label });
  const text = h("span", { class: "progress-text", "aria-hidden": "true" }, `${Math.round(fraction * 100)} %`);
  const wrapper = h("div", { class: "progress", "data-testid": "progress" }, progress, text);
  wrapper.set = (f, words) => {
    progress.value = f;
    text.textContent = words || `${Math.round(f * 100)} %`;
  };
  wrapper.progress = progress;
  return wrapper;
}

/** Ask before something that cannot be undone, in a modal `<dialog>`; resolves true or false. */
export function confirmAction(message, { confirm = "Confirm", danger = true } = {}) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm", "data-testid": "confirm-dialog", "aria-label": "Confirm" },
      h("p", null, message),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "btn", "data-testid": "confirm-cancel", on: { click: () => dialog.close("cancel") } }, "Cancel"),
        h("button", { type: "button", class: ["btn", danger ? "btn-danger" : "btn-primary"], "data-testid": "confirm-ok", on: { click: () => dialog.close("ok") } }, confirm),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "ok");
    });
    document.body.appendChild(dialog);
    dialog.showModal();
  });
}

/** A status word as a badge (queued, running, succeeded, failed, ready…). */
export function badge(status) {
  return h("span", { class: ["badge", `badge-${String(status).replace(/[^a-z_-]/gi, "")}`], "data-testid": "status" }, status);
}

/** A share in [0, 1] as a percentage ("91.3%", `digits` after the point); "—" for none. */
export function percent(value, digits = 1) {
  return value === null || value === undefined || Number.isNaN(Number(value)) ? "—" : `${(Number(value) * 100).toFixed(digits)}%`;
}

/** A date (ISO string) in the reader's locale. */
export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** The page's heading (`h1`), focused after navigation. */
export function heading(text, ...extra) {
  return h("h1", { class: "page-title", tabindex: "-1" }, text, ...extra);
}

// --- routing ------------------------------------------------------------------------------

/**
 * Add a page: `path` under /studio ("/datasets/:id"), `title`, `nav` (a label: shown in the
 * navigation), `roles` (who sees it in the navigation; the API still decides what each may
 * do), `render(main, params, query, {signal})` (signal aborts when the user leaves the page).
 */
export function register(route) {
  const parts = route.path.split("/").filter(Boolean);
  routes.push({ ...route, parts, params: parts.filter((p) => p.startsWith(":")).length });
  routes.sort((a, b) => a.params - b.params);
  if (state.me) renderHeader();
}

function studioUrl(href) {
  if (href.startsWith(BASE + "/") || href === BASE || /^https?:/.test(href)) return href;
  return BASE + (href.startsWith("/") ? href : "/" + href);
}

/** Go to a Studio URL ("/datasets/x" or "/studio/datasets/x") without reloading. */
export function navigate(url, { replace = false } = {}) {
  const target = studioUrl(url);
  if (replace) history.replaceState(null, "", target);
  else history.pushState(null, "", target);
  return route();
}

function match(path) {
  const parts = path.split("/").filter(Boolean);
  for (const r of routes) {
    if (r.parts.length !== parts.length) continue;
    const params = {};
    let ok = true;
    r.parts.forEach((p, i) => {
      if (p.startsWith(":")) params[p.slice(1)] = decodeURIComponent(parts[i]);
      else if (p !== parts[i]) ok = false;
    });
    if (ok) return { route: r, params };
  }
  return null;
}

function here() {
  let path = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : location.pathname;
  if (!path || path === "/") path = "/";
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

async function route() {
  if (currentPage) currentPage.controller.abort();
  const controller = new AbortController();
  currentPage = { controller, url: location.pathname + location.search };
  const path = here();
  const query = Object.fromEntries(new URLSearchParams(location.search));
  const main = document.getElementById("main");
  const page = h("div", { class: "page", "data-testid": "page" });
  main.replaceChildren(page);
  renderHeader();
  const found = match(path);
  if (path === "/") return navigate(state.me ? "/datasets" : "/login", { replace: true });
  if (!found) return finish(page, "Not found", () => notFound(page, `There is no page at ${location.pathname}.`));
  const { route: r, params } = found;
  if (!r.public && !state.me) {
    if (bootError) return finish(page, "Parley Studio", () => page.append(heading("Parley Studio"), errorBox(bootError)));
    return navigate(`/login?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
  }
  if (!r.public && !STUDIO_ROLES.includes(state.me.user.role)) return finish(page, "Agents' console", () => agentsOnly(page));
  return finish(page, r.title, () => r.render(page, params, query, { signal: controller.signal }), controller);
}

async function finish(page, title, render, controller) {
  document.title = `${title} · Parley Studio`;
  try {
    await render();
  } catch (err) {
    if (controller && controller.signal.aborted) return;
    if (err instanceof ApiError && err.status === 401 && !location.pathname.startsWith(BASE + "/login")) {
      state.me = null;
      return navigate(`/login?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
    }
    page.replaceChildren();
    if (err instanceof ApiError && err.status === 404) notFound(page, err.message);
    else if (err instanceof ApiError && err.status === 403) forbidden(page, err);
    else {
      console.error(err);
      page.append(heading("Something went wrong"), errorBox(err));
    }
  }
  if (controller && controller.signal.aborted) return;
  const h1 = page.querySelector("h1");
  if (h1) {
    h1.setAttribute("tabindex", "-1");
    h1.focus({ preventScroll: false });
  }
}

function notFound(page, message) {
  document.title = "Not found · Parley Studio";
  page.setAttribute("data-state", "not-found");
  page.append(
    heading("Not found"),
    h("p", { "data-testid": "not-found" }, message),
    h("p", null, "It may have been deleted, or it belongs to another tenant. ", link("/datasets", "Back to your datasets")),
  );
}

function forbidden(page, err) {
  document.title = "Not allowed · Parley Studio";
  page.setAttribute("data-state", "forbidden");
  page.append(
    heading("Not allowed"),
    h("p", { "data-testid": "forbidden" }, err.message),
    h("p", null, "Ask an admin of your tenant if you need this. ", link("/datasets", "Back to your datasets")),
  );
}

function agentsOnly(page) {
  const role = state.me.user.role;
  page.append(
    heading("The agents' console is your place"),
    h(
      "p",
      { "data-testid": "agents-only" },
      `You are signed in as ${role === "supervisor" ? "a supervisor" : "an agent"}; agents and supervisors work with conversations in the agents' console. `,
      h("a", { href: "/console/agents", "data-testid": "agents-console-link" }, "Open the agents' console"),
      ".",
    ),
    h("p", null, "The Studio (datasets, models, bots) is for builders and admins; an admin of your tenant can change your role."),
  );
}

// --- header -------------------------------------------------------------------------------

function renderHeader() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("whoami");
  const out = document.getElementById("sign-out");
  if (!state.me) {
    nav.hidden = true;
    who.hidden = true;
    out.hidden = true;
    return;
  }
  const { user } = state.me;
  who.hidden = false;
  who.replaceChildren(
    h("span", { class: "who-name", "data-testid": "who-name" }, user.name || user.username),
    h("span", { class: "who-role", "data-testid": "who-role" }, user.role),
    h("span", { class: "who-tenant" }, user.tenant_name || ""),
  );
  out.hidden = false;
  const items = routes
    .filter((r) => r.nav && (!r.roles || r.roles.includes(user.role)) && STUDIO_ROLES.includes(user.role))
    .sort((a, b) => orderOf(a.nav) - orderOf(b.nav));
  const path = here();
  nav.hidden = items.length === 0;
  nav.replaceChildren(
    h(
      "ul",
      null,
      items.map((r) => {
        const top = "/" + r.parts[0];
        const current = path === top || path.startsWith(top + "/");
        return h("li", null, link(r.path, r.nav, { "aria-current": current ? "page" : null, "data-testid": `nav-${r.parts[0]}` }));
      }),
    ),
  );
}

function orderOf(label) {
  const i = NAV_ORDER.indexOf(label);
  return i < 0 ? NAV_ORDER.length : i;
}

async function signOut() {
  try {
    await api("POST", "/auth/logout");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      toast(`Signing out failed: ${err.message}`, "error");
      return;
    }
  }
  state.me = null;
  navigate("/login");
}

// --- sign-in and invites --------------------------------------------------------------------

function loginPage(page, params, query) {
  if (state.me) return navigate(safeNext(query.next), { replace: true });
  const tenant = field({ label: "Tenant", name: "tenant", required: true, autocomplete: "organization", value: query.tenant || localStorage.getItem("parley.tenant") || "", "data-testid": "login-tenant" });
  const username = field({ label: "Username", name: "username", required: true, autocomplete: "username", "data-testid": "login-username" });
  const password = field({ label: "Password", name: "password", type: "password", required: true, autocomplete: "current-password", "data-testid": "login-password" });
  const error = h("div", { class: "form-error", "data-testid": "login-error", "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "login-submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "card login-card",
      "data-testid": "login-form",
      novalidate: true,
      on: {
        submit: async (event) => {
          event.preventDefault();
          error.replaceChildren();
          const body = { tenant: tenant.control.value.trim(), username: username.control.value.trim(), password: password.control.value };
          if (!body.tenant || !body.username || !body.password) {
            error.append(errorBox({ message: "Enter your tenant, username and password." }));
            return;
          }
          submit.disabled = true;
          try {
            state.me = await api("POST", "/auth/login", { json: body });
            localStorage.setItem("parley.tenant", body.tenant);
            navigate(safeNext(query.next), { replace: true });
          } catch (err) {
            error.append(errorBox(err)); // 401: wrong tenant, username or password; 429: locked for a while
            password.control.value = "";
            password.control.focus();
          } finally {
            submit.disabled = false;
          }
        },
      },
    },
    heading("Sign in to Parley Studio"),
    h("p", { class: "hint" }, "Use the account an admin of your tenant created or invited you to."),
    tenant,
    username,
    password,
    error,
    submit,
  );
  page.append(h("div", { class: "login-screen" }, form));
}

function safeNext(next) {
  return next && next.startsWith(BASE + "/") && !next.startsWith(BASE + "/login") ? next : "/datasets";
}

function acceptInvitePage(page, params, query) {
  const token = query.token || "";
  if (!token) {
    page.append(heading("Accept an invite"), errorBox({ message: "This link has no invite token: open the whole link you were sent, or ask your admin for a new invite." }));
    return;
  }
  const name = field({ label: "Your name", name: "name", autocomplete: "name", help: "Shown to your team; leave empty to keep the name on the invite.", "data-testid": "invite-name" });
  const password = field({ label: "Choose a password", name: "password", type: "password", required: true, autocomplete: "new-password", minlength: "8", "data-testid": "invite-password" });
  const again = field({ label: "The password again", name: "password2", type: "password", required: true, autocomplete: "new-password", "data-testid": "invite-password2" });
  const error = h("div", { class: "form-error", "data-testid": "invite-error", "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "invite-submit" }, "Set password and sign in");
  const form = h(
    "form",
    {
      class: "card login-card",
      novalidate: true,
      "data-testid": "invite-form",
      on: {
        submit: async (event) => {
          event.preventDefault();
          error.replaceChildren();
          if (!password.control.value || password.control.value !== again.control.value) {
            error.append(errorBox({ message: "The two passwords differ (or are empty): type the same password twice." }));
            return;
          }
          submit.disabled = true;
          try {
            const body = { token, password: password.control.value };
            if (name.control.value.trim()) body.name = name.control.value.trim();
            state.me = await api("POST", "/auth/accept-invite", { json: body });
            toast(`Welcome, ${state.me.user.name || state.me.user.username}.`, "success");
            navigate("/", { replace: true });
          } catch (err) {
            error.append(errorBox(err));
          } finally {
            submit.disabled = false;
          }
        },
      },
    },
    heading("Accept your invite"),
    h("p", { class: "hint" }, "Choose a password to finish setting up your account."),
    name,
    password,
    again,
    error,
    submit,
  );
  page.append(h("div", { class: "login-screen" }, form));
}

register({ path: "/login", title: "Sign in", public: true, render: loginPage });
register({ path: "/accept-invite", title: "Accept an invite", public: true, render: acceptInvitePage });

// --- start --------------------------------------------------------------------------------

async function loadMe() {
  try {
    state.me = await api("GET", "/auth/me");
  } catch (err) {
    state.me = null;
    if (!(err instanceof ApiError && err.status === 401)) bootError = err;
  }
}

async function loadPages() {
  await Promise.all(
    PAGES.map((name) =>
      import(`./pages/${name}.js`).catch((err) => {
        console.warn(`Parley Studio: the ${name} page did not load (${err.message}).`);
      }),
    ),
  );
}

async function start() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  // a #fragment (the skip link, an in-page link) changes no page: the page stays as it is
  window.addEventListener("popstate", () => {
    if (currentPage && currentPage.url === location.pathname + location.search) return;
    route();
  });
  await Promise.all([loadMe(), loadPages()]);
  document.body.dataset.ready = "true";
  await route();
}

start();

/**
 * Parley Studio: bots. The list (create one from YAML or JSON), and a bot's page: its
 * definition in an editor with line numbers (validation errors listed at their paths, the
 * line highlighted), a picture of its flows (steps and branches as nested boxes), its
 * versions with a diff between two, a test chat (the real web chat widget, inline) and story
 * tests run against it. Every call is an ordinary /v1 route.
 *
 * Exports `botPicker`, the bot select the channels, analytics and improve pages share.
 */
import { api, badge, codeBlock, errorBox, h, heading, link, navigate, poll, register, table, toast, when } from "../studio.js";

const STYLE = new URL("./bots.css", import.meta.url).href;

/** The page's stylesheet (a <link>: the CSP allows no inline styles). */
export function pageStyle(href = STYLE) {
  return h("link", { rel: "stylesheet", href });
}

// ------------------------------------------------------------------ shared: pick a bot

/**
 * A labelled select of the tenant's bots. `onPick(botId)` runs when the choice changes;
 * `allowAll` adds an "All bots" choice (value ""). Resolves to {element, bots, selected}.
 */
export async function botPicker({ selected = "", onPick, allowAll = false, id = "bot-picker" }) {
  const bots = await api("GET", "/v1/bots");
  const select = h("select", { id, name: "bot", "data-testid": "bot-picker" });
  if (allowAll) select.append(h("option", { value: "" }, "All bots"));
  else if (!selected) select.append(h("option", { value: "" }, "Choose a bot…"));
  for (const bot of bots) select.append(h("option", { value: bot.id }, `${bot.name} (${bot.id})`));
  select.value = bots.some((b) => b.id === selected) ? selected : "";
  select.addEventListener("change", () => onPick(select.value));
  const element = h("div", { class: "bot-picker" }, h("label", { for: id }, "Bot"), select);
  if (!bots.length) {
    element.append(
      h("p", { class: "hint" }, "This tenant has no bots yet. ", link("/studio/bots", "Create one"), ".")
    );
  }
  return { element, bots, selected: select.value };
}

/** A table that scrolls sideways inside its panel on a narrow screen. */
export function scrolling(tableElement) {
  return h("div", { class: "table-scroll" }, tableElement);
}

// ------------------------------------------------------------------ YAML for the editor

const PLAIN = /^[A-Za-z_/][\w .,/'?!()@+-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|null|y|n|~)$/i;

function yamlScalar(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "boolean" || typeof value === "number") return String(value);
  const text = String(value);
  if (text && PLAIN.test(text) && !RESERVED.test(text) && text.trim() === text && !/[:#]/.test(text)) {
    return text;
  }
  return JSON.stringify(text); // a double-quoted YAML string
}

function isContainer(value) {
  return value !== null && typeof value === "object" && Object.keys(value).length > 0;
}

function yamlInline(value) {
  if (Array.isArray(value)) return "[]";
  if (value !== null && typeof value === "object") return "{}";
  return yamlScalar(value);
}

function yamlLines(value, indent) {
  const pad = " ".repeat(indent);
  const out = [];
  if (Array.isArray(value)) {
    for (const item of value) {
      if (isContainer(item)) {
        const inner = yamlLines(item, indent + 2);
        out.push(`${pad}- ${inner[0].trimStart()}`, ...inner.slice(1));
      } else {
        out.push(`${pad}- ${yamlInline(item)}`);
      }
    }
    return out;
  }
  for (const [key, item] of Object.entries(value)) {
    if (isContainer(item)) {
      out.push(`${pad}${yamlScalar(key)}:`);
      out.push(...yamlLines(item, Array.isArray(item) ? indent : indent + 2));
    } else {
      out.push(`${pad}${yamlScalar(key)}: ${yamlInline(item)}`);
    }
  }
  return out;
}

/** A definition as block YAML, in the layout the server's diff uses (lists under their key). */
export function toYaml(definition) {
  return `${yamlLines(definition, 0).join("\n")}\n`;
}

// ------------------------------------------------------------------ path -> line

function pathTokens(path) {
  const tokens = [];
  for (const part of path.split(".")) {
    const m = part.match(/^([^[]*)((?:\[\d+\])*)$/);
    if (!m) return null;
    if (m[1]) tokens.push(m[1]);
    for (const index of m[2].matchAll(/\[(\d+)\]/g)) tokens.push(Number(index[1]));
  }
  return tokens;
}

function isContent(line) {
  const trimmed = line.trim();
  return trimmed !== "" && !trimmed.startsWith("#");
}

function rawIndent(line) {
  return line.length - line.trimStart().length;
}

/** The column where a line's mapping key starts ("  - ask: x" -> 4). */
function keyIndent(line) {
  const m = line.match(/^(\s*)((?:-\s+)*)/);
  return m[1].length + m[2].length;
}

function keyOf(line) {
  const rest = line.trimStart().replace(/^(-\s+)*/, "");
  const m = rest.match(/^("([^"\\]*)"|'([^']*)'|([^:#{[\]]+?))\s*:(\s|$)/);
  if (!m) return null;
  return m[2] ?? m[3] ?? m[4];
}

/**
 * The 1-based line of a problem's `path` (e.g. `flows.order.steps[2].if`) in block YAML text,
 * or of the nearest enclosing part found; null when nothing of it is found. A YAML syntax
 * problem names its line in the message ("line 3, column 5: ...").
 */
export function lineOf(text, path, message = "") {
  const syntax = message.match(/\bline (\d+)/) || path.match(/\bline (\d+)/);
  if (syntax) return Number(syntax[1]);
  const tokens = path === "(top)" ? [] : pathTokens(path);
  if (!tokens || !tokens.length) return null;
  const lines = text.split("\n");
  let start = 0;
  let end = lines.length;
  let found = null;
  for (const token of tokens) {
    let first = start;
    while (first < end && !isContent(lines[first])) first += 1;
    if (first >= end) break;
    if (typeof token === "number") {
      const dash = rawIndent(lines[first]);
      const items = [];
      for (let i = first; i < end; i += 1) {
        if (isContent(lines[i]) && rawIndent(lines[i]) === dash && /^\s*-(\s|$)/.test(lines[i])) items.push(i);
        else if (isContent(lines[i]) && rawIndent(lines[i]) < dash) break;
      }
      if (token >= items.length) break;
      found = items[token];
      start = items[token];
      end = token + 1 < items.length ? items[token + 1] : end;
      continue;
    }
    const indent = keyIndent(lines[first]);
    let at = -1;
    for (let i = first; i < end; i += 1) {
      if (isContent(lines[i]) && keyIndent(lines[i]) === indent && keyOf(lines[i]) === token) {
        at = i;
        break;
      }
    }
    if (at < 0) break;
    found = at;
    let stop = at + 1;
    while (stop < end) {
      const line = lines[stop];
      const deeper = rawIndent(line) > indent;
      const listUnderKey = rawIndent(line) === indent && /^\s*-(\s|$)/.test(line);
      if (isContent(line) && !deeper && !listUnderKey) break;
      stop += 1;
    }
    start = at + 1;
    end = stop;
  }
  return found === null ? null : found + 1;
}

// ------------------------------------------------------------------ the editor

/** A <textarea> with a line-number gutter; `mark(lines)` flags lines, `goTo(line)` selects one. */
function codeEditor({ id, label, text }) {
  const gutter = h("div", { class: "gutter", "aria-hidden": "true", "data-testid": "gutter" });
  const area = h("textarea", {
    id,
    class: "code",
    spellcheck: "false",
    wrap: "off",
    autocapitalize: "off",
    autocomplete: "off",
    "data-testid": "definition",
  });
  area.value = text;
  let count = 0;
  let marked = new Set();
  function renumber() {
    const lines = area.value.split("\n").length;
    if (lines !== count) {
      gutter.replaceChildren(
        ...Array.from({ length: lines }, (_, i) =>
          h("span", { class: marked.has(i + 1) ? "ln error" : "ln", "data-line": String(i + 1) }, String(i + 1))
        )
      );
      count = lines;
    }
    gutter.scrollTop = area.scrollTop;
  }
  area.addEventListener("input", renumber);
  area.addEventListener("scroll", () => {
    gutter.scrollTop = area.scrollTop;
  });
  let escaped = false; // Escape, then Tab, leaves the editor (keyboard users are not trapped)
  area.addEventListener("keydown", (event) => {
    const plainTab = event.key === "Tab" && !event.shiftKey && !event.ctrlKey && !event.altKey && !event.metaKey;
    if (plainTab && !escaped) {
      event.preventDefault(); // two spaces: YAML has no tabs
      area.setRangeText("  ", area.selectionStart, area.selectionEnd, "end");
      renumber();
    }
    escaped = event.key === "Escape";
  });
  renumber();
  return {
    element: h(
      "div",
      { class: "editor-field" },
      h("label", { for: id }, label),
      h("p", { class: "hint", id: `${id}-hint` }, "YAML or JSON. Tab indents; press Escape, then Tab, to leave the editor."),
      h("div", { class: "editor" }, gutter, area)
    ),
    area,
    get text() {
      return area.value;
    },
    set text(value) {
      area.value = value;
      count = 0;
      renumber();
    },
    mark(lines) {
      marked = new Set(lines);
      for (const span of gutter.children) {
        span.classList.toggle("error", marked.has(Number(span.dataset.line)));
      }
    },
    goTo(line) {
      const lines = area.value.split("\n");
      const from = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
      area.focus();
      area.setSelectionRange(from, from + (lines[line - 1] || "").length);
      const height = parseFloat(getComputedStyle(area).lineHeight) || 20;
      area.scrollTop = Math.max(0, (line - 4) * height);
      gutter.scrollTop = area.scrollTop;
    },
  };
}

/** Problems of an API answer: validate's `errors`, or a 422's `details` (path or field). */
function problemsOf(source) {
  const list = source.errors || source.details || [];
  return list.map((p) =>
    typeof p === "string"
      ? { path: p.split(": ")[0], message: p.split(": ").slice(1).join(": ") }
      : { path: p.path || p.field || "(top)", message: p.message || "" }
  );
}

function problemList(editor, problems) {
  const lines = [];
  const items = problems.map((p) => {
    const line = lineOf(editor.text, p.path, p.message);
    if (line) lines.push(line);
    const where = line
      ? h("button", { type: "button", class: "linklike path", on: { click: () => editor.goTo(line) } }, p.path)
      : h("code", { class: "path" }, p.path);
    return h(
      "li",
      { "data-path": p.path, "data-line": line ? String(line) : "" },
      where,
      ": ",
      p.message,
      line ? h("span", { class: "at-line" }, ` (line ${line})`) : ""
    );
  });
  editor.mark(lines);
  return h("ol", { class: "problems", "data-testid": "problems" }, ...items);
}

// ------------------------------------------------------------------ the flows, drawn

function caseText(c) {
  const tests = [];
  if ("equals" in c && c.equals !== undefined && c.equals !== null) tests.push(`= ${JSON.stringify(c.equals)}`);
  if (c.in) tests.push(`in ${JSON.stringify(c.in)}`);
  if (c.is_set) tests.push("is set");
  if (c.not_set) tests.push("is not set");
  if (c.above !== undefined && c.above !== null) tests.push(`> ${c.above}`);
  if (c.below !== undefined && c.below !== null) tests.push(`< ${c.below}`);
  return `if ${c.slot} ${tests.join(" and ") || "(any)"}`;
}

function stepBox(step) {
  const kind = ["ask", "reply", "action", "set", "if", "link", "handoff", "end"].find((k) => k in step) || "step";
  const box = h("li", { class: `step step-${kind}`, "data-kind": kind });
  const badge = h("span", { class: "kind" }, kind);
  if (kind === "if") {
    box.append(badge);
    const branches = h("ul", { class: "branches" });
    for (const c of step.if) {
      branches.append(h("li", { class: "branch" }, h("span", { class: "cond" }, caseText(c)), stepList(c.then || [])));
    }
    branches.append(h("li", { class: "branch branch-else" }, h("span", { class: "cond" }, "else"), stepList(step.else || [])));
    box.append(branches);
    return box;
  }
  let detail;
  const value = step[kind];
  if (kind === "ask") {
    const extra = [step.validate ? "validated" : "", step.on_fail ? `on fail: ${step.on_fail}` : ""].filter(Boolean);
    detail = `slot ${value}${extra.length ? ` (${extra.join(", ")})` : ""}`;
  } else if (kind === "reply") {
    detail = typeof value === "string" ? value : `“${value.text || "(rich reply)"}”`;
  } else if (kind === "set") {
    detail = Object.entries(value).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join(", ");
  } else if (kind === "link") {
    // a button, not a #fragment link: the Studio's router owns the URL
    detail = h("button", { type: "button", class: "linklike", on: { click: () => showFlow(value) } }, `→ ${value}`);
  } else if (value === true) {
    detail = kind === "end" ? "end of flow" : "to a person";
  } else {
    detail = String(value);
  }
  box.append(badge, " ", detail);
  return box;
}

function showFlow(name) {
  const box = document.getElementById(`flow-${name}`);
  if (!box) return;
  box.setAttribute("tabindex", "-1");
  box.scrollIntoView({ block: "nearest" });
  box.focus();
}

function stepList(steps) {
  if (!steps.length) return h("p", { class: "empty" }, "(no steps)");
  return h("ol", { class: "steps" }, ...steps.map(stepBox));
}

/** The bot's flows as nested boxes: each flow, what starts it, its steps and branches. */
export function flowPicture(definition) {
  const flows = Object.entries(definition.flows || {});
  const wrap = h("div", { class: "flows", "data-testid": "flows" });
  if (!flows.length) {
    wrap.append(h("p", { class: "empty" }, "This bot has no flows: it answers with its stories, fallback and handoff only."));
  }
  for (const [name, flow] of flows) {
    const starts = (flow.intents || []).length ? `starts on ${flow.intents.join(", ")}` : "started by a link";
    wrap.append(
      h(
        "section",
        { class: "flow", id: `flow-${name}`, "aria-label": `flow ${name}` },
        h("h3", {}, name, h("span", { class: "starts" }, ` — ${starts}`)),
        flow.description ? h("p", { class: "hint" }, flow.description) : "",
        stepList(flow.steps || [])
      )
    );
  }
  const fallback = definition.fallback || {};
  const handoff = definition.handoff || {};
  wrap.append(
    h(
      "p",
      { class: "hint" },
      `Below the NLU threshold (${(definition.nlu && definition.nlu.threshold) ?? 0.4}) a message is a fallback; `,
      fallback.handoff === false ? "fallbacks never hand off. " : `after ${fallback.handoff_after ?? 2} in a row it hands off. `,
      (handoff.intents || []).length ? `Handoff intents: ${handoff.intents.join(", ")}.` : ""
    )
  );
  return wrap;
}

// ------------------------------------------------------------------ the test chat (the widget)

const CHAT_AFTER_RELOAD = "parley-studio:test-chat";
let widget = null; // {bot, host}: the widget script runs once per page, for one bot

function inlineWidget(host, slot) {
  const root = host.shadowRoot;
  if (root && !host.dataset.inline) {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(
      ".window{position:relative;right:auto;bottom:auto;z-index:auto;width:100%;height:460px;" +
        "max-height:none;box-shadow:none;border:1px solid #c9d1de}.launcher{display:none}"
    );
    root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
    host.dataset.inline = "1";
  }
  slot.replaceChildren(host);
}

function startWidget(bot, slot) {
  if (widget && widget.bot !== bot.id) {
    // widget.js serves one bot per page: reload and open this bot's chat
    sessionStorage.setItem(CHAT_AFTER_RELOAD, bot.id);
    location.reload();
    return;
  }
  if (widget) {
    inlineWidget(widget.host, slot);
    window.Parley.open();
    return;
  }
  const script = h("script", {
    src: "/widget.js",
    "data-bot": bot.id,
    "data-key": bot.widget_key,
    "data-server": location.origin,
    "data-title": `Test: ${bot.name}`,
    "data-greeting": "This is the bot as your customers see it. Say something.",
  });
  script.addEventListener("load", () => {
    const host = document.getElementById("parley-widget");
    if (!host || !window.Parley) {
      slot.replaceChildren(h("p", { class: "error" }, "The web chat widget did not start; see the browser console."));
      return;
    }
    widget = { bot: bot.id, host };
    inlineWidget(host, slot);
    window.Parley.open();
  });
  document.head.append(script);
}

function forgetChat(bot) {
  for (const key of ["session", "session_token", "open"]) {
    localStorage.removeItem(`parley:${bot.id}:${key}`);
    sessionStorage.removeItem(`parley:${bot.id}:${key}`);
  }
  sessionStorage.setItem(CHAT_AFTER_RELOAD, bot.id);
  location.reload();
}

function testChat(bot, reload) {
  const origin = location.origin;
  const slot = h("div", { class: "chat-slot", "data-testid": "test-chat" });
  const section = h("section", { class: "panel", "aria-labelledby": "test-chat-h" }, h("h2", { id: "test-chat-h" }, "Test chat"));
  const allowed = (bot.allowed_origins || []).some((o) => o === "*" || o.replace(/\/$/, "") === origin);
  if (!allowed) {
    const allow = h("button", { type: "button", class: "btn" }, `Allow ${origin}`);
    allow.addEventListener("click", async () => {
      allow.disabled = true;
      try {
        const definition = { ...bot.definition, allowed_origins: [...(bot.allowed_origins || []), origin] };
        await api("PUT", `/v1/bots/${bot.id}`, { json: definition });
        toast(`Version saved: ${origin} may now use the widget`, "success");
        sessionStorage.setItem(CHAT_AFTER_RELOAD, bot.id);
        reload();
      } catch (err) {
        allow.disabled = false;
        section.append(errorBox(err));
      }
    });
    section.append(
      h(
        "p",
        {},
        "The test chat is the real web chat widget, and a widget may only talk to a bot from the pages in its ",
        h("code", {}, "allowed_origins"),
        `. Add this Studio (${origin}) to them to chat here: this saves a new version.`
      ),
      allow
    );
    return section;
  }
  const open = h("button", { type: "button", class: "btn btn-primary", "data-testid": "open-chat" }, "Open the test chat");
  open.addEventListener("click", () => startWidget(bot, slot));
  const fresh = h("button", { type: "button", class: "btn" }, "Start a new conversation");
  fresh.addEventListener("click", () => forgetChat(bot));
  section.append(
    h("p", { class: "hint" }, "Conversations here are real web chat conversations: they count in analytics and can reach the improve inbox."),
    h("div", { class: "actions" }, open, fresh),
    slot
  );
  if (sessionStorage.getItem(CHAT_AFTER_RELOAD) === bot.id) {
    sessionStorage.removeItem(CHAT_AFTER_RELOAD);
    queueMicrotask(() => startWidget(bot, slot));
  } else if (widget && widget.bot === bot.id) {
    queueMicrotask(() => inlineWidget(widget.host, slot));
  }
  return section;
}

// ------------------------------------------------------------------ story tests

function storyTemplate(definition) {
  const flow = Object.values(definition.flows || {}).find((f) => (f.intents || []).length);
  const intent = flow ? flow.intents[0] : "greet";
  return [
    "stories:",
    `  - name: ${intent}`,
    "    steps:",
    "      - user: hello",
    `        intent: ${intent}`,
    "      # - bot: utter_greet          (a response name, exact text, or {contains: ...})",
    "",
  ].join("\n");
}

function storyTests(bot) {
  const key = `parley-studio:stories:${bot.id}`;
  const area = h("textarea", { id: "stories", class: "code code-small", spellcheck: "false", wrap: "off", "data-testid": "stories" });
  area.value = localStorage.getItem(key) || storyTemplate(bot.definition);
  const files = h("input", { type: "file", id: "story-files", multiple: true, accept: "image/*" });
  const run = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "run-stories" }, "Run the stories");
  const out = h("div", { class: "story-results", "aria-live": "polite", "data-testid": "story-results" });
  const form = h(
    "form",
    { class: "stack" },
    h("label", { for: "stories" }, "Stories (YAML)"),
    h("p", { class: "hint" }, "Each story is a fresh conversation against the bot's real NLU and actions, forgotten afterwards."),
    area,
    h("label", { for: "story-files" }, "Images the stories name (optional)"),
    files,
    h("div", { class: "actions" }, run)
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    localStorage.setItem(key, area.value);
    const body = new FormData();
    body.append("stories", new Blob([area.value], { type: "application/yaml" }), "stories.yml");
    for (const file of files.files) body.append("files", file, file.name);
    run.disabled = true;
    out.replaceChildren(h("p", { role: "status" }, "Running…"));
    try {
      const report = await api("POST", `/v1/bots/${bot.id}/test`, { form: body });
      out.replaceChildren(
        h("p", { class: report.failed ? "summary bad" : "summary good" }, `${report.passed} passed, ${report.failed} failed`),
        h(
          "ul",
          { class: "cases" },
          ...report.cases.map((c) =>
            h(
              "li",
              { class: c.passed ? "case pass" : "case fail", "data-testid": "story-case" },
              h("span", { class: "verdict" }, c.passed ? "PASS" : "FAIL"),
              " ",
              c.name || "(unnamed story)",
              c.failures.length ? h("ul", { class: "failures" }, ...c.failures.map((f) => h("li", {}, f))) : "",
              h("details", {}, h("summary", {}, "Transcript"), codeBlock(c.transcript.join("\n"), "text"))
            )
          )
        )
      );
    } catch (err) {
      out.replaceChildren(errorBox(err));
    } finally {
      run.disabled = false;
    }
  });
  return h("section", { class: "panel", "aria-labelledby": "stories-h" }, h("h2", { id: "stories-h" }, "Story tests"), form, out);
}

// ------------------------------------------------------------------ versions and diff

function diffView(text) {
  if (!text) return h("p", { class: "hint" }, "The two versions are the same.");
  const lines = text.replace(/\n$/, "").split("\n");
  return h(
    "pre",
    { class: "diff", "data-testid": "diff", tabindex: "0", "aria-label": "Differences" },
    ...lines.map((line) => {
      let cls = "ctx";
      if (line.startsWith("+++") || line.startsWith("---")) cls = "file";
      else if (line.startsWith("@@")) cls = "hunk";
      else if (line.startsWith("+")) cls = "add";
      else if (line.startsWith("-")) cls = "del";
      return h("span", { class: `diff-${cls}` }, `${line}\n`);
    })
  );
}

function versionsPanel(bot, versions, editor) {
  const numbers = versions.map((v) => v.version).sort((a, b) => a - b);
  const pick = (id, value) => {
    const select = h("select", { id, name: id });
    for (const n of numbers) select.append(h("option", { value: String(n) }, `version ${n}`));
    select.value = String(value);
    return select;
  };
  const from = pick("diff-from", numbers.length > 1 ? numbers[numbers.length - 2] : numbers[0]);
  const to = pick("diff-to", numbers[numbers.length - 1]);
  const out = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "inline-form" },
    h("label", { for: "diff-from" }, "From"),
    from,
    h("label", { for: "diff-to" }, "to"),
    to,
    h("button", { type: "submit", class: "btn", "data-testid": "show-diff" }, "Show the diff")
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const d = await api("GET", `/v1/bots/${bot.id}/diff`, { query: { from: from.value, to: to.value } });
      out.replaceChildren(diffView(d.diff));
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  });
  const rows = [...versions].sort((a, b) => b.version - a.version);
  const list = scrolling(table(
    [
      { key: "version", label: "Version", numeric: true },
      { key: "created_at", label: "Saved", render: (v) => when(v.created_at) },
      {
        key: "open",
        label: "Definition",
        render: (v) =>
          h(
            "button",
            {
              type: "button",
              class: "btn btn-small",
              on: {
                click: () => {
                  editor.text = toYaml(v.definition);
                  editor.mark([]);
                  toast(`Version ${v.version} is in the editor; Save makes it the newest version`, "info");
                  editor.area.focus();
                },
              },
            },
            `Edit version ${v.version}`
          ),
      },
    ],
    rows,
    { caption: "Versions (newest first)" }
  ));
  if (numbers.length > 1) queueMicrotask(() => form.requestSubmit()); // the latest change, at once
  return h(
    "section",
    { class: "panel", "aria-labelledby": "versions-h" },
    h("h2", { id: "versions-h" }, "Versions"),
    list,
    numbers.length > 1 ? form : h("p", { class: "hint" }, "One version so far: each save adds one."),
    out
  );
}

// ------------------------------------------------------------------ a bot's page

/** The bot's NLU model (an id or an alias: the model's page takes both). */
function modelLink(name) {
  return name ? link(`/studio/models/${encodeURIComponent(name)}`, `NLU model ${name}`) : "no NLU model yet";
}

/** The line under a bot's name: status, version, enabled, its NLU model. */
function botMeta(bot) {
  return [
    badge(bot.status),
    ` version ${bot.version} · ${bot.enabled ? "enabled" : "disabled"} · `,
    modelLink(bot.nlu_model_id),
    bot.status_message ? ` · ${bot.status_message}` : "",
  ];
}

async function botPage(main, params, _query, { signal } = {}) {
  const id = encodeURIComponent(params.id); // a "../" in the URL stays inside /v1/bots/
  const [bot, versions] = await Promise.all([api("GET", `/v1/bots/${id}`), api("GET", `/v1/bots/${id}/versions`)]);
  const reload = () => navigate(`/studio/bots/${id}`);
  const editor = codeEditor({ id: "definition", label: `Version ${bot.version}, as YAML`, text: toYaml(bot.definition) });
  const problems = h("div", { class: "problems-box", "aria-live": "polite", "data-testid": "problems-box" });

  function showProblems(list, heading) {
    if (!list.length) {
      editor.mark([]);
      problems.replaceChildren(h("p", { class: "good", "data-testid": "valid" }, heading));
      return;
    }
    problems.replaceChildren(h("p", { class: "bad", role: "alert" }, heading), problemList(editor, list));
  }

  const validate = h("button", { type: "button", class: "btn", "data-testid": "validate" }, "Validate");
  validate.addEventListener("click", async () => {
    try {
      const result = await api("POST", "/v1/bots/validate", { json: { definition: editor.text } });
      const list = problemsOf(result);
      showProblems(list, result.valid ? "The definition is valid." : `${list.length} problem(s):`);
    } catch (err) {
      problems.replaceChildren(errorBox(err));
    }
  });
  const save = h("button", { type: "button", class: "btn btn-primary", "data-testid": "save" }, "Save as a new version");
  save.addEventListener("click", async () => {
    const body = new FormData();
    body.append("file", new Blob([editor.text], { type: "application/yaml" }), "bot.yml");
    save.disabled = true;
    try {
      const saved = await api("PUT", `/v1/bots/${id}`, { form: body });
      toast(`Saved version ${saved.version}`, "success");
      reload();
    } catch (err) {
      const list = err.details ? problemsOf(err) : [];
      if (list.length) showProblems(list, `Not saved: ${list.length} problem(s):`);
      else problems.replaceChildren(errorBox(err));
    } finally {
      save.disabled = false;
    }
  });

  const enabled = h("button", { type: "button", class: "btn" }, bot.enabled ? "Disable" : "Enable");
  enabled.addEventListener("click", async () => {
    try {
      await api("PATCH", `/v1/bots/${id}`, { json: { enabled: !bot.enabled } });
      reload();
    } catch (err) {
      main.append(errorBox(err));
    }
  });

  const meta = h("p", { class: "meta", "data-testid": "bot-meta", "aria-live": "polite" }, botMeta(bot));
  if (bot.status === "training") {
    // its NLU trains: say when it is ready
    poll(
      async () => {
        const now = await api("GET", `/v1/bots/${id}`, { signal });
        meta.replaceChildren(...botMeta(now));
        return now.status !== "training";
      },
      2000,
      signal
    ).catch(() => {});
  }
  main.replaceChildren(
    pageStyle(),
    h("p", { class: "crumbs" }, link("/studio/bots", "Bots"), " / ", bot.name),
    heading(bot.name),
    meta,
    h(
      "p",
      { class: "actions" },
      enabled,
      link(`/studio/channels?bot=${id}`, "Channels", { class: "btn" }),
      link(`/studio/analytics?bot=${id}`, "Analytics", { class: "btn" }),
      link(`/studio/improve?bot=${id}`, "Improve", { class: "btn" })
    ),
    h(
      "div",
      { class: "bot-grid" },
      h(
        "section",
        { class: "panel", "aria-labelledby": "def-h" },
        h("h2", { id: "def-h" }, "Definition"),
        editor.element,
        h("div", { class: "actions" }, validate, save),
        problems
      ),
      h("section", { class: "panel", "aria-labelledby": "flows-h" }, h("h2", { id: "flows-h" }, "Flows"), flowPicture(bot.definition))
    ),
    h("div", { class: "bot-grid" }, testChat(bot, reload), storyTests(bot)),
    versionsPanel(bot, versions, editor)
  );
}

// ------------------------------------------------------------------ the list

const STARTER = `name: support
nlu:
  intents:
    greet: [hi, hello, good morning, hey there]
    track_order: [where is my order, track my parcel, has my package shipped]
    talk_to_human: [talk to a human, get me a person, agent please]
responses:
  utter_greet:
  - text: Hello! How can I help?
  utter_track:
  - text: Your order is on its way.
flows:
  greet:
    intents: [greet]
    steps:
    - reply: utter_greet
  track:
    intents: [track_order]
    steps:
    - reply: utter_track
handoff:
  intents: [talk_to_human]
`;

async function botsPage(main) {
  const bots = await api("GET", "/v1/bots");
  const editor = codeEditor({ id: "new-definition", label: "Definition of a new bot", text: STARTER });
  const problems = h("div", { class: "problems-box", "aria-live": "polite" });
  const create = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "create-bot" }, "Create the bot");
  const form = h("form", { class: "stack" }, editor.element, h("div", { class: "actions" }, create), problems);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = new FormData();
    body.append("file", new Blob([editor.text], { type: "application/yaml" }), "bot.yml");
    create.disabled = true;
    try {
      const bot = await api("POST", "/v1/bots", { form: body });
      toast(`Created ${bot.name}${bot.status === "training" ? ": its NLU is training" : ""}`, "success");
      navigate(`/studio/bots/${bot.id}`);
    } catch (err) {
      const list = err.details ? problemsOf(err) : [];
      if (list.length) {
        problems.replaceChildren(h("p", { class: "bad", role: "alert" }, `Not created: ${list.length} problem(s):`), problemList(editor, list));
      } else {
        problems.replaceChildren(errorBox(err));
      }
    } finally {
      create.disabled = false;
    }
  });
  main.replaceChildren(
    pageStyle(),
    heading("Bots"),
    bots.length
      ? scrolling(table(
          [
            { key: "name", label: "Bot", render: (b) => link(`/studio/bots/${b.id}`, b.name) },
            { key: "version", label: "Version", numeric: true },
            { key: "status", label: "Status", render: (b) => badge(b.status) },
            { key: "enabled", label: "Enabled", render: (b) => (b.enabled ? "yes" : "no") },
            {
              key: "nlu_model_id",
              label: "NLU model",
              render: (b) => modelLink(b.nlu_model_id),
            },
            { key: "updated_at", label: "Updated", render: (b) => when(b.updated_at) },
          ],
          bots,
          { sortable: true, caption: "The tenant's bots" }
        ))
      : h("p", { class: "empty" }, "No bots yet: create the first one below."),
    h("section", { class: "panel", "aria-labelledby": "new-bot-h" }, h("h2", { id: "new-bot-h" }, "Create a bot"), form)
  );
}

register({ path: "/bots", title: "Bots", nav: "Bots", roles: ["admin", "builder"], render: botsPage });
register({ path: "/bots/:id", title: "Bot", roles: ["admin", "builder"], render: botPage });

/*! Parley Studio: Try it (/studio/try?model=).
 *
 * Pick one of the tenant's models, an alias or a pre-built model; send a text (ranked intents,
 * entities highlighted in the text) or an image (labels; a detector's boxes or OCR's lines drawn
 * over the picture as positioned boxes); see the same request as curl, Python (httpx) and
 * JavaScript (fetch) with the model's id and the file's name, the API key left as
 * $PARLEY_API_KEY. It calls the public /v1 predict and OCR routes, as the snippets do.
 */
import { api, codeBlock, errorBox, h, heading, navigate, percent as pct, register } from "../studio.js";

const CSS = "/studio/static/pages/try.css";
const TEXT_TASKS = new Set(["intent", "entities"]);
const IMAGE_TASKS = new Set(["image-classification", "image-multi-label", "object-detection", "ocr"]);
const NUM_RESULTS = 5;
const OCR_MODEL = "prebuilt-ocr";
const SAMPLE_TEXT = "where is my order?";
const SAMPLE_FILE = "photo.jpg";

// --- the request, as the snippets show it ------------------------------------------------

/** The route a model is tried on: pre-built OCR has its own shortcut, /v1/ocr. */
export function predictPath(ref) {
  return ref === OCR_MODEL ? "/v1/ocr" : `/v1/models/${encodeURIComponent(ref)}/predict`;
}

function shellQuote(text) {
  return `'${String(text).replace(/'/g, "'\\''")}'`;
}

/** curl, Python (httpx) and JavaScript (fetch) for one request: ``json`` (a text model's
 * body) or ``file`` (an image's name) with extra form ``fields``. */
export function snippets({ url, json, file, fields = {} }) {
  const extra = Object.entries(fields);
  const curl = [`curl -X POST ${shellQuote(url)}`, `  -H "Authorization: Bearer $PARLEY_API_KEY"`];
  if (json) {
    curl.push(`  -H "Content-Type: application/json"`, `  -d ${shellQuote(JSON.stringify(json))}`);
  } else {
    curl.push(`  -F ${shellQuote(`file=@${file}`)}`, ...extra.map(([k, v]) => `  -F ${shellQuote(`${k}=${v}`)}`));
  }
  const py = [
    "import os",
    "",
    "import httpx",
    "",
    'headers = {"Authorization": f"Bearer {os.environ[\'PARLEY_API_KEY\']}"}',
  ];
  if (json) {
    py.push("response = httpx.post(", `    ${JSON.stringify(url)},`, "    headers=headers,", `    json=${pythonLiteral(json)},`, ")");
  } else {
    const data = extra.map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(String(v))}`).join(", ");
    py.push(
      `with open(${JSON.stringify(file)}, "rb") as f:`,
      "    response = httpx.post(",
      `        ${JSON.stringify(url)},`,
      "        headers=headers,",
      '        files={"file": f},',
      ...(extra.length ? [`        data={${data}},`] : []),
      "    )",
    );
  }
  py.push("response.raise_for_status()", "print(response.json())");
  const js = [];
  if (json) {
    js.push(
      `const response = await fetch(${JSON.stringify(url)}, {`,
      '  method: "POST",',
      "  headers: {",
      "    Authorization: `Bearer ${process.env.PARLEY_API_KEY}`,",
      '    "Content-Type": "application/json",',
      "  },",
      `  body: JSON.stringify(${JSON.stringify(json)}),`,
      "});",
    );
  } else {
    js.push(
      'import { openAsBlob } from "node:fs";',
      "",
      "const form = new FormData();",
      `form.append("file", await openAsBlob(${JSON.stringify(file)}), ${JSON.stringify(file)});`,
      ...extra.map(([k, v]) => `form.append(${JSON.stringify(k)}, ${JSON.stringify(String(v))});`),
      `const response = await fetch(${JSON.stringify(url)}, {`,
      '  method: "POST",',
      "  headers: { Authorization: `Bearer ${process.env.PARLEY_API_KEY}` },",
      "  body: form,",
      "});",
    );
  }
  js.push("console.log(await response.json());");
  return { curl: curl.join(" \\\n"), python: py.join("\n"), javascript: js.join("\n") };
}

/** A JSON object as a Python literal (JSON's strings, numbers and lists read the same). */
function pythonLiteral(value) {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) return `[${value.map(pythonLiteral).join(", ")}]`;
  if (typeof value === "object") {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pythonLiteral(v)}`).join(", ")}}`;
  }
  return JSON.stringify(value);
}

function snippetsView(request) {
  const code = snippets(request);
  const block = (title, lang, text, testid) => {
    const code = codeBlock(text, lang);
    code.querySelector("button")?.setAttribute("aria-label", `Copy the ${title} snippet`);
    return h("div", { class: "snippet", "data-testid": testid }, h("h3", null, title), code);
  };
  return h(
    "section",
    { class: "card try-snippets", "aria-labelledby": "try-snippets-title", "data-testid": "snippets" },
    h("h2", { id: "try-snippets-title" }, "The same request from your code"),
    h("p", { class: "hint" }, "Set PARLEY_API_KEY to an API key with the predict scope (an admin creates keys on the Admin page)."),
    block("curl", "shell", code.curl, "snippet-curl"),
    block("Python (httpx)", "python", code.python, "snippet-python"),
    block("JavaScript (fetch)", "javascript", code.javascript, "snippet-javascript"),
  );
}

// --- results -------------------------------------------------------------------------------

/** Ranked labels as bars: each bar's width is its probability. */
function ranked(rows, caption, testid) {
  const list = h("ol", { class: "ranked", "aria-label": caption, "data-testid": testid });
  for (const row of rows) {
    const fill = h("span", { class: "bar-fill" });
    fill.style.width = `${Math.max(0, Math.min(1, row.probability)) * 100}%`;
    list.append(
      h(
        "li",
        { class: "ranked-row", "data-label": row.label },
        h("span", { class: "ranked-label" }, row.label),
        h("span", { class: "bar", "aria-hidden": "true" }, fill),
        h("span", { class: "ranked-value" }, pct(row.probability)),
      ),
    );
  }
  return list;
}

/** The text with its entities as <mark> spans; offsets count code points, as the API's do. */
export function highlighted(text, entities) {
  const chars = Array.from(text);
  const out = h("p", { class: "highlighted", "data-testid": "entities-text" });
  let at = 0;
  for (const e of [...entities].sort((x, y) => x.start - y.start || y.end - x.end)) {
    if (e.start < at || e.end > chars.length || e.end <= e.start) continue; // overlapping or out of range
    if (e.start > at) out.append(chars.slice(at, e.start).join(""));
    out.append(
      h(
        "mark",
        { class: "entity", "data-entity": e.entity, title: `${e.entity} · ${pct(e.confidence)}` },
        chars.slice(e.start, e.end).join(""),
        h("span", { class: "entity-type" }, e.entity),
      ),
    );
    at = e.end;
  }
  if (at < chars.length) out.append(chars.slice(at).join(""));
  return out;
}

function textResult(text, response) {
  const parts = [];
  if (response.predictions) {
    if (response.out_of_scope) {
      parts.push(
        h(
          "p",
          { class: "notice", "data-testid": "out-of-scope" },
          "Out of scope: the top confidence is under the model's threshold, so a bot would answer with its fallback.",
        ),
      );
    }
    parts.push(h("h2", {}, "Intents"), ranked(response.predictions, "Intents, most probable first", "ranked-intents"));
  }
  if (response.entities) {
    parts.push(
      h("h2", {}, "Entities"),
      response.entities.length ? highlighted(text, response.entities) : h("p", {}, "No entities found."),
    );
    if (response.entities.length) {
      parts.push(
        h(
          "ul",
          { class: "entity-list" },
          ...response.entities.map((e) => h("li", {}, h("strong", {}, e.entity), ` “${e.value}” · ${pct(e.confidence)}`)),
        ),
      );
    }
  }
  return parts;
}

/** The picture with positioned boxes over it (percentages of the image's own pixels, so they
 * follow the picture's displayed size). */
function stage(src, info, boxes) {
  const img = h("img", { src, alt: "The image you sent", class: "stage-img", "data-testid": "try-image" });
  const root = h("div", { class: "stage", "data-testid": "stage" }, img);
  boxes.forEach((item, index) => {
    const { box } = item;
    const el = h(
      "div",
      {
        class: `box box-${index % 6}`,
        "data-testid": item.testid,
        "data-label": item.label,
        role: "img",
        "aria-label": item.title,
        title: item.title,
      },
      h("span", { class: "box-label" }, item.tag),
    );
    el.style.left = `${(box.x_min / info.width) * 100}%`;
    el.style.top = `${(box.y_min / info.height) * 100}%`;
    el.style.width = `${((box.x_max - box.x_min) / info.width) * 100}%`;
    el.style.height = `${((box.y_max - box.y_min) / info.height) * 100}%`;
    root.append(el);
  });
  return root;
}

function imageResult(task, src, response) {
  const info = response.image;
  const parts = [];
  if (task === "object-detection") {
    const found = response.probabilities || [];
    parts.push(
      stage(
        src,
        info,
        found.map((d) => ({
          box: d.box,
          label: d.label,
          tag: `${d.label} ${pct(d.probability)}`,
          title: `${d.label}, ${pct(d.probability)}`,
          testid: "detection-box",
        })),
      ),
      h("p", { role: "status", "data-testid": "detections-count" }, `${found.length} object${found.length === 1 ? "" : "s"} found.`),
    );
    if (found.length) {
      parts.push(ranked(found, "Objects found, most probable first", "ranked-boxes"));
    }
  } else if (task === "ocr") {
    const lines = response.lines || [];
    parts.push(
      stage(
        src,
        info,
        lines.map((line, i) => ({
          box: line.box,
          label: line.text,
          tag: String(i + 1),
          title: `line ${i + 1}: ${line.text}`,
          testid: "ocr-box",
        })),
      ),
      h("h2", {}, `Lines read (${lines.length})`),
      h(
        "ol",
        { class: "ocr-lines", "data-testid": "ocr-lines" },
        ...lines.map((line) =>
          h("li", {}, h("span", {}, line.text), h("span", { class: "hint" }, ` · ${pct(line.confidence)}${line.engine ? ` · ${line.engine}` : ""}`)),
        ),
      ),
    );
  } else {
    parts.push(stage(src, info, []));
    if (response.labels) {
      parts.push(
        h("h2", {}, "Labels over their thresholds"),
        h("p", { "data-testid": "image-labels" }, response.labels.length ? response.labels.join(", ") : "none"),
      );
    }
    parts.push(h("h2", {}, "Labels"), ranked(response.probabilities || [], "Labels, most probable first", "ranked-labels"));
  }
  return parts;
}

// --- the page ------------------------------------------------------------------------------

async function choices() {
  const [models, aliases, backends] = await Promise.all([
    api("GET", "/v1/models"),
    api("GET", "/v1/aliases"),
    api("GET", "/v1/backends"),
  ]);
  return {
    aliases: aliases.map((a) => ({ value: a.name, label: `${a.name} → ${a.model_id}` })),
    models: models
      .filter((m) => m.status === "succeeded")
      .map((m) => ({ value: m.id, label: `${m.name || m.id} · ${m.task} · ${m.id}` })),
    builtins: backends.builtin_models.map((b) => ({ value: b.name, label: `${b.name} · ${b.task}` })),
  };
}

function picker(options, current) {
  const select = h("select", { id: "try-model", name: "model", "data-testid": "try-model" });
  select.append(h("option", { value: "" }, "Choose a model…"));
  for (const [title, group] of [
    ["Aliases", options.aliases],
    ["Your models", options.models],
    ["Pre-built", options.builtins],
  ]) {
    if (!group.length) continue;
    const og = h("optgroup", { label: title });
    for (const o of group) og.append(h("option", { value: o.value }, o.label));
    select.append(og);
  }
  select.value = current || "";
  select.addEventListener("change", () => {
    if (select.value) navigate(`/studio/try?model=${encodeURIComponent(select.value)}`);
  });
  return h("div", { class: "try-picker" }, h("label", { for: "try-model" }, "Model, alias or pre-built model"), select);
}

async function renderTry(main, _params, query) {
  main.append(h("link", { rel: "stylesheet", href: CSS }));
  const root = h("div", { class: "try-page", "data-testid": "try-page" });
  main.append(root);
  const ref = query.model || "";
  root.append(heading("Try it"));
  try {
    root.append(picker(await choices(), ref));
  } catch (err) {
    root.append(errorBox(err));
    return;
  }
  if (!ref) {
    root.append(h("p", {}, "Choose a model to send it a text or an image."));
    return;
  }
  let model;
  try {
    model = await api("GET", `/v1/models/${encodeURIComponent(ref)}`);
  } catch (err) {
    root.append(errorBox(err));
    return;
  }
  if (model.status !== "succeeded") {
    root.append(h("p", { class: "notice" }, `Model ${model.id} is ${model.status}; it can be tried once it has succeeded.`));
    return;
  }
  const url = `${location.origin}${predictPath(ref)}`;
  const output = h("div", { class: "card try-output", "aria-live": "polite", "data-testid": "try-output" });
  const code = h("div", { class: "try-code" });
  if (TEXT_TASKS.has(model.task)) {
    code.replaceChildren(snippetsView({ url, json: { text: SAMPLE_TEXT, num_results: NUM_RESULTS } }));
    root.append(textForm(ref, url, output, code), output, code);
  } else if (IMAGE_TASKS.has(model.task)) {
    code.replaceChildren(snippetsView({ url, file: SAMPLE_FILE }));
    root.append(imageForm(ref, model.task, url, output, code), output, code);
  } else {
    root.append(h("p", { class: "notice" }, `Models of task ${model.task} cannot be tried here yet.`));
  }
}

function textForm(ref, url, output, code) {
  const input = h("textarea", { id: "try-text", name: "text", rows: "3", required: "", "data-testid": "try-text" });
  const button = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "try-send" }, "Try");
  return h(
    "form",
    {
      class: "card try-form",
      novalidate: "",
      on: {
        submit: async (event) => {
          event.preventDefault();
          const text = input.value.trim();
          if (!text) {
            input.focus();
            output.replaceChildren(h("p", { class: "error", role: "alert" }, "Type a text to try."));
            return;
          }
          const body = { text, num_results: NUM_RESULTS };
          button.disabled = true;
          output.replaceChildren(h("p", {}, "Asking the model…"));
          try {
            const response = await api("POST", predictPath(ref), { json: body });
            output.replaceChildren(...textResult(text, response));
          } catch (err) {
            output.replaceChildren(errorBox(err));
          } finally {
            button.disabled = false;
          }
          code.replaceChildren(snippetsView({ url, json: body }));
        },
      },
    },
    h("label", { for: "try-text" }, "Text"),
    input,
    button,
  );
}

function imageForm(ref, task, url, output, code) {
  const file = h("input", { id: "try-file", name: "file", type: "file", accept: "image/*", required: "", "data-testid": "try-file" });
  const minScore = h("input", { id: "try-min-score", name: "min_score", type: "number", min: "0", max: "1", step: "0.05", value: "0.5" });
  const button = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "try-send" }, "Try");
  let shown = null; // the object URL of the picture on show
  return h(
    "form",
    {
      class: "card try-form",
      novalidate: "",
      on: {
        submit: async (event) => {
          event.preventDefault();
          const picture = file.files[0];
          if (!picture) {
            file.focus();
            output.replaceChildren(h("p", { class: "error", role: "alert" }, "Choose an image to try."));
            return;
          }
          const fields = task === "object-detection" && minScore.value !== "" ? { min_score: minScore.value } : {};
          const form = new FormData();
          form.append("file", picture, picture.name);
          for (const [k, v] of Object.entries(fields)) form.append(k, v);
          button.disabled = true;
          output.replaceChildren(h("p", {}, "Asking the model…"));
          try {
            const response = await api("POST", predictPath(ref), { form });
            if (shown) URL.revokeObjectURL(shown);
            shown = URL.createObjectURL(picture);
            output.replaceChildren(...imageResult(task, shown, response));
          } catch (err) {
            output.replaceChildren(errorBox(err));
          } finally {
            button.disabled = false;
          }
          code.replaceChildren(snippetsView({ url, file: picture.name, fields }));
        },
      },
    },
    h("label", { for: "try-file" }, "Image"),
    file,
    ...(task === "object-detection"
      ? [h("label", { for: "try-min-score" }, "Lowest box probability shown"), minScore]
      : []),
    button,
  );
}

register({ path: "/try", title: "Try it", nav: "Try it", render: renderTry });

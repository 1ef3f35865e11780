// Training: start a job (a dataset, a backend, and a form built from the backend's parameter
// JSON schemas in GET /v1/backends: defaults, help, enums as selects, booleans as checkboxes,
// numbers with their bounds; an alias to promote the model to), and the jobs with their live
// status, progress, queue position and a cancel button.

import {
  api,
  ApiError,
  badge,
  confirmAction,
  errorBox,
  field,
  h,
  heading,
  link,
  navigate,
  poll,
  progressBar,
  register,
  table,
  toast,
  when,
} from "../studio.js";

const LIVE = new Set(["queued", "running"]);
const POLL_MS = 1000;

// --- the parameter form ---------------------------------------------------------------------

/** The schema a parameter takes when set (`anyOf [X, null]` → X, optional). */
function settle(schema) {
  const options = schema.anyOf || schema.oneOf;
  if (Array.isArray(options)) {
    const real = options.filter((o) => o.type !== "null");
    if (real.length === 1) return { ...schema, ...real[0], nullable: true, anyOf: undefined, oneOf: undefined };
  }
  return schema;
}

/** One control per parameter; `read()` → the values that differ from the defaults, or throws
 * an ApiError-like list of problems. */
export function paramsForm(params) {
  const controls = [];
  const fields = Object.entries(params).map(([name, raw]) => {
    const schema = settle(raw);
    const label = schema.title || name;
    const help = [schema.description, schema.nullable ? "optional: leave empty for none" : null].filter(Boolean).join("; ") || null;
    let f;
    if (schema.type === "boolean") {
      f = field({ label, name, type: "checkbox", value: Boolean(schema.default), help });
    } else if (Array.isArray(schema.enum)) {
      f = field({ label, name, type: "select", value: schema.default, options: schema.enum.map((v) => ({ value: v, label: String(v) })), help });
    } else if (schema.type === "integer" || schema.type === "number") {
      const bounds = [];
      const min = schema.minimum ?? schema.exclusiveMinimum;
      const max = schema.maximum ?? schema.exclusiveMaximum;
      if (min !== undefined) bounds.push(`${schema.exclusiveMinimum !== undefined ? ">" : "≥"} ${min}`);
      if (max !== undefined) bounds.push(`${schema.exclusiveMaximum !== undefined ? "<" : "≤"} ${max}`);
      f = field({
        label,
        name,
        type: "number",
        value: schema.default ?? "",
        min: min ?? null,
        max: max ?? null,
        step: schema.type === "integer" ? "1" : "any",
        help: [help, bounds.length ? bounds.join(", ") : null].filter(Boolean).join(" · ") || null,
      });
    } else if (schema.type === "string") {
      f = field({ label, name, value: schema.default ?? "", help });
    } else {
      f = field({ label, name, type: "textarea", value: schema.default === undefined ? "" : JSON.stringify(schema.default), help: [help, "JSON"].filter(Boolean).join(" · ") });
    }
    f.dataset.param = name;
    controls.push({ name, schema, control: f.control });
    return f;
  });

  const read = () => {
    const values = {};
    const problems = [];
    for (const { name, schema, control } of controls) {
      control.removeAttribute("aria-invalid");
      let value;
      if (schema.type === "boolean") value = control.checked;
      else if (Array.isArray(schema.enum)) value = schema.enum.find((v) => String(v) === control.value);
      else if (schema.type === "integer" || schema.type === "number") {
        if (control.value === "") {
          if (!schema.nullable && schema.default !== null && schema.default !== undefined) {
            problems.push({ field: `params.${name}`, message: "enter a number" });
            control.setAttribute("aria-invalid", "true");
            continue;
          }
          value = null;
        } else {
          value = Number(control.value);
          if (!Number.isFinite(value) || (schema.type === "integer" && !Number.isInteger(value))) {
            problems.push({ field: `params.${name}`, message: schema.type === "integer" ? "enter a whole number" : "enter a number" });
            control.setAttribute("aria-invalid", "true");
            continue;
          }
        }
      } else if (schema.type === "string") value = control.value === "" && schema.nullable ? null : control.value;
      else {
        try {
          value = control.value.trim() ? JSON.parse(control.value) : null;
        } catch (e) {
          problems.push({ field: `params.${name}`, message: "not valid JSON" });
          control.setAttribute("aria-invalid", "true");
          continue;
        }
      }
      if (JSON.stringify(value) !== JSON.stringify(schema.default ?? null)) values[name] = value;
    }
    if (problems.length) throw new ApiError(422, "invalid_input", "Some parameters are not valid.", problems);
    return values;
  };

  const mark = (details) => {
    for (const d of details || []) {
      const path = String(d.field || d.path || "");
      const name = path.replace(/^(body\.)?params\./, "");
      const hit = controls.find((c) => c.name === name);
      if (hit) hit.control.setAttribute("aria-invalid", "true");
    }
  };
  return { fields, read, mark };
}

// --- start a job ------------------------------------------------------------------------------

async function newJobPage(main, params, query, { signal }) {
  main.append(heading("Start training"));
  const [datasets, catalogue] = await Promise.all([api("GET", "/datasets", { signal }), api("GET", "/backends", { signal })]);
  const ready = datasets.filter((d) => d.status === "ready");
  if (!ready.length) {
    main.append(h("p", { "data-testid": "no-datasets" }, "There is no dataset ready to train on yet. ", link("/datasets", "Upload a dataset"), " first."));
    return;
  }
  const taskOf = Object.fromEntries(catalogue.dataset_types.map((t) => [t.name, t.task]));
  const chosen = ready.find((d) => d.id === query.dataset) || ready[0];
  const dataset = field({
    label: "Dataset",
    name: "dataset_id",
    type: "select",
    value: chosen.id,
    options: ready.map((d) => ({ value: d.id, label: `${d.name} (${d.type}, ${d.num_examples} examples)` })),
    "data-testid": "train-dataset",
  });
  const backend = field({ label: "Backend", name: "backend", type: "select", options: [], "data-testid": "train-backend" });
  const backendHelp = h("p", { class: "help" });
  const name = field({ label: "Model name", name: "name", help: "optional; defaults to the dataset's name", "data-testid": "train-name" });
  const alias = field({ label: "Promote to alias", name: "alias", placeholder: "production", help: "optional: the alias (e.g. production) moves to this model once it succeeds", "data-testid": "train-alias" });
  const paramsBox = h("fieldset", { class: "params", "data-testid": "train-params" });
  const error = h("div", { "data-testid": "train-error" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "train-submit" }, "Start training");
  let form = null;

  const fillBackends = () => {
    const d = ready.find((x) => x.id === dataset.control.value);
    const task = taskOf[d.type];
    const usable = catalogue.backends.filter((b) => b.task === task);
    backend.control.replaceChildren(...usable.map((b) => h("option", { value: b.name }, `${b.name} (v${b.version})`)));
    backendHelp.textContent = usable.length ? `Backends that train ${task} models.` : `No backend trains ${task} models on this server.`;
    fillParams();
  };
  const fillParams = () => {
    const b = catalogue.backends.find((x) => x.name === backend.control.value);
    paramsBox.replaceChildren(h("legend", null, b ? `Parameters of ${b.name}` : "Parameters"));
    form = b ? paramsForm(b.params) : null;
    if (form) paramsBox.append(...form.fields);
    submit.disabled = !b;
  };
  dataset.control.addEventListener("change", fillBackends);
  backend.control.addEventListener("change", fillParams);
  backend.append(backendHelp);
  fillBackends();

  main.append(
    h(
      "form",
      {
        class: "card",
        novalidate: true,
        "data-testid": "train-form",
        on: {
          submit: async (event) => {
            event.preventDefault();
            error.replaceChildren();
            submit.disabled = true;
            try {
              const body = { dataset_id: dataset.control.value, backend: backend.control.value, params: form.read() };
              if (name.control.value.trim()) body.name = name.control.value.trim();
              if (alias.control.value.trim()) body.alias = alias.control.value.trim();
              const model = await api("POST", "/models", { json: body });
              toast(`Training ${model.name} started.`, "success");
              navigate(`/training?job=${encodeURIComponent(model.id)}`);
            } catch (err) {
              if (form) form.mark(err.details);
              error.append(errorBox(err));
            } finally {
              submit.disabled = false;
            }
          },
        },
      },
      h("div", { class: "form-row" }, dataset, backend),
      h("div", { class: "form-row" }, name, alias),
      paramsBox,
      error,
      submit,
    ),
  );
}

// --- the jobs ---------------------------------------------------------------------------------

function statusWords(model) {
  if (model.status === "queued") return model.queue_position ? `queued: position ${model.queue_position}` : "queued";
  if (model.status === "running") return `running: ${Math.round(model.progress * 100)} %`;
  if (model.status === "failed") return `failed: ${model.failure_message || "no reason given"}`;
  return model.status;
}

async function cancel(model, after) {
  if (!(await confirmAction(`Cancel training ${model.name}?`, { confirm: "Cancel training" }))) return;
  try {
    await api("POST", `/models/${encodeURIComponent(model.id)}/cancel`);
    toast(`Training ${model.name} cancelled.`, "success");
    after();
  } catch (err) {
    toast(err.message, "error");
  }
}

/** The job's live card: status, progress, queue position, cancel; the model's page when done.
 * `card.update(model)` changes it in place, so a poll neither moves the keyboard focus (on
 * Cancel) nor recreates the live region a screen reader follows. */
function jobCard(model, refresh) {
  const bar = progressBar(`Progress of ${model.name}`, model.progress || 0);
  const title = h("h2", { id: "job-title" });
  const actions = h("div", { class: "actions" });
  const words = h("p", { role: "status", "aria-live": "polite", "data-testid": "job-status" });
  const facts = h("p", { class: "muted" });
  const failure = h("div");
  const cancelButton = h("button", { type: "button", class: "btn btn-danger", "data-testid": "job-cancel", on: { click: () => cancel(current, refresh) } }, "Cancel");
  let current = model;
  let shown = null; // which actions are on show: "live", "succeeded" or "none"
  const card = h(
    "section",
    { class: "card job", "aria-labelledby": "job-title", "data-testid": "job" },
    h("div", { class: "page-head" }, title, actions),
    words,
    bar,
    facts,
    failure,
  );
  card.update = (m) => {
    current = m;
    card.dataset.status = m.status;
    title.replaceChildren(m.name, " ", badge(m.status));
    const want = LIVE.has(m.status) ? "live" : m.status === "succeeded" ? "succeeded" : "none";
    if (want !== shown) {
      shown = want;
      actions.replaceChildren(
        want === "live" ? cancelButton : want === "succeeded" ? link(`/models/${m.id}`, "Open the model", { class: "btn btn-primary", "data-testid": "job-model-link" }) : "",
      );
    }
    const text = statusWords(m);
    if (words.textContent !== text) words.textContent = text;
    if (m.status === "queued") bar.progress.removeAttribute("value");
    else bar.set(m.status === "succeeded" ? 1 : m.progress || 0);
    facts.textContent = `${m.backend} · dataset ${m.dataset_id}${m.alias ? ` · promoted to ${m.alias} when it succeeds` : ""} · started ${when(m.started_at)}`;
    failure.replaceChildren(m.status === "failed" ? errorBox({ message: m.failure_message || "Training failed." }) : "");
  };
  card.update(model);
  return card;
}

function jobsTable(models, refresh) {
  return table(
    [
      { key: "name", label: "Model", render: (m) => (m.status === "succeeded" ? link(`/models/${m.id}`, m.name) : link(`/training?job=${m.id}`, m.name)) },
      { key: "backend", label: "Backend" },
      { key: "status", label: "Status", render: (m) => h("span", null, badge(m.status), " ", m.status === "queued" && m.queue_position ? `#${m.queue_position}` : "") },
      { key: "progress", label: "Progress", numeric: true, render: (m) => `${Math.round((m.status === "succeeded" ? 1 : m.progress || 0) * 100)} %` },
      { key: "created_at", label: "Created", render: (m) => when(m.created_at) },
      { key: "id", label: "", sortable: false, render: (m) => (LIVE.has(m.status) ? h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `Cancel ${m.name}`, on: { click: () => cancel(m, refresh) } }, "Cancel") : "") },
    ],
    models,
    { sortable: true, caption: "Training jobs, newest first", empty: "No training jobs yet.", testid: "jobs-table" },
  );
}

async function trainingPage(main, params, query, { signal }) {
  main.append(h("div", { class: "page-head" }, heading("Training"), h("div", { class: "actions" }, link("/training/new", "Start training", { class: "btn btn-primary", "data-testid": "new-job" }))));
  const current = h("div", { "data-testid": "current-job" });
  const list = h("section", { class: "card", "aria-label": "Training jobs" });
  main.append(current, list);
  let models = [];
  let card = null;
  let jobs = null;
  // each poll updates the card and the table in place (sort order and focus stay)
  const refresh = async () => {
    models = await api("GET", "/models", { signal });
    models.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    if (query.job) {
      const job = models.find((m) => m.id === query.job) || (await api("GET", `/models/${encodeURIComponent(query.job)}`, { signal }));
      if (card) card.update(job);
      else current.replaceChildren((card = jobCard(job, refresh)));
    }
    if (jobs) jobs.setRows(models);
    else list.replaceChildren((jobs = jobsTable(models, refresh)));
    return !models.some((m) => LIVE.has(m.status));
  };
  await refresh();
  // keep polling while something trains; stop when nothing does or the user leaves the page
  poll(refresh, POLL_MS, signal).catch((err) => {
    if (!signal.aborted) current.replaceChildren(errorBox(err));
  });
}

register({ path: "/training", title: "Training", nav: "Training", render: trainingPage });
register({ path: "/training/new", title: "Start training", render: newJobPage });

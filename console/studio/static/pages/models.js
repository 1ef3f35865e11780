/*! Parley Studio: a model's page (/studio/models/{id}) and two models side by side
 * (/studio/models/compare?a=&b=).
 *
 * A model's page shows its status while it trains, then its held-out quality: headline
 * metrics, precision / recall / F1 / support per label (a sortable table), the confusion
 * matrix (the server's SVG inlined, each cell a button listing the held-out examples behind
 * it), the learning curve, an intent model's out-of-scope threshold with its trade-off curve
 * (and a control to move it), a detector's AP per label; it promotes the model to an alias and
 * rolls an alias back. Charts are the server's (GET /v1/models/{id}/plots/{kind}.svg); this
 * file draws none. Everything comes from the public /v1 API.
 */
import {
  api,
  badge,
  chartImg,
  errorBox,
  field,
  h,
  heading,
  inlineSvg,
  link,
  navigate,
  percent as pct,
  poll,
  progressBar,
  register,
  table,
  toast,
  when,
} from "../studio.js";

const CSS = "/studio/static/pages/models.css";
const POLL_MS = 1000;
const HELD_OUT_PAGE = 25;
const ACTIVE = new Set(["queued", "running"]);
const DEFAULT_ALIAS = "production";
const CHART_MAX_LABELS = 80; // the confusion-matrix chart's default max_labels

// --- small helpers ---------------------------------------------------------------------

/** A signed difference of two [0, 1] numbers in percentage points ("+2.1 pts"). */
function delta(a, b) {
  if (a === null || a === undefined || b === null || b === undefined) return "—";
  const d = (b - a) * 100;
  return `${d > 0 ? "+" : d < 0 ? "−" : "±"}${Math.abs(d).toFixed(1)} pts`;
}

function deltaClass(a, b) {
  if (a === null || a === undefined || b === null || b === undefined) return "delta";
  return b > a ? "delta delta-up" : b < a ? "delta delta-down" : "delta";
}

function stylesheet() {
  return h("link", { rel: "stylesheet", href: CSS });
}

/** A card with its own h2, labelled by it. */
function section(title, id, ...children) {
  const h2 = h("h2", { id: `${id}-title` }, title);
  return h("section", { class: "card model-section", id, "aria-labelledby": `${id}-title` }, h2, ...children);
}

// --- metrics, per task -----------------------------------------------------------------

/** The headline numbers of a model's held-out metrics: [{key, label, value, kind}] where kind
 * is "share" (shown as a percentage) or "count". */
export function headline(model) {
  const m = model.metrics || {};
  const share = (key, label, value) => ({ key, label, value: value ?? null, kind: "share" });
  const count = (key, label, value) => ({ key, label, value: value ?? null, kind: "count" });
  let rows;
  switch (model.task) {
    case "intent":
      rows = [share("accuracy", "Accuracy", m.accuracy), share("macro_f1", "Macro-F1", m.macro_f1)];
      if (m.entities) rows.push(share("entity_f1", "Entity F1", m.entities.micro?.f1));
      if (m.out_of_scope?.out_of_scope_recall !== null && m.out_of_scope?.out_of_scope_recall !== undefined) {
        rows.push(share("out_of_scope_recall", "Out-of-scope recall", m.out_of_scope.out_of_scope_recall));
      }
      rows.push(count("num_evaluated", "Held-out examples", m.num_evaluated));
      break;
    case "entities":
      rows = [
        share("entity_f1", "Entity F1", m.micro?.f1),
        share("precision", "Precision", m.micro?.precision),
        share("recall", "Recall", m.micro?.recall),
        count("num_evaluated", "Held-out texts", m.num_evaluated),
      ];
      break;
    case "image-multi-label":
      rows = [
        share("map", "mAP", m.map),
        share("macro_f1", "Macro-F1", m.macro_f1),
        share("micro_f1", "Micro-F1", m.micro_f1),
        share("exact_match", "Exact match", m.exact_match),
        count("num_evaluated", "Held-out images", m.num_evaluated),
      ];
      break;
    case "object-detection":
      rows = [
        share("map50", "mAP@0.5", m.map50),
        share("map", "mAP@0.5:0.95", m.map),
        share("precision", "Precision", m.precision),
        share("recall", "Recall", m.recall),
        count("num_images", "Held-out images", m.num_images),
      ];
      break;
    default: // image-classification and any other classifier
      rows = [
        share("accuracy", "Accuracy", m.accuracy),
        share("macro_f1", "Macro-F1", m.macro_f1),
        count("num_evaluated", "Held-out examples", m.num_evaluated),
      ];
  }
  if (m.train_examples !== undefined) rows.push(count("train_examples", "Training examples", m.train_examples));
  return rows;
}

function f1Of(precision, recall) {
  if (precision === null || precision === undefined || recall === null || recall === undefined) return null;
  return precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
}

/** Per-label rows {label, precision, recall, f1, support, ap?} of a model's metrics (entity
 * types for entity models); a detector's F1 comes from its precision and recall. */
export function perLabel(model) {
  const m = model.metrics || {};
  const source = model.task === "entities" ? m.per_entity : m.per_label;
  return Object.entries(source || {}).map(([label, v]) => ({
    label,
    precision: v.precision ?? null,
    recall: v.recall ?? null,
    f1: v.f1 ?? f1Of(v.precision, v.recall),
    support: v.support ?? null,
    ap: v.average_precision ?? v.ap50 ?? null,
  }));
}

function hasAp(model) {
  return model.task === "image-multi-label" || model.task === "object-detection";
}

function perLabelColumns(model, what) {
  const share = (key, label) => ({ key, label, numeric: true, render: (row) => pct(row[key]) });
  const columns = [
    { key: "label", label: what },
    share("precision", "Precision"),
    share("recall", "Recall"),
    share("f1", "F1"),
    { key: "support", label: "Support", numeric: true },
  ];
  if (hasAp(model)) columns.push(share("ap", model.task === "object-detection" ? "AP@0.5" : "AP"));
  return columns;
}

// --- the model's page ----------------------------------------------------------------------

function modelPath(id) {
  return `/v1/models/${encodeURIComponent(id)}`;
}

async function renderModel(page, params, _query, { signal } = {}) {
  page.append(stylesheet());
  const model = await api("GET", modelPath(params.id)); // 404 (another tenant's too): not found
  const root = h("div", { class: "model-page", "data-testid": "model-page" });
  page.append(root);
  if (ACTIVE.has(model.status)) {
    root.append(...header(model), trainingSection(model, root, signal));
    return;
  }
  await showModel(root, model);
}

/** Everything a finished model's page shows. */
async function showModel(root, model) {
  root.replaceChildren(...header(model));
  if (model.status !== "succeeded") {
    root.append(
      h(
        "div",
        { class: model.status === "failed" ? "error-box" : "notice", role: "alert", "data-testid": "model-failure" },
        model.failure_message || `This model was ${model.status}.`,
      ),
      h("p", null, link(`/training/new?dataset=${encodeURIComponent(model.dataset_id)}`, "Train again")),
    );
    return;
  }
  root.append(metricsSection(model), perLabelSection(model));
  if (model.metrics?.confusion_matrix) root.append(confusionSection(model));
  root.append(learningCurveSection(model));
  if (model.task === "intent" && model.metrics?.out_of_scope) root.append(outOfScopeSection(model));
  if (hasAp(model)) {
    const what = model.task === "object-detection" ? "Average precision at IoU 0.5 per label" : "Average precision per label";
    root.append(section("AP per label", "ap-per-label", chartImg(`${modelPath(model.id)}/plots/ap-per-label.svg`, what)));
  }
  root.append(await aliasSection(model), compareSection(model));
}

function header(model) {
  const facts = h(
    "dl",
    { class: "model-facts" },
    h("dt", null, "Id"),
    h("dd", null, h("code", null, model.id)),
    h("dt", null, "Task"),
    h("dd", null, model.task),
    h("dt", null, "Backend"),
    h("dd", null, `${model.backend}${model.backend_version ? ` ${model.backend_version}` : ""}`),
    h("dt", null, "Dataset"),
    h("dd", null, model.dataset_id ? link(`/datasets/${encodeURIComponent(model.dataset_id)}`, model.dataset_id) : "—"),
    h("dt", null, "Status"),
    h("dd", { "data-testid": "model-status" }, badge(model.status)),
    h("dt", null, "Finished"),
    h("dd", null, when(model.finished_at)),
  );
  const actions =
    model.status === "succeeded"
      ? h(
          "p",
          { class: "actions model-actions" },
          link(`/try?model=${encodeURIComponent(model.id)}`, "Try it", { class: "btn btn-primary", "data-testid": "try-link" }),
          link(`/models/compare?a=${encodeURIComponent(model.id)}`, "Compare with another model", { class: "btn" }),
        )
      : null;
  return [heading(model.name || model.id), facts, actions].filter(Boolean);
}

/** Status and progress while the model trains, polled until it finishes; then the page. */
function trainingSection(model, root, signal) {
  const bar = progressBar("Training progress", model.progress || 0);
  bar.setAttribute("data-testid", "model-progress");
  const words = h("p", { role: "status", "aria-live": "polite", "data-testid": "training-status" });
  const say = (m) => {
    bar.set(Math.max(0, Math.min(1, m.progress || 0)));
    words.textContent =
      m.status === "queued"
        ? m.queue_position === null || m.queue_position === undefined
          ? "Queued."
          : m.queue_position === 0
            ? "Queued: next in line."
            : `Queued: ${m.queue_position} job${m.queue_position === 1 ? "" : "s"} ahead.`
        : `Training: ${Math.round((m.progress || 0) * 100)}%.`;
  };
  say(model);
  const cancel = h(
    "button",
    {
      type: "button",
      class: "btn btn-danger",
      on: {
        click: async () => {
          cancel.disabled = true;
          try {
            await api("POST", `${modelPath(model.id)}/cancel`);
            toast("Cancelling the training job.", "info");
          } catch (err) {
            toast(err.message, "error");
            cancel.disabled = false;
          }
        },
      },
    },
    "Cancel training",
  );
  let latest = model;
  poll(
    async () => {
      latest = await api("GET", modelPath(model.id), { signal });
      say(latest);
      return !ACTIVE.has(latest.status);
    },
    POLL_MS,
    signal,
  )
    .then(async (done) => {
      if (!done || signal?.aborted) return;
      await showModel(root, latest);
      root.querySelector("h1")?.focus(); // the page changed under the reader: start at its top
      toast(`Training ${latest.status}.`, latest.status === "succeeded" ? "success" : "error");
    })
    .catch((err) => {
      if (err?.name !== "AbortError") root.append(errorBox(err));
    });
  return section("Training", "training", bar, words, cancel);
}

function metricsSection(model) {
  const items = headline(model).map((row) =>
    h(
      "div",
      { class: "metric", "data-metric": row.key },
      h("dt", {}, row.label),
      h("dd", {}, row.kind === "share" ? pct(row.value) : row.value === null ? "—" : String(row.value)),
    ),
  );
  return section(
    "Held-out quality",
    "metrics",
    h("dl", { class: "metric-cards", "data-testid": "headline-metrics" }, ...items),
    h("p", { class: "hint" }, "Measured on the held-out split: examples the model did not train on."),
  );
}

function perLabelSection(model) {
  const what = model.task === "entities" ? "Entity type" : "Label";
  const children = [
    table(perLabelColumns(model, what), perLabel(model), {
      sortable: true,
      caption: `Precision, recall, F1 and support per ${what.toLowerCase()}`,
    }),
  ];
  if (model.task === "intent" && model.metrics?.entities) {
    const entities = perLabel({ task: "entities", metrics: model.metrics.entities });
    children.push(
      h("h3", {}, "Entities"),
      table(perLabelColumns({ task: "entities" }, "Entity type"), entities, {
        sortable: true,
        caption: "Precision, recall, F1 and support per entity type",
      }),
    );
  }
  return section(`Per ${what.toLowerCase()}`, "per-label", ...children);
}

// --- confusion matrix ----------------------------------------------------------------------

function confusionSection(model) {
  const { labels, matrix } = model.metrics.confusion_matrix;
  const figure = h("div", { class: "confusion", "data-testid": "confusion-matrix" }, h("p", {}, "Loading the confusion matrix…"));
  const examples = h("div", { class: "held-out", "data-testid": "held-out", "aria-live": "polite" });
  const open = (i, j) => heldOut(model, labels[i], labels[j], matrix[i][j], examples, 0);
  inlineSvg(`/v1/models/${model.id}/plots/confusion-matrix.svg`)
    .then((svg) => {
      for (const cell of svg.querySelectorAll('[id^="cell-"]')) {
        const match = /^cell-(\d+)-(\d+)$/.exec(cell.id);
        if (!match) continue;
        const [i, j] = [Number(match[1]), Number(match[2])];
        if (i >= labels.length || j >= labels.length) continue;
        cell.setAttribute("tabindex", "0");
        cell.setAttribute("role", "button");
        cell.setAttribute("aria-label", `true ${labels[i]}, predicted ${labels[j]}: ${matrix[i][j]}`);
        cell.classList.add("cm-cell");
        cell.addEventListener("click", () => open(i, j));
        cell.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            open(i, j);
          }
        });
      }
      svg.setAttribute("role", "group");
      svg.setAttribute("aria-label", "Confusion matrix: rows are the true labels, columns the predicted ones");
      figure.replaceChildren(svg);
    })
    .catch((err) => figure.replaceChildren(errorBox(err)));
  return section(
    "Confusion matrix",
    "confusion",
    h(
      "p",
      { class: "hint" },
      "Rows are the true labels, columns what the model predicted. Click a cell (or Tab to it and press Enter) to see the held-out examples behind it.",
    ),
    labels.length > CHART_MAX_LABELS
      ? h("p", { class: "hint" }, `The chart shows the ${CHART_MAX_LABELS} labels with the most errors, of ${labels.length}.`)
      : null,
    figure,
    examples,
  );
}

async function heldOut(model, label, predicted, count, box, offset) {
  const heading = h(
    "h3",
    { tabindex: "-1", "data-testid": "held-out-title" },
    `True ${label}, predicted ${predicted}: ${count} example${count === 1 ? "" : "s"}`,
  );
  if (offset === 0) box.replaceChildren(heading, h("p", {}, "Loading…"));
  let page;
  try {
    page = await api("GET", `/v1/models/${model.id}/held-out`, {
      query: { label, predicted, offset, limit: HELD_OUT_PAGE },
    });
  } catch (err) {
    box.replaceChildren(heading, errorBox(err));
    return;
  }
  const list = offset === 0 ? h("ol", { class: "held-out-list", "data-testid": "held-out-list" }) : box.querySelector("ol");
  for (const ex of page.examples) {
    list.append(
      h(
        "li",
        { class: "held-out-item", "data-testid": "held-out-example" },
        ex.image_url ? h("img", { src: ex.image_url, alt: `held-out image ${ex.example_id}`, class: "thumb", loading: "lazy" }) : h("span"),
        h("span", { class: "held-out-text" }, ex.text ?? ex.example_id),
        h("span", { class: "held-out-meta" }, `predicted ${ex.predicted} · ${pct(ex.confidence)}`),
      ),
    );
  }
  const shown = offset + page.examples.length;
  const more = box.querySelector(".held-out-more");
  if (more) more.remove();
  if (offset === 0) {
    box.replaceChildren(heading, page.total ? list : h("p", {}, "No held-out examples in this cell."));
    heading.focus();
  }
  if (shown < page.total) {
    box.append(
      h(
        "button",
        {
          type: "button",
          class: "btn held-out-more",
          on: { click: () => heldOut(model, label, predicted, count, box, shown) },
        },
        `Show more (${page.total - shown} left)`,
      ),
    );
  }
}

// --- learning curve --------------------------------------------------------------------------

function learningCurveSection(model) {
  const data = h("details", { class: "chart-data" }, h("summary", {}, "The learning curve as a table"));
  data.addEventListener(
    "toggle",
    async () => {
      try {
        const curve = await api("GET", `/v1/models/${model.id}/learning-curve`);
        const keys = ["validation_accuracy", "validation_macro_f1", "validation_entity_f1", "validation_map50"].filter(
          (key) => curve.points.some((p) => p[key] !== null && p[key] !== undefined),
        );
        const names = {
          validation_accuracy: "Held-out accuracy",
          validation_macro_f1: "Held-out macro-F1",
          validation_entity_f1: "Held-out entity F1",
          validation_map50: "Held-out mAP@0.5",
        };
        const columns = [
          { key: "epoch", label: "Epoch", numeric: true },
          { key: "train_loss", label: "Training loss", numeric: true, render: (p) => p.train_loss.toFixed(4) },
          ...keys.map((key) => ({ key, label: names[key], numeric: true, render: (p) => pct(p[key]) })),
        ];
        data.append(table(columns, curve.points, { caption: "Per epoch" }));
      } catch (err) {
        data.append(errorBox(err));
      }
    },
    { once: true },
  );
  return section(
    "Learning curve",
    "learning-curve",
    chartImg(`/v1/models/${model.id}/plots/learning-curve.svg`, "Training loss and the held-out metric per epoch"),
    data,
  );
}

// --- out-of-scope threshold ----------------------------------------------------------------

/** The stored curve point nearest to ``threshold`` (the curve the chart draws). */
function nearestPoint(curve, threshold) {
  let best = null;
  for (const point of curve || []) {
    if (best === null || Math.abs(point.threshold - threshold) < Math.abs(best.threshold - threshold)) best = point;
  }
  return best;
}

function outOfScopeSection(model) {
  const oos = model.metrics.out_of_scope;
  const calibrated = oos.calibrated_threshold ?? (oos.method === "manual" ? null : oos.threshold);
  const manual = oos.method === "manual";
  const chart = chartImg(
    `/v1/models/${model.id}/plots/out-of-scope.svg?threshold=${encodeURIComponent(oos.threshold ?? "")}`,
    `In-scope accuracy and out-of-scope recall against the threshold; the current threshold ${oos.threshold} is marked`,
  );
  const value = oos.threshold ?? 0;
  const slider = h("input", {
    type: "range",
    min: "0",
    max: "1",
    step: "0.01",
    value: String(value),
    id: "oos-range",
    "aria-label": "Out-of-scope threshold (slider)",
  });
  const numberField = field({
    label: "Out-of-scope threshold (0 to 1)",
    name: "out_of_scope_threshold",
    type: "number",
    value: String(value),
    help: "Below this top confidence a message is answered as out_of_scope. Higher turns away more messages.",
    min: "0",
    max: "1",
    step: "0.01",
    "data-testid": "oos-threshold",
  });
  const number = numberField.control;
  const preview = h("p", { class: "oos-preview", "aria-live": "polite", "data-testid": "oos-preview" });
  const showPreview = (t) => {
    const point = nearestPoint(oos.curve, t);
    preview.textContent = point
      ? `Held out, near ${point.threshold.toFixed(2)}: in-scope accuracy ${pct(point.in_scope_accuracy)}, ` +
        `out-of-scope recall ${pct(point.out_of_scope_recall)}, in-scope messages turned away ${pct(point.in_scope_flagged)}.`
      : "";
  };
  slider.addEventListener("input", () => {
    number.value = slider.value;
    showPreview(Number(slider.value));
  });
  number.addEventListener("input", () => {
    if (number.value !== "") slider.value = number.value;
    showPreview(Number(number.value));
  });
  showPreview(value);
  const save = async (threshold) => {
    try {
      await api("PATCH", `/v1/models/${model.id}`, { json: { out_of_scope_threshold: threshold } });
      toast(threshold === null ? "The calibrated threshold is back." : `Threshold set to ${threshold}.`, "success");
      navigate(`/models/${encodeURIComponent(model.id)}`, { replace: true });
    } catch (err) {
      form.querySelector(".form-error")?.remove();
      form.append(h("div", { class: "form-error" }, errorBox(err)));
    }
  };
  const form = h(
    "form",
    {
      class: "oos-form",
      novalidate: "",
      on: {
        submit: (event) => {
          event.preventDefault();
          const t = Number(number.value);
          if (number.value === "" || !(t >= 0 && t <= 1)) {
            toast("Use a threshold from 0 to 1.", "error");
            number.focus();
            return;
          }
          save(t);
        },
      },
    },
    numberField,
    slider,
    preview,
    h(
      "div",
      { class: "form-actions" },
      h("button", { type: "submit", class: "btn btn-primary", "data-testid": "oos-save" }, "Set threshold"),
      " ",
      h(
        "button",
        { type: "button", class: "btn", disabled: !manual, on: { click: () => save(null) } },
        calibrated === null || calibrated === undefined ? "Restore the calibrated threshold" : `Restore the calibrated threshold (${calibrated})`,
      ),
    ),
  );
  const facts = h(
    "dl",
    { class: "model-facts", "data-testid": "oos-facts" },
    h("dt", {}, "Threshold"),
    h("dd", {}, `${oos.threshold ?? "none"} (${manual ? "set by hand" : `calibrated: ${oos.method}`})`),
    h("dt", {}, "In-scope accuracy"),
    h("dd", {}, pct(oos.in_scope_accuracy)),
    h("dt", {}, "Out-of-scope recall"),
    h("dd", {}, oos.out_of_scope_recall === null ? "— (no out_of_scope examples held out)" : pct(oos.out_of_scope_recall)),
    h("dt", {}, "In-scope messages turned away"),
    h("dd", {}, pct(oos.in_scope_flagged)),
  );
  return section("Out-of-scope threshold", "out-of-scope", facts, chart, form);
}

// --- aliases: promote and roll back ----------------------------------------------------------

async function aliasSection(model) {
  const body = h("div", { class: "aliases" });
  const box = section("Promote or roll back", "aliases", body);
  let aliases;
  let models;
  try {
    [aliases, models] = await Promise.all([api("GET", "/v1/aliases"), api("GET", "/v1/models")]);
  } catch (err) {
    body.append(errorBox(err));
    return box;
  }
  const mine = aliases.filter((a) => a.model_id === model.id);
  body.append(
    h(
      "p",
      { "data-testid": "model-aliases" },
      mine.length ? `Served as: ${mine.map((a) => a.name).join(", ")}.` : "No alias points at this model yet.",
    ),
  );
  const nameField = field({
    label: "Alias",
    name: "alias",
    type: "text",
    value: DEFAULT_ALIAS,
    required: true,
    help: "Bots and apps call the alias (e.g. production); moving it switches them at once.",
    "data-testid": "alias-name",
  });
  const name = nameField.control;
  const result = h("div", { class: "alias-result", "aria-live": "polite", "data-testid": "alias-result" });
  const promote = h(
    "form",
    {
      class: "alias-form",
      novalidate: "",
      on: {
        submit: async (event) => {
          event.preventDefault();
          const alias = name.value.trim();
          const before = aliases.find((a) => a.name === alias);
          try {
            const set = await api("PUT", `/v1/aliases/${encodeURIComponent(alias)}`, { json: { model_id: model.id } });
            const was = before && before.model_id !== model.id ? before.model_id : null;
            result.replaceChildren(
              h("p", {}, `${set.name} now serves this model${was ? ` (it served ${was} before).` : "."}`),
              was ? rollbackButton(set.name, was, result) : h("span"),
            );
            toast(`${set.name} → ${model.id}`, "success");
          } catch (err) {
            result.replaceChildren(errorBox(err));
          }
        },
      },
    },
    nameField,
    h("button", { type: "submit", class: "btn btn-primary", "data-testid": "promote" }, "Promote"),
  );
  body.append(promote, result);

  // roll back: point one of the tenant's aliases at another succeeded model of the same task
  const others = models.filter((m) => m.status === "succeeded" && m.task === model.task);
  if (aliases.length && others.length) {
    const aliasField = field({
      label: "Alias to move",
      name: "rollback_alias",
      type: "select",
      value: mine[0]?.name ?? aliases[0].name,
      options: aliases.map((a) => ({ value: a.name, label: `${a.name} (now ${a.model_id})` })),
    });
    const modelField = field({
      label: "Point it at",
      name: "rollback_model",
      type: "select",
      value: others.find((m) => m.id !== model.id)?.id ?? model.id,
      options: others.map((m) => ({ value: m.id, label: `${m.name || m.id} · ${m.id} · ${when(m.finished_at)}` })),
    });
    const rollback = h(
      "form",
      {
        class: "alias-form",
        novalidate: "",
        on: {
          submit: async (event) => {
            event.preventDefault();
            const alias = aliasField.control.value;
            const target = modelField.control.value;
            await moveAlias(alias, target, result);
          },
        },
      },
      h("h3", {}, "Roll back"),
      h("p", { class: "hint" }, "Point an alias at an earlier model; it serves it at once."),
      aliasField,
      modelField,
      h("button", { type: "submit", class: "btn", "data-testid": "rollback" }, "Move the alias"),
    );
    body.append(rollback);
  }
  return box;
}

function rollbackButton(alias, modelId, result) {
  return h(
    "button",
    { type: "button", class: "btn", on: { click: () => moveAlias(alias, modelId, result) } },
    `Roll ${alias} back to ${modelId}`,
  );
}

async function moveAlias(alias, modelId, result) {
  try {
    await api("PUT", `/v1/aliases/${encodeURIComponent(alias)}`, { json: { model_id: modelId } });
    result.replaceChildren(h("p", {}, `${alias} now serves ${modelId}.`));
    toast(`${alias} → ${modelId}`, "success");
  } catch (err) {
    result.replaceChildren(errorBox(err));
  }
}

function compareSection(model) {
  const picker = h("div", { class: "compare-pick" }, h("p", {}, "Loading models…"));
  api("GET", "/v1/models")
    .then((models) => {
      const others = models.filter((m) => m.id !== model.id && m.status === "succeeded" && m.task === model.task);
      if (!others.length) {
        picker.replaceChildren(h("p", {}, `No other succeeded ${model.task} model to compare with yet.`));
        return;
      }
      picker.replaceChildren(
        h(
          "ul",
          { class: "compare-list" },
          ...others.map((m) =>
            h("li", {}, link(`/models/compare?a=${encodeURIComponent(model.id)}&b=${encodeURIComponent(m.id)}`, `Compare with ${m.name || m.id} (${m.id})`)),
          ),
        ),
      );
    })
    .catch((err) => picker.replaceChildren(errorBox(err)));
  return section("Compare", "compare", picker);
}

// --- compare -----------------------------------------------------------------------------

async function renderCompare(page, _params, query) {
  page.append(stylesheet());
  const root = h("div", { class: "compare-page", "data-testid": "compare-page" });
  page.append(root);
  const { a, b } = query;
  root.append(heading("Compare models"));
  const models = await api("GET", "/v1/models");
  root.append(comparePicker(models, a, b));
  if (!a || !b) {
    root.append(h("p", null, "Choose two models of the same task to see their held-out metrics side by side."));
    return;
  }
  const [ma, mb] = await Promise.all([a, b].map((id) => api("GET", modelPath(id))));
  if (ma.status !== "succeeded" || mb.status !== "succeeded") {
    root.append(h("p", { class: "notice" }, "Both models must have finished training to be compared."));
    return;
  }
  if (ma.task !== mb.task) {
    root.append(h("p", { class: "notice" }, `These models do different tasks (${ma.task}, ${mb.task}); their metrics are not comparable.`));
    return;
  }
  const name = (m) => `${m.name || m.id} (${m.id})`;
  root.append(
    h(
      "p",
      { class: "compare-names" },
      "A: ",
      link(`/models/${ma.id}`, name(ma)),
      " · B: ",
      link(`/models/${mb.id}`, name(mb)),
      ` · differences are B − A.`,
    ),
  );
  const hb = new Map(headline(mb).map((row) => [row.key, row]));
  const rows = headline(ma)
    .filter((row) => hb.has(row.key))
    .map((row) => ({ metric: row.label, kind: row.kind, a: row.value, b: hb.get(row.key).value }));
  const show = (row, key) => (row.kind === "share" ? pct(row[key]) : row[key] ?? "—");
  const diff = (row) =>
    h("span", { class: deltaClass(row.a, row.b) }, row.kind === "share" ? delta(row.a, row.b) : row.a === null || row.b === null ? "—" : `${row.b - row.a >= 0 ? "+" : ""}${row.b - row.a}`);
  root.append(
    section(
      "Headline metrics",
      "compare-headline",
      table(
        [
          { key: "metric", label: "Metric" },
          { key: "a", label: "A", numeric: true, render: (row) => show(row, "a") },
          { key: "b", label: "B", numeric: true, render: (row) => show(row, "b") },
          { key: "d", label: "B − A", numeric: true, render: diff },
        ],
        rows.map((row) => ({ ...row, d: row.a === null || row.b === null ? null : row.b - row.a })),
        { caption: "Held-out metrics of both models" },
      ),
    ),
  );
  const pa = new Map(perLabel(ma).map((r) => [r.label, r]));
  const pb = new Map(perLabel(mb).map((r) => [r.label, r]));
  const labels = [...new Set([...pa.keys(), ...pb.keys()])].sort();
  const labelRows = labels.map((label) => {
    const fa = pa.get(label)?.f1 ?? null;
    const fb = pb.get(label)?.f1 ?? null;
    return { label, a: fa, b: fb, d: fa === null || fb === null ? null : fb - fa, support: pa.get(label)?.support ?? pb.get(label)?.support ?? null };
  });
  root.append(
    section(
      ma.task === "entities" ? "F1 per entity type" : "F1 per label",
      "compare-per-label",
      table(
        [
          { key: "label", label: ma.task === "entities" ? "Entity type" : "Label" },
          { key: "a", label: "F1 A", numeric: true, render: (r) => pct(r.a) },
          { key: "b", label: "F1 B", numeric: true, render: (r) => pct(r.b) },
          { key: "d", label: "B − A", numeric: true, render: (r) => h("span", { class: deltaClass(r.a, r.b) }, delta(r.a, r.b)) },
          { key: "support", label: "Support", numeric: true },
        ],
        labelRows,
        { sortable: true, caption: "Sort by B − A to see which labels got better or worse" },
      ),
    ),
  );
  root.append(
    section(
      "Learning curves",
      "compare-curves",
      h(
        "div",
        { class: "side-by-side" },
        chartImg(`/v1/models/${ma.id}/plots/learning-curve.svg`, `Learning curve of A, ${name(ma)}`),
        chartImg(`/v1/models/${mb.id}/plots/learning-curve.svg`, `Learning curve of B, ${name(mb)}`),
      ),
    ),
  );
}

function comparePicker(models, a, b) {
  const done = models.filter((m) => m.status === "succeeded");
  const options = done.map((m) => ({ value: m.id, label: `${m.name || m.id} · ${m.task} · ${m.id}` }));
  const fa = field({ label: "Model A", name: "a", type: "select", value: a || "", options });
  const fb = field({ label: "Model B", name: "b", type: "select", value: b || done.find((m) => m.id !== a)?.id || "", options });
  return h(
    "form",
    {
      class: "compare-form",
      novalidate: "",
      on: {
        submit: (event) => {
          event.preventDefault();
          const va = fa.control.value;
          const vb = fb.control.value;
          navigate(`/models/compare?a=${encodeURIComponent(va)}&b=${encodeURIComponent(vb)}`);
        },
      },
    },
    fa,
    fb,
    h("button", { type: "submit", class: "btn" }, "Compare"),
  );
}

// --- the list ------------------------------------------------------------------------------

async function renderList(page) {
  page.append(stylesheet());
  const models = await api("GET", "/v1/models");
  const columns = [
    { key: "name", label: "Model", render: (m) => link(`/models/${encodeURIComponent(m.id)}`, m.name || m.id) },
    { key: "task", label: "Task" },
    { key: "backend", label: "Backend" },
    { key: "status", label: "Status", render: (m) => badge(m.status) },
    {
      key: "score",
      label: "Headline metric",
      numeric: true,
      render: (m) => (m.score === null ? "—" : `${m.scoreLabel} ${pct(m.score)}`),
    },
    { key: "created_at", label: "Created", render: (m) => when(m.created_at) },
  ];
  const rows = models.reverse().map((m) => {
    const first = m.status === "succeeded" ? headline(m)[0] : null;
    return { ...m, score: first ? first.value : null, scoreLabel: first ? first.label : "" };
  });
  page.append(
    heading("Models"),
    h(
      "p",
      { class: "actions" },
      link("/training/new", "Train a model", { class: "btn btn-primary" }),
      link("/models/compare", "Compare two models", { class: "btn" }),
    ),
    table(columns, rows, { sortable: true, caption: "Your tenant's models, newest first", testid: "models-table" }),
  );
}

register({ path: "/models", title: "Models", nav: "Models", render: renderList });
register({ path: "/models/compare", title: "Compare models", render: renderCompare });
register({ path: "/models/:id", title: "Model", render: renderModel });

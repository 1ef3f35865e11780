// Datasets: the tenant's datasets, uploading one (with a progress bar; text CSV/TSV/txt, Rasa
// nlu.yml, image zips), an import's status and errors with their line, the label distribution
// (a server-drawn chart and the counts as a table), and browsing, searching, adding, relabelling
// and deleting examples (images as thumbnails with their boxes drawn).

import {
  api,
  badge,
  chartImg,
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

const PAGE_SIZE = 24;
const TEXT_FILES = ".csv,.tsv,.txt,.json,.jsonl,.yml,.yaml,.zip";
const IMAGE_FILES = ".zip,.jpg,.jpeg,.png,.webp";

document.head.appendChild(h("link", { rel: "stylesheet", href: "/studio/static/pages/datasets.css" }));

const isImage = (type) => String(type).startsWith("image");

let typesCache = null;
async function datasetTypes() {
  if (!typesCache) typesCache = (await api("GET", "/backends")).dataset_types;
  return typesCache;
}

// --- the list and the upload ------------------------------------------------------------------

async function listPage(main, params, query, { signal }) {
  main.append(heading("Datasets"));
  const [datasets, types] = await Promise.all([api("GET", "/datasets", { signal }), datasetTypes()]);
  main.append(uploadForm(types, query.type, signal));
  main.append(
    h(
      "section",
      { class: "card", "aria-labelledby": "datasets-title" },
      h("h2", { id: "datasets-title" }, "Your datasets"),
      table(
        [
          { key: "name", label: "Name", render: (d) => link(`/datasets/${d.id}`, d.name, { "data-testid": "dataset-link" }) },
          { key: "type", label: "Type" },
          { key: "status", label: "Status", render: (d) => badge(d.status) },
          { key: "num_examples", label: "Examples", numeric: true },
          { key: "num_labels", label: "Labels", numeric: true },
          { key: "created_at", label: "Created", render: (d) => when(d.created_at) },
        ],
        datasets,
        { sortable: true, caption: `${datasets.length} dataset${datasets.length === 1 ? "" : "s"}`, empty: "No datasets yet: upload one above.", testid: "datasets-table" },
      ),
    ),
  );
}

function uploadForm(types, preset, signal) {
  const name = field({ label: "Name", name: "name", required: true, "data-testid": "upload-name" });
  const type = field({
    label: "Type",
    name: "type",
    type: "select",
    value: preset || "text-intent",
    options: types.map((t) => ({ value: t.name, label: `${t.name} — ${t.description}` })),
    "data-testid": "upload-type",
  });
  const fileHelp = () =>
    isImage(type.control.value)
      ? "A zip of images: one folder per label, or a labels.csv (file,label[,x_min,y_min,x_max,y_max]), Pascal VOC or COCO for boxes."
      : "CSV or TSV (text,label), one text per line (.txt, label from the file name), JSON/JSONL, or a Rasa nlu.yml.";
  const file = field({ label: "File", name: "file", type: "file", required: true, help: fileHelp(), accept: TEXT_FILES, "data-testid": "upload-file" });
  type.control.addEventListener("change", () => {
    file.control.accept = isImage(type.control.value) ? IMAGE_FILES : TEXT_FILES;
    file.querySelector(".help").textContent = fileHelp();
  });
  const bar = progressBar("Upload progress");
  bar.hidden = true;
  const status = h("p", { class: "muted", role: "status", "data-testid": "upload-status" });
  const error = h("div", { "data-testid": "upload-error" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "upload-submit" }, "Upload");
  const form = h(
    "form",
    {
      class: "card",
      novalidate: true,
      "aria-labelledby": "upload-title",
      "data-testid": "upload-form",
      on: {
        submit: async (event) => {
          event.preventDefault();
          error.replaceChildren();
          const chosen = file.control.files[0];
          const problems = [];
          if (!name.control.value.trim()) problems.push({ field: "name", message: "give the dataset a name" });
          if (!chosen) problems.push({ field: "file", message: "choose a file to upload" });
          if (problems.length) {
            error.append(errorBox({ message: "The dataset needs a name and a file.", details: problems }));
            return;
          }
          const body = new FormData();
          body.set("name", name.control.value.trim());
          body.set("type", type.control.value);
          body.set("file", chosen, chosen.name);
          submit.disabled = true;
          bar.hidden = false;
          bar.set(0);
          status.textContent = `Uploading ${chosen.name}…`;
          try {
            const dataset = await api("POST", "/datasets", {
              form: body,
              onProgress: (f) => {
                bar.set(f);
                if (f >= 1) status.textContent = "Uploaded; importing…";
              },
            });
            toast(`Dataset ${dataset.name}: ${dataset.status === "ready" ? `${dataset.num_examples} examples imported` : "importing"}.`, "success");
            // the upload goes on when the user moves to another page; only here does it open the dataset
            if (!signal.aborted) navigate(`/datasets/${dataset.id}`);
          } catch (err) {
            bar.hidden = true;
            status.textContent = "";
            error.append(errorBox(err));
          } finally {
            submit.disabled = false;
          }
        },
      },
    },
    h("h2", { id: "upload-title" }, "Upload a dataset"),
    h("div", { class: "form-row" }, name, type),
    file,
    bar,
    status,
    error,
    submit,
  );
  return form;
}

// --- one dataset ------------------------------------------------------------------------------

async function datasetPage(main, params, query, { signal }) {
  let dataset = await api("GET", `/datasets/${encodeURIComponent(params.id)}`, { signal });
  const title = heading(dataset.name, " ", badge(dataset.status));
  const summary = h("p", { class: "muted", "data-testid": "dataset-summary" });
  const fillSummary = () => {
    title.replaceChildren(dataset.name, " ", badge(dataset.status));
    summary.textContent = `${dataset.type} · ${dataset.num_examples} examples · ${dataset.num_labels} labels${dataset.num_duplicates ? ` · ${dataset.num_duplicates} duplicates dropped` : ""} · created ${when(dataset.created_at)}`;
  };
  fillSummary();
  const actions = h(
    "div",
    { class: "actions" },
    link(`/training/new?dataset=${encodeURIComponent(dataset.id)}`, "Train a model", { class: "btn btn-primary", "data-testid": "train-link" }),
    h("button", { type: "button", class: "btn btn-danger", "data-testid": "delete-dataset", on: { click: () => deleteDataset(dataset) } }, "Delete dataset"),
  );
  const body = h("div", { "data-testid": "dataset-body" });
  main.append(h("div", { class: "page-head" }, title, actions), summary, body);

  if (dataset.status === "processing") {
    const bar = progressBar("Import progress");
    bar.progress.removeAttribute("value"); // indeterminate: the import reports no fraction
    bar.set = () => {};
    body.append(h("section", { class: "card", "data-testid": "importing" }, h("h2", null, "Importing"), h("p", { role: "status" }, "The file is being imported; this page updates by itself."), bar));
    await poll(async () => {
      dataset = await api("GET", `/datasets/${encodeURIComponent(params.id)}`, { signal });
      return dataset.status !== "processing";
    }, 1000, signal);
    if (signal.aborted) return;
    body.replaceChildren();
    fillSummary();
  }
  if (dataset.status === "failed") {
    body.append(
      h(
        "section",
        { class: "card", "data-testid": "import-failed" },
        h("h2", null, "The import failed"),
        errorBox({ message: dataset.status_message || "The file could not be imported.", details: dataset.details || dataset.errors || [] }),
        h("p", null, "Fix the file and upload it again: ", link(`/datasets?type=${encodeURIComponent(dataset.type)}`, "upload a dataset")),
      ),
    );
    return;
  }
  if (dataset.status_message) body.append(h("p", { class: "notice", "data-testid": "dataset-message" }, dataset.status_message));
  // after an edit: the counts, the chart and (for an addition) the examples again; a failure says so
  const changed = (reloadExamples) => () => refresh(reloadExamples).catch((err) => toast(`The dataset could not be reloaded: ${err.message}`, "error"));
  const examples = examplesSection(dataset, signal, changed(false));
  body.append(labelsSection(dataset), examples, addSection(dataset, changed(true)));

  async function refresh(reloadExamples) {
    dataset = await api("GET", `/datasets/${encodeURIComponent(dataset.id)}`);
    fillSummary();
    body.querySelector("[data-section=labels]").replaceWith(labelsSection(dataset));
    if (reloadExamples) await examples.reload();
  }
}

async function deleteDataset(dataset) {
  if (!(await confirmAction(`Delete the dataset ${dataset.name} and its ${dataset.num_examples} examples? Models trained on it stay.`, { confirm: "Delete dataset" }))) return;
  try {
    await api("DELETE", `/datasets/${encodeURIComponent(dataset.id)}`);
    toast(`Dataset ${dataset.name} deleted.`, "success");
    navigate("/datasets");
  } catch (err) {
    toast(err.message, "error");
  }
}

function labelsSection(dataset) {
  const rows = [...dataset.labels].sort((a, b) => b.num_examples - a.num_examples);
  return h(
    "section",
    { class: "card", "data-section": "labels", "aria-labelledby": "labels-title" },
    h("h2", { id: "labels-title" }, "Labels"),
    h(
      "div",
      { class: "grid-2" },
      chartImg(`/datasets/${encodeURIComponent(dataset.id)}/plots/labels.svg?v=${dataset.num_examples}-${dataset.updated_at}`, "Examples per label (bar chart)"),
      h(
        "div",
        { class: "table-scroll" },
        table(
          [
            { key: "name", label: "Label" },
            { key: "num_examples", label: "Examples", numeric: true },
          ],
          rows,
          { sortable: true, caption: "Examples per label", empty: "No labels yet.", testid: "labels-table" },
        ),
      ),
    ),
  );
}

function examplesSection(dataset, signal, changed) {
  const image = isImage(dataset.type);
  const search = field({ label: "Search", name: "q", type: "search", placeholder: image ? "file name" : "text", "data-testid": "examples-search" });
  const label = field({
    label: "Label",
    name: "label",
    type: "select",
    options: [{ value: "", label: "All labels" }, ...dataset.labels.map((l) => ({ value: l.name, label: `${l.name} (${l.num_examples})` }))],
    "data-testid": "examples-label",
  });
  const list = h("div", { class: "examples", "data-testid": "examples", "aria-live": "polite" });
  const pager = h("div", { class: "pager actions" });
  let offset = 0;

  const load = async () => {
    const page = await api("GET", `/datasets/${encodeURIComponent(dataset.id)}/examples`, {
      query: { offset, limit: PAGE_SIZE, q: search.control.value.trim(), label: label.control.value },
      signal,
    });
    list.replaceChildren(image ? imageGrid(dataset, page.examples, load, changed) : textTable(dataset, page.examples, load, changed));
    const last = Math.min(page.offset + page.examples.length, page.total);
    pager.replaceChildren(
      h("button", { type: "button", class: "btn", disabled: offset === 0, "data-testid": "examples-prev", on: { click: () => { offset = Math.max(0, offset - PAGE_SIZE); load(); } } }, "Previous"),
      h("span", { role: "status", "data-testid": "examples-range" }, page.total ? `${page.offset + 1}–${last} of ${page.total}` : "No examples match."),
      h("button", { type: "button", class: "btn", disabled: last >= page.total, "data-testid": "examples-next", on: { click: () => { offset += PAGE_SIZE; load(); } } }, "Next"),
    );
  };
  const form = h(
    "form",
    {
      class: "form-row",
      role: "search",
      on: {
        submit: (event) => {
          event.preventDefault();
          offset = 0;
          load().catch((err) => list.replaceChildren(errorBox(err)));
        },
      },
    },
    search,
    label,
    h("button", { type: "submit", class: "btn", "data-testid": "examples-search-submit" }, "Search"),
  );
  label.control.addEventListener("change", () => form.requestSubmit());
  load().catch((err) => list.replaceChildren(errorBox(err)));
  const section = h("section", { class: "card", "aria-labelledby": "examples-title" }, h("h2", { id: "examples-title" }, "Examples"), form, list, pager);
  section.reload = () => load().catch((err) => list.replaceChildren(errorBox(err)));
  return section;
}

function textTable(dataset, examples, reload, changed) {
  const labels = dataset.labels.map((l) => l.name);
  const listId = `labels-${dataset.id}`;
  return h(
    "div",
    { class: "table-scroll" },
    h("datalist", { id: listId }, labels.map((l) => h("option", { value: l }))),
    table(
      [
        { key: "line", label: "Line", numeric: true },
        { key: "text", label: "Text" },
        { key: "label", label: "Label", render: (ex) => relabel(dataset, ex, listId, changed) },
        { key: "source", label: "Source" },
        { key: "id", label: "", render: (ex) => deleteButton(dataset, ex, reload, changed) },
      ],
      examples,
      { caption: "Examples", empty: "No examples match.", testid: "examples-table" },
    ),
  );
}

function relabel(dataset, ex, listId, changed) {
  const input = h("input", { value: ex.label || "", list: listId, "aria-label": `Label of example ${ex.id}`, class: "label-input", "data-testid": "example-label" });
  const save = h("button", { type: "submit", class: "btn btn-small", hidden: true, "data-testid": "example-save" }, "Save");
  input.addEventListener("input", () => {
    save.hidden = input.value.trim() === (ex.label || "");
  });
  return h(
    "form",
    {
      class: "relabel",
      on: {
        submit: async (event) => {
          event.preventDefault();
          const value = input.value.trim();
          if (!value) return toast("A label cannot be empty.", "error");
          try {
            const updated = await api("PATCH", `/datasets/${encodeURIComponent(dataset.id)}/examples/${ex.id}`, { json: { label: value } });
            ex.label = updated.label;
            save.hidden = true;
            toast(`Example ${ex.id} is now ${updated.label}.`, "success");
            changed();
          } catch (err) {
            toast(err.message, "error");
          }
        },
      },
    },
    input,
    save,
  );
}

function deleteButton(dataset, ex, reload, changed) {
  return h(
    "button",
    {
      type: "button",
      class: "btn btn-small btn-danger",
      "aria-label": `Delete example ${ex.id}`,
      "data-testid": "example-delete",
      on: {
        click: async () => {
          const what = ex.text ? `“${ex.text.slice(0, 60)}”` : ex.file || `example ${ex.id}`;
          if (!(await confirmAction(`Delete ${what}?`, { confirm: "Delete" }))) return;
          try {
            await api("DELETE", `/datasets/${encodeURIComponent(dataset.id)}/examples/${ex.id}`);
            toast("Example deleted.", "success");
            await reload();
            changed();
          } catch (err) {
            toast(err.message, "error");
          }
        },
      },
    },
    "Delete",
  );
}

function imageGrid(dataset, examples, reload, changed) {
  if (!examples.length) return h("p", { class: "muted" }, "No examples match.");
  return h(
    "ul",
    { class: "thumbs", "data-testid": "thumbs" },
    examples.map((ex) =>
      h(
        "li",
        { class: "thumb", "data-testid": "thumb" },
        thumbnail(ex),
        h("p", { class: "thumb-caption" }, ex.label || (ex.labels || []).join(", ") || `${(ex.boxes || []).length} box${(ex.boxes || []).length === 1 ? "" : "es"}`, ex.file ? h("span", { class: "muted" }, ` · ${ex.file}`) : null),
        deleteButton(dataset, ex, reload, changed),
      ),
    ),
  );
}

/** The image with its boxes drawn as absolutely placed divs (percentages of the image). */
function thumbnail(ex) {
  const boxes = ex.boxes || [];
  const alt = `${ex.file || `example ${ex.id}`}${boxes.length ? `: ${boxes.map((b) => b.label).join(", ")}` : ex.label ? `: ${ex.label}` : ""}`;
  const img = h("img", { src: `${ex.image_url}?size=160`, alt, loading: "lazy", class: "thumb-img" });
  const frame = h("div", { class: "thumb-frame" }, img);
  if (boxes.length && ex.width && ex.height) {
    for (const b of boxes) {
      const box = h("div", { class: "box", "data-testid": "box", title: b.label }, h("span", { class: "box-label" }, b.label));
      box.style.left = `${(100 * b.x_min) / ex.width}%`;
      box.style.top = `${(100 * b.y_min) / ex.height}%`;
      box.style.width = `${(100 * (b.x_max - b.x_min)) / ex.width}%`;
      box.style.height = `${(100 * (b.y_max - b.y_min)) / ex.height}%`;
      frame.append(box);
    }
  }
  return frame;
}

function addSection(dataset, changed) {
  return isImage(dataset.type) ? addImages(dataset, changed) : addTexts(dataset, changed);
}

function addTexts(dataset, changed) {
  const text = field({ label: "Text", name: "text", required: true, "data-testid": "add-text" });
  const label = field({ label: "Label", name: "label", required: dataset.type === "text-intent", list: `labels-${dataset.id}`, "data-testid": "add-label" });
  const error = h("div");
  return h(
    "form",
    {
      class: "card",
      novalidate: true,
      "aria-labelledby": "add-title",
      "data-testid": "add-form",
      on: {
        submit: async (event) => {
          event.preventDefault();
          error.replaceChildren();
          const example = { text: text.control.value.trim() };
          if (label.control.value.trim()) example.label = label.control.value.trim();
          try {
            const added = await api("POST", `/datasets/${encodeURIComponent(dataset.id)}/examples`, { json: [example] });
            toast(added.added ? "Example added." : "That example is already in the dataset.", added.added ? "success" : "info");
            text.control.value = "";
            text.control.focus();
            changed();
          } catch (err) {
            error.append(errorBox(err));
          }
        },
      },
    },
    h("h2", { id: "add-title" }, "Add an example"),
    h("div", { class: "form-row" }, text, label),
    error,
    h("button", { type: "submit", class: "btn btn-primary", "data-testid": "add-submit" }, "Add"),
  );
}

function addImages(dataset, changed) {
  const file = field({ label: "Image or zip of images", name: "file", type: "file", required: true, accept: IMAGE_FILES, "data-testid": "add-file" });
  const detection = dataset.type === "image-detection";
  const label = detection
    ? field({ label: "Boxes (JSON)", name: "boxes", type: "textarea", help: 'e.g. [{"label": "box", "x_min": 10, "y_min": 10, "x_max": 80, "y_max": 60}] in pixels', "data-testid": "add-boxes" })
    : field({ label: dataset.type === "image-multi-label" ? "Labels (comma-separated)" : "Label", name: dataset.type === "image-multi-label" ? "labels" : "label", "data-testid": "add-label" });
  const bar = progressBar("Upload progress");
  bar.hidden = true;
  const error = h("div");
  return h(
    "form",
    {
      class: "card",
      novalidate: true,
      "aria-labelledby": "add-title",
      on: {
        submit: async (event) => {
          event.preventDefault();
          error.replaceChildren();
          const chosen = file.control.files[0];
          if (!chosen) return error.append(errorBox({ message: "Choose an image (or a zip of images) to add." }));
          const body = new FormData();
          body.set("file", chosen, chosen.name);
          if (label.control.value.trim()) body.set(label.control.name, label.control.value.trim());
          bar.hidden = false;
          try {
            const added = await api("POST", `/datasets/${encodeURIComponent(dataset.id)}/examples`, { form: body, onProgress: (f) => bar.set(f) });
            toast(`${added.added} image${added.added === 1 ? "" : "s"} added.`, "success");
            changed();
          } catch (err) {
            error.append(errorBox(err));
          } finally {
            bar.hidden = true;
          }
        },
      },
    },
    h("h2", { id: "add-title" }, "Add images"),
    file,
    label,
    bar,
    error,
    h("button", { type: "submit", class: "btn btn-primary" }, "Add"),
  );
}

register({ path: "/datasets", title: "Datasets", nav: "Datasets", render: listPage });
register({ path: "/datasets/:id", title: "Dataset", render: datasetPage });

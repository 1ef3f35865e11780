/**
 * Parley Studio: improve a bot from its real conversations. The messages the bot did not
 * understand or was unsure of (fallbacks, low confidence, corrected by agents), grouped by
 * similarity (`GET /v1/bots/{id}/improve`): each group is assigned one of the model's intents,
 * marked out of scope, or dismissed; assigned messages become feedback examples of the bot's
 * dataset, and "Retrain with these" trains a new model from them (its progress followed here)
 * that takes the bot's place when it succeeds.
 */
import { api, errorBox, h, heading, link, navigate, percent as share, poll, progressBar, register, toast } from "../studio.js";
import { botPicker, pageStyle } from "./bots.js";

const REASONS = {
  fallback: "not understood",
  low_confidence: "unsure",
  corrected: "corrected by an agent",
};

const percent = (value) => share(value, 0);

function itemRow(item) {
  const box = h("input", { type: "checkbox", id: `item-${item.id}`, value: item.id, checked: true });
  const row = h(
    "li",
    { class: "item", "data-testid": "improve-item" },
    box,
    h(
      "label",
      { for: `item-${item.id}` },
      h("q", { class: "text" }, item.text),
      h(
        "span",
        { class: "item-meta" },
        h("span", { class: `badge reason-${item.reason}` }, REASONS[item.reason] || item.reason),
        ` ${item.intent ? `read as ${item.intent}` : "no intent"} (${percent(item.confidence)}) · ${item.channel || "?"} · ${
          item.at ? new Date(item.at).toLocaleString() : ""
        }`
      )
    )
  );
  return { row, box, item };
}

function groupCard(botId, group, intents, onDone) {
  const rows = group.items.map(itemRow);
  const headingId = `group-${group.id}-h`;
  const intentId = `group-${group.id}-intent`;
  const select = h("select", { id: intentId, name: "intent", "data-testid": "group-intent" });
  for (const intent of intents) select.append(h("option", { value: intent }, intent));
  if (group.suggested_intent && intents.includes(group.suggested_intent)) select.value = group.suggested_intent;
  const status = h("p", { class: "group-status", "aria-live": "polite" });
  const chosen = () => rows.filter((r) => r.box.checked).map((r) => r.item.id);

  async function act(path, body, what) {
    const ids = chosen();
    if (!ids.length) {
      status.textContent = "Tick at least one message.";
      return;
    }
    for (const b of card.querySelectorAll("button")) b.disabled = true;
    try {
      const result = await api("POST", `/v1/bots/${botId}/improve/${path}`, { json: { item_ids: ids, ...body } });
      onDone(card, ids, what, result);
    } catch (err) {
      status.replaceChildren(errorBox(err));
      for (const b of card.querySelectorAll("button")) b.disabled = false;
    }
  }

  const assign = h("button", { type: "button", class: "btn btn-primary", "data-testid": "assign" }, "Add as examples");
  assign.addEventListener("click", () => act("label", { intent: select.value }, `→ ${select.value}`));
  const outOfScope = h("button", { type: "button", class: "btn", "data-testid": "out-of-scope" }, "Out of scope");
  outOfScope.addEventListener("click", () => act("label", { out_of_scope: true }, "→ out of scope"));
  const dismiss = h("button", { type: "button", class: "btn", "data-testid": "dismiss" }, "Dismiss");
  dismiss.addEventListener("click", () => act("dismiss", {}, "dismissed"));

  const card = h(
    "article",
    { class: "panel group", "aria-labelledby": headingId, "data-testid": "improve-group", "data-group": group.id },
    h(
      "h3",
      { id: headingId },
      `${group.size} message${group.size === 1 ? "" : "s"}`,
      group.suggested_intent ? h("span", { class: "suggested" }, ` · looks like ${group.suggested_intent}`) : ""
    ),
    h("ul", { class: "items" }, ...rows.map((r) => r.row)),
    h(
      "div",
      { class: "inline-form" },
      h("label", { for: intentId }, "Intent"),
      select,
      assign,
      outOfScope,
      dismiss
    ),
    status
  );
  return card;
}

function modelLine(model) {
  const accuracy = model.metrics && model.metrics.accuracy !== undefined ? ` · accuracy ${percent(model.metrics.accuracy)}` : "";
  const alias = model.alias ? `, alias ${model.alias}` : "";
  return h("span", {}, link(`/studio/models/${model.id}`, model.name || model.id), ` (${model.status}${accuracy}${alias})`);
}

function retrainPanel(botId, inbox, signal) {
  const out = h("div", { "aria-live": "polite", "data-testid": "retrain-status" });
  const button = h("button", { type: "button", class: "btn btn-primary", "data-testid": "retrain" }, "Retrain with these");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const model = await api("POST", `/v1/bots/${botId}/improve/retrain`);
      const bar = progressBar("Training progress", model.progress || 0);
      const line = h("p", {}, `Training ${model.id}: ${model.status}`);
      out.replaceChildren(line, bar);
      await poll(
        async () => {
          const m = await api("GET", `/v1/models/${model.id}`);
          bar.set(m.progress || 0);
          const queued = m.queue_position ? ` (number ${m.queue_position} in the queue)` : "";
          line.textContent = `Training ${m.id}: ${m.status}${queued}`;
          if (m.status === "succeeded") {
            out.replaceChildren(
              h("p", { class: "good", "data-testid": "retrained" }, "Retrained: the bot now uses ", modelLine(m), ".")
            );
            toast("The retrained model is in place", "success");
            return true;
          }
          if (m.status === "failed" || m.status === "cancelled") {
            out.replaceChildren(h("p", { class: "bad", role: "alert" }, `Training ${m.status}: ${m.failure_message || "no message"}`));
            button.disabled = false;
            return true;
          }
          return false;
        },
        1000,
        signal
      );
    } catch (err) {
      out.replaceChildren(errorBox(err));
      button.disabled = false;
    }
  });
  return h(
    "section",
    { class: "panel", "aria-labelledby": "retrain-h" },
    h("h2", { id: "retrain-h" }, "Retrain"),
    h(
      "p",
      {},
      "The bot's model: ",
      inbox.model_id ? link(`/studio/models/${inbox.model_id}`, inbox.model_id) : "none",
      inbox.alias ? ` (alias ${inbox.alias})` : "",
      ". Its dataset: ",
      inbox.dataset_id ? link(`/studio/datasets/${inbox.dataset_id}`, inbox.dataset_id) : "none",
      ". A new model trains with the same backend and parameters, with the feedback examples, and takes the bot's place when it succeeds."
    ),
    button,
    out
  );
}

async function improvePage(main, _params, query, { signal } = {}) {
  const selected = (query.get ? query.get("bot") : query.bot) || "";
  const picker = await botPicker({ selected, onPick: (id) => navigate(id ? `/studio/improve?bot=${id}` : "/studio/improve") });
  main.replaceChildren(pageStyle(), heading("Improve from conversations"), picker.element);
  const botId = picker.selected;
  if (!botId) {
    main.append(h("p", { class: "hint" }, "Choose a bot to see the messages it did not understand."));
    return;
  }
  let inbox;
  try {
    inbox = await api("GET", `/v1/bots/${botId}/improve`, { query: { status: "open" } });
  } catch (err) {
    main.append(errorBox(err));
    return;
  }
  const done = h("ol", { class: "feedback", "data-testid": "feedback" });
  const feedback = h(
    "section",
    { class: "panel", "aria-labelledby": "feedback-h" },
    h("h2", { id: "feedback-h" }, "Feedback examples"),
    h("p", { class: "hint" }, "What you assigned here. Assigned messages are in the dataset with source “feedback”."),
    done
  );
  const groups = h("div", { class: "groups", "data-testid": "groups" });
  const empty = () => h("p", { class: "empty", "data-testid": "inbox-empty" }, "Nothing to review: every message was understood, or has been handled.");
  function onDone(card, itemIds, what, result) {
    const ids = itemIds.map(String);
    const texts = [...card.querySelectorAll("li.item")].filter((li) => ids.includes(li.querySelector("input").value)).map((li) => li.querySelector("q").textContent);
    for (const text of texts) done.append(h("li", {}, h("q", {}, text), ` ${what}`));
    const added = result && typeof result.added === "number" ? `${result.added} example(s) added` : what;
    toast(added, "success");
    const left = [...card.querySelectorAll("li.item")].filter((li) => !ids.includes(li.querySelector("input").value));
    if (left.length) {
      for (const li of card.querySelectorAll("li.item")) if (ids.includes(li.querySelector("input").value)) li.remove();
    } else {
      card.remove();
      const next = groups.querySelector("article button");
      if (next) next.focus();
    }
    if (!groups.children.length) groups.replaceChildren(empty());
  }
  if (inbox.groups.length) {
    groups.append(...inbox.groups.map((g) => groupCard(botId, g, inbox.intents || [], onDone)));
  } else {
    groups.append(empty());
  }
  const total = inbox.groups.reduce((n, g) => n + g.size, 0);
  main.append(
    h("p", { class: "hint" }, `${total} message(s) in ${inbox.groups.length} group(s) to review.`),
    h(
      "div",
      { class: "improve-grid" },
      h("section", { "aria-labelledby": "review-h" }, h("h2", { id: "review-h" }, "Messages to review"), groups),
      h("div", { class: "side" }, feedback, retrainPanel(botId, inbox, signal))
    )
  );
}

register({ path: "/improve", title: "Improve", nav: "Improve", roles: ["admin", "builder"], render: improvePage });

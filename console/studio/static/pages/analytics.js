/**
 * Parley Studio: analytics. A bot (or all bots), a date range and a granularity give the
 * server's charts (`/v1/analytics/plots/*.svg`: conversations and messages per period; the
 * containment, handoff and fallback rates; top intents; channels) and the numbers behind them
 * (`GET /v1/analytics`) as tables. The choice lives in the URL, so a view can be shared.
 */
import { api, chartImg, errorBox, h, heading, navigate, percent, register, table } from "../studio.js";
import { botPicker, pageStyle, scrolling } from "./bots.js";

const GRANULARITIES = ["hour", "day", "week"];
const CHARTS = [
  ["conversations", "Conversations and messages per period"],
  ["rates", "Containment, handoff and fallback rates per period"],
  ["top-intents", "Top intents"],
  ["channels", "Conversations per channel"],
];

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function number(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString();
}

function totalsList(totals) {
  const items = [
    ["Conversations", number(totals.conversations)],
    ["Messages", number(totals.messages)],
    ["Contained (ended without a person)", `${number(totals.contained)} · ${percent(totals.containment_rate)}`],
    ["Handoffs", `${number(totals.handoffs)} · ${percent(totals.handoff_rate)}`],
    ["Fallbacks", `${number(totals.fallbacks)} · ${percent(totals.fallback_rate)}`],
    ["Average confidence", totals.average_confidence === null || totals.average_confidence === undefined ? "—" : totals.average_confidence.toFixed(2)],
  ];
  return h(
    "dl",
    { class: "totals", "data-testid": "totals" },
    ...items.flatMap(([k, v]) => [h("div", { class: "total" }, h("dt", {}, k), h("dd", {}, v))])
  );
}

function rateColumns() {
  return [
    { key: "conversations", label: "Conversations", numeric: true },
    { key: "messages", label: "Messages", numeric: true },
    { key: "handoffs", label: "Handoffs", numeric: true },
    { key: "fallbacks", label: "Fallbacks", numeric: true },
    { key: "containment_rate", label: "Containment", numeric: true, render: (r) => percent(r.containment_rate) },
  ];
}

async function analyticsPage(main, _params, query) {
  const get = (name) => (query.get ? query.get(name) : query[name]) || "";
  const today = new Date();
  const monthAgo = new Date(today.getTime() - 29 * 86400000);
  const choice = {
    bot: get("bot"),
    from: get("from") || isoDay(monthAgo),
    to: get("to") || isoDay(today),
    granularity: GRANULARITIES.includes(get("granularity")) ? get("granularity") : "day",
  };
  const picker = await botPicker({ selected: choice.bot, allowAll: true, onPick: () => {} });
  const from = h("input", { type: "date", id: "from", name: "from", value: choice.from, required: "" });
  const to = h("input", { type: "date", id: "to", name: "to", value: choice.to, required: "" });
  const granularity = h("select", { id: "granularity", name: "granularity" }, ...GRANULARITIES.map((g) => h("option", { value: g }, g)));
  granularity.value = choice.granularity;
  const form = h(
    "form",
    { class: "inline-form filters", "data-testid": "analytics-filters" },
    picker.element,
    h("div", { class: "field" }, h("label", { for: "from" }, "From"), from),
    h("div", { class: "field" }, h("label", { for: "to" }, "To"), to),
    h("div", { class: "field" }, h("label", { for: "granularity" }, "Per"), granularity),
    h("button", { type: "submit", class: "btn btn-primary" }, "Show")
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const select = picker.element.querySelector("select");
    const params = new URLSearchParams({ from: from.value, to: to.value, granularity: granularity.value });
    if (select.value) params.set("bot", select.value);
    navigate(`/studio/analytics?${params}`);
  });
  const body = h("div", { "aria-live": "polite", "data-testid": "analytics" });
  main.replaceChildren(pageStyle(), heading("Analytics"), form, body);

  const apiQuery = { from: choice.from, to: choice.to, granularity: choice.granularity };
  if (choice.bot) apiQuery.bot_id = choice.bot;
  let data;
  try {
    data = await api("GET", "/v1/analytics", { query: apiQuery });
  } catch (err) {
    body.replaceChildren(errorBox(err));
    return;
  }
  const qs = new URLSearchParams(apiQuery).toString();
  const scope = choice.bot ? (picker.bots.find((b) => b.id === choice.bot) || { name: choice.bot }).name : "all bots";
  body.replaceChildren(
    h("p", { class: "hint" }, `${scope}, ${choice.from} to ${choice.to} (UTC), per ${data.granularity}.`),
    totalsList(data.totals),
    h(
      "div",
      { class: "charts" },
      ...CHARTS.map(([kind, alt]) => chartImg(`/v1/analytics/plots/${kind}.svg?${qs}`, `${alt} (${scope}, ${choice.from} to ${choice.to})`))
    ),
    h(
      "div",
      { class: "bot-grid" },
      h(
        "section",
        { class: "panel", "aria-labelledby": "intents-h" },
        h("h2", { id: "intents-h" }, "Top intents"),
        data.top_intents.length
          ? scrolling(table(
              [
                { key: "intent", label: "Intent" },
                { key: "count", label: "Messages", numeric: true },
              ],
              data.top_intents,
              { sortable: true, caption: "Intents the bot understood, most frequent first" }
            ))
          : h("p", { class: "empty" }, "No messages understood in this period.")
      ),
      h(
        "section",
        { class: "panel", "aria-labelledby": "channels-h" },
        h("h2", { id: "channels-h" }, "Channels"),
        data.channels.length
          ? scrolling(table([{ key: "channel", label: "Channel" }, ...rateColumns()], data.channels, { sortable: true, caption: "Per channel" }))
          : h("p", { class: "empty" }, "No conversations in this period.")
      )
    ),
    h(
      "details",
      { class: "panel" },
      h("summary", {}, `Per ${data.granularity}: the numbers behind the charts`),
      scrolling(table(
        [
          { key: "period", label: "Period" },
          ...rateColumns(),
          { key: "handoff_rate", label: "Handoff rate", numeric: true, render: (r) => percent(r.handoff_rate) },
          { key: "fallback_rate", label: "Fallback rate", numeric: true, render: (r) => percent(r.fallback_rate) },
        ],
        data.series,
        { sortable: true, caption: `Per ${data.granularity}` }
      ))
    )
  );
}

register({ path: "/analytics", title: "Analytics", nav: "Analytics", roles: ["admin", "builder"], render: analyticsPage });

/**
 * Parley Studio: channels. Pick a bot, see its channels (webhook URL to copy, how the
 * provider's registration went, register again, delete), and connect a new one with a form
 * built from the channel type's config schema (`GET /v1/channel-types`): secret fields are
 * password inputs, sent once and never shown back. The provider's setup steps are listed
 * beside the form. The built-in web chat is shown too: its embed snippet and allowed origins.
 */
import { api, codeBlock, confirmAction, copyButton, errorBox, h, heading, link, navigate, register, table, toast } from "../studio.js";
import { botPicker, pageStyle, scrolling } from "./bots.js";


// ------------------------------------------------------------------ schema -> form

/** The JSON Schema of one property with `anyOf: [X, null]` (an optional field) resolved. */
function resolve(prop, defs) {
  let p = prop;
  if (p.$ref) p = { ...defs[p.$ref.split("/").pop()], ...p };
  if (Array.isArray(p.anyOf)) {
    const real = p.anyOf.filter((s) => s.type !== "null");
    if (real.length === 1) p = { ...resolve(real[0], defs), ...p, anyOf: undefined, nullable: true };
  }
  return p;
}

function label(name, prop) {
  return prop.title || name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

/** One labelled control for a config property; returns {element, read(), input}. */
function control(name, prop, required, defs) {
  const p = resolve(prop, defs);
  const id = `cfg-${name}`;
  const helpId = `${id}-help`;
  const secret = p.writeOnly === true || p.format === "password";
  let input;
  let read;
  if (Array.isArray(p.enum)) {
    input = h("select", { id, name });
    if (!required) input.append(h("option", { value: "" }, "(default)"));
    for (const v of p.enum) input.append(h("option", { value: String(v) }, String(v)));
    if (p.default !== undefined && p.default !== null) input.value = String(p.default);
    read = () => (input.value === "" ? undefined : p.enum.find((v) => String(v) === input.value));
  } else if (p.type === "boolean") {
    input = h("input", { id, name, type: "checkbox" });
    input.checked = p.default === true;
    read = () => input.checked;
  } else if (p.type === "integer" || p.type === "number") {
    input = h("input", { id, name, type: "number", step: p.type === "integer" ? "1" : "any" });
    if (p.minimum !== undefined) input.min = String(p.minimum);
    if (p.maximum !== undefined) input.max = String(p.maximum);
    if (p.default !== undefined && p.default !== null) input.value = String(p.default);
    read = () => (input.value === "" ? undefined : Number(input.value));
  } else if (p.type === "string" || secret) {
    input = h("input", {
      id,
      name,
      type: secret ? "password" : p.format === "uri" ? "url" : "text",
      autocomplete: secret ? "new-password" : "off",
      spellcheck: "false",
    });
    if (!secret && typeof p.default === "string") input.value = p.default;
    if (p.maxLength) input.maxLength = p.maxLength;
    read = () => (input.value === "" ? undefined : input.value);
  } else {
    // lists and objects: JSON
    input = h("textarea", { id, name, class: "code code-small", spellcheck: "false", rows: "3" });
    if (p.default !== undefined && p.default !== null) input.value = JSON.stringify(p.default);
    read = () => {
      if (input.value.trim() === "") return undefined;
      try {
        return JSON.parse(input.value);
      } catch {
        throw new Error(`${label(name, p)}: not valid JSON`);
      }
    };
  }
  if (required) {
    input.required = true;
    input.setAttribute("aria-required", "true");
  }
  const help = [p.description || "", secret ? "Secret: stored encrypted, never shown again." : ""].filter(Boolean).join(" ");
  if (help) input.setAttribute("aria-describedby", helpId);
  const element = h(
    "div",
    { class: p.type === "boolean" ? "field field-check" : "field", "data-field": name },
    h("label", { for: id }, label(name, p), required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : ""),
    input,
    help ? h("p", { class: "help", id: helpId }, help) : ""
  );
  if (p.type === "boolean") element.insertBefore(input, element.firstChild);
  return { element, read, input, secret };
}

function setupSteps(type, webhookUrl, botId) {
  const fill = (s) => {
    let out = webhookUrl ? s.replaceAll("{webhook_url}", webhookUrl) : s;
    if (botId) out = out.replaceAll("{bot_id}", botId);
    return out;
  };
  const steps = (type.setup_steps || []).map(fill);
  return h(
    "div",
    { class: "setup", "data-testid": "setup-steps" },
    h("h3", {}, `Setting up ${type.title || type.type}`),
    steps.length ? h("ol", {}, ...steps.map((s) => h("li", {}, s))) : h("p", { class: "hint" }, "No setup steps given."),
    /^https?:\/\//.test(type.docs_url || "") ? h("p", {}, h("a", { href: type.docs_url, rel: "noopener noreferrer", target: "_blank" }, "The provider's documentation")) : ""
  );
}

function connectForm(botId, types, after, chosen) {
  const typeSelect = h("select", { id: "channel-type", name: "type", "data-testid": "channel-type" });
  for (const t of types) typeSelect.append(h("option", { value: t.type }, t.title || t.type));
  if (chosen && types.some((t) => t.type === chosen)) typeSelect.value = chosen;
  const fields = h("div", { class: "fields" });
  const steps = h("div", {});
  const out = h("div", { "aria-live": "polite" });
  let controls = {};
  function build() {
    const type = types.find((t) => t.type === typeSelect.value);
    const schema = type.config_schema || {};
    const required = new Set(schema.required || []);
    controls = {};
    fields.replaceChildren();
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      controls[name] = control(name, prop, required.has(name), schema.$defs || schema.definitions || {});
      fields.append(controls[name].element);
    }
    steps.replaceChildren(setupSteps(type, null, botId));
    out.replaceChildren();
  }
  typeSelect.addEventListener("change", build);
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "connect" }, "Connect");
  const form = h(
    "form",
    { class: "stack", novalidate: "" },
    h("div", { class: "field" }, h("label", { for: "channel-type" }, "Channel type"), typeSelect),
    fields,
    h("div", { class: "actions" }, submit),
    out
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const el of fields.querySelectorAll(".field.invalid")) el.classList.remove("invalid");
    for (const el of fields.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const config = {};
    try {
      for (const [name, c] of Object.entries(controls)) {
        const value = c.read();
        if (value !== undefined) config[name] = value;
      }
    } catch (err) {
      out.replaceChildren(h("p", { class: "bad", role: "alert" }, err.message));
      return;
    }
    submit.disabled = true;
    try {
      const channel = await api("POST", `/v1/bots/${botId}/channels`, { json: { type: typeSelect.value, config } });
      for (const c of Object.values(controls)) if (c.secret) c.input.value = "";
      toast(`Connected ${channel.type}`, "success");
      after(channel);
    } catch (err) {
      // the fields the answer names: in its details, or in its message ("config.account_sid: ...")
      const named = (err.details || []).map((d) => String(d.field || d.path || "").split(".").filter((p) => p !== "config" && p !== "body")[0]);
      for (const name of Object.keys(controls)) {
        if (named.includes(name) || String(err.message).includes(`config.${name}`)) {
          fields.querySelector(`[data-field="${CSS_ESCAPE(name)}"]`).classList.add("invalid");
          controls[name].input.setAttribute("aria-invalid", "true");
        }
      }
      out.replaceChildren(errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  build();
  return h("div", { class: "connect-grid" }, form, steps);
}

const CSS_ESCAPE = (s) => (window.CSS && window.CSS.escape ? window.CSS.escape(s) : s.replace(/[^\w-]/g, "\\$&"));

// ------------------------------------------------------------------ the channels of a bot

function registration(channel) {
  const r = channel.registration;
  if (!r) return "—";
  const text = { registered: "registered with the provider", failed: "registration failed", not_needed: "give the URL to the provider" }[r.status] || r.status;
  return h("span", { class: `badge reg-${r.status}` }, text, r.message ? `: ${r.message}` : "");
}

function channelTable(botId, channels, types, refresh) {
  const title = (t) => (types.find((x) => x.type === t) || {}).title || t;
  return table(
    [
      { key: "type", label: "Channel", render: (c) => title(c.type) },
      {
        key: "webhook_url",
        label: "Webhook URL",
        render: (c) => h("span", { class: "webhook" }, h("code", { "data-testid": "webhook-url" }, c.webhook_url), " ", copyButton(c.webhook_url, "Copy the webhook URL")),
      },
      { key: "registration", label: "Registration", render: registration },
      {
        key: "config",
        label: "Settings (secrets hidden)",
        render: (c) => h("code", { class: "config" }, JSON.stringify(c.config)),
      },
      {
        key: "actions",
        label: "Actions",
        render: (c) => {
          const again = h("button", { type: "button", class: "btn btn-small" }, "Register again");
          again.addEventListener("click", async () => {
            try {
              const r = await api("POST", `/v1/bots/${botId}/channels/${c.id}/register`);
              toast(`Registration: ${r.registration ? r.registration.status : "unknown"}`, r.registration && r.registration.status === "failed" ? "error" : "success");
              refresh();
            } catch (err) {
              toast(err.message, "error");
            }
          });
          const remove = h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `Delete the ${c.type} channel ${c.id}` }, "Delete");
          remove.addEventListener("click", async () => {
            const sure = await confirmAction(`Delete the ${title(c.type)} channel? The provider's messages will no longer reach the bot.`, { confirm: "Delete" });
            if (!sure) return;
            try {
              await api("DELETE", `/v1/bots/${botId}/channels/${c.id}`);
              toast("Channel deleted", "success");
              refresh();
            } catch (err) {
              toast(err.message, "error");
            }
          });
          return h("span", { class: "row-actions" }, again, " ", remove);
        },
      },
    ],
    channels,
    { caption: "Connected channels" }
  );
}

function webchatPanel(bot, builtin) {
  const snippet = `<script src="${location.origin}/widget.js" data-bot="${bot.id}" data-key="${bot.widget_key}" async></script>`;
  const origins = bot.allowed_origins || [];
  return h(
    "section",
    { class: "panel", "aria-labelledby": "webchat-h" },
    h("h2", { id: "webchat-h" }, "Built in: web chat and REST"),
    h("p", {}, "Every bot has these. Add the web chat widget to a page with one tag:"),
    codeBlock(snippet, "html"),
    h(
      "p",
      { class: "hint" },
      origins.length ? `Pages allowed to embed it: ${origins.join(", ")}. Change them under ` : "No page may embed it yet: list them under ",
      h("code", {}, "allowed_origins"),
      " in the ",
      link(`/studio/bots/${bot.id}`, "bot's definition"),
      "."
    ),
    ...builtin.map((t) => setupSteps(t, null, bot.id))
  );
}

async function channelsPage(main, _params, query) {
  const selected = query.get ? query.get("bot") || "" : query.bot || "";
  const picker = await botPicker({ selected, onPick: (id) => navigate(id ? `/studio/channels?bot=${id}` : "/studio/channels") });
  main.replaceChildren(pageStyle(), heading("Channels"), picker.element);
  const botId = picker.selected;
  if (!botId) {
    main.append(h("p", { class: "hint" }, "Choose a bot to see and connect its channels."));
    return;
  }
  const body = h("div", { "data-testid": "channels" });
  main.append(body);
  const [bot, { channel_types: allTypes }] = await Promise.all([api("GET", `/v1/bots/${botId}`), api("GET", "/v1/channel-types")]);
  const types = allTypes.filter((t) => !t.builtin); // web chat and REST: every bot has them
  const builtin = allTypes.filter((t) => t.builtin);
  async function refresh(created) {
    try {
      const channels = await api("GET", `/v1/bots/${botId}/channels`);
      const list = h(
        "section",
        { class: "panel", "aria-labelledby": "connected-h" },
        h("h2", { id: "connected-h" }, `${bot.name}'s channels`),
        channels.length ? scrolling(channelTable(botId, channels, types, () => refresh())) : h("p", { class: "empty" }, "No channels yet: connect one below.")
      );
      const parts = [list];
      if (created) {
        const type = types.find((t) => t.type === created.type);
        parts.push(
          h(
            "section",
            { class: "panel created", "aria-labelledby": "created-h", "data-testid": "created" },
            h("h2", { id: "created-h" }, `Next: tell ${type ? type.title || type.type : created.type} about the webhook`),
            h("p", {}, h("code", {}, created.webhook_url), " ", copyButton(created.webhook_url, "Copy the webhook URL")),
            type ? setupSteps(type, created.webhook_url, botId) : ""
          )
        );
      }
      parts.push(
        h("section", { class: "panel", "aria-labelledby": "connect-h" }, h("h2", { id: "connect-h" }, "Connect a channel"), connectForm(botId, types, (c) => refresh(c), created && created.type)),
        webchatPanel(bot, builtin)
      );
      body.replaceChildren(...parts);
    } catch (err) {
      body.replaceChildren(errorBox(err));
    }
  }
  await refresh(null);
}

register({ path: "/channels", title: "Channels", nav: "Channels", roles: ["admin", "builder"], render: channelsPage });

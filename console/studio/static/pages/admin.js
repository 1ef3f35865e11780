// Admin (admin role): API keys (create with scopes, the secret shown once with a copy button,
// revoke), users (role, disable) and invites (create → a link to send, pending, revoke). Others
// who open the page are told what the API answered (403).

import { api, badge, confirmAction, copyButton, errorBox, field, h, heading, register, state, table, toast, when } from "../studio.js";

const SCOPES = [
  { name: "predict", help: "call models: predict, parse, OCR" },
  { name: "train", help: "datasets, training, models, bots and channels" },
  { name: "admin", help: "everything, including keys and users" },
];
const ROLES = [
  { value: "builder", label: "builder — datasets, models, bots, channels" },
  { value: "admin", label: "admin — everything, keys and users too" },
  { value: "agent", label: "agent — the agents' console" },
  { value: "supervisor", label: "supervisor — the agents' console, every agent's load" },
];

async function adminPage(main, params, query, { signal }) {
  // the keys first: a 403 here is the page's answer for everyone who is not an admin
  const keys = await api("GET", "/keys", { signal });
  main.append(heading("Admin"), h("p", { class: "muted" }, "API keys and the people of your tenant."));
  const keysBox = h("section", { class: "card", "aria-labelledby": "keys-title", "data-testid": "keys" });
  const usersBox = h("section", { class: "card", "aria-labelledby": "users-title", "data-testid": "users" });
  const invitesBox = h("section", { class: "card", "aria-labelledby": "invites-title", "data-testid": "invites" });
  main.append(keysBox, usersBox, invitesBox);
  renderKeys(keysBox, keys);
  await Promise.all([renderUsers(usersBox, signal), renderInvites(invitesBox, signal)]);
}

// --- API keys ---------------------------------------------------------------------------------

function renderKeys(box, keys) {
  const reload = async () => renderKeys(box, await api("GET", "/keys"));
  const name = field({ label: "Name", name: "name", placeholder: "e.g. checkout service", "data-testid": "key-name" });
  const scopes = SCOPES.map((s) => field({ label: s.name, name: "scopes", type: "checkbox", value: s.name === "predict", help: s.help, "data-testid": `key-scope-${s.name}` }));
  const secret = h("div", { "data-testid": "key-secret-box", "aria-live": "polite" });
  const error = h("div");
  const form = h(
    "form",
    {
      novalidate: true,
      "data-testid": "key-form",
      on: {
        submit: async (event) => {
          event.preventDefault();
          error.replaceChildren();
          const chosen = SCOPES.filter((s, i) => scopes[i].control.checked).map((s) => s.name);
          if (!chosen.length) return error.append(errorBox({ message: "Tick at least one scope." }));
          try {
            const created = await api("POST", "/keys", { json: { name: name.control.value.trim(), scopes: chosen } });
            await reload();
            box.querySelector("[data-testid=key-secret-box]").replaceChildren(
              h(
                "div",
                { class: "secret", role: "status" },
                h("p", null, h("strong", null, `The key ${created.name || created.prefix}`), " — copy it now: it is shown only this once."),
                h("p", null, h("code", { "data-testid": "key-secret" }, created.api_key), " ", copyButton(created.api_key, "Copy key")),
              ),
            );
          } catch (err) {
            error.append(errorBox(err));
          }
        },
      },
    },
    h("h3", null, "Create a key"),
    name,
    h("fieldset", null, h("legend", null, "Scopes"), scopes),
    error,
    h("button", { type: "submit", class: "btn btn-primary", "data-testid": "key-create" }, "Create key"),
  );
  box.replaceChildren(
    h("h2", { id: "keys-title" }, "API keys"),
    secret,
    table(
      [
        { key: "name", label: "Name" },
        { key: "prefix", label: "Starts with", render: (k) => h("code", null, k.prefix) },
        { key: "scopes", label: "Scopes", render: (k) => k.scopes.join(", ") },
        { key: "created_at", label: "Created", render: (k) => when(k.created_at) },
        { key: "revoked_at", label: "State", render: (k) => (k.revoked_at ? h("span", null, badge("revoked"), ` ${when(k.revoked_at)}`) : badge("active")) },
        {
          key: "id",
          label: "",
          render: (k) =>
            k.revoked_at
              ? ""
              : h(
                  "button",
                  {
                    type: "button",
                    class: "btn btn-small btn-danger",
                    "aria-label": `Revoke ${k.name || k.prefix}`,
                    "data-testid": "key-revoke",
                    on: {
                      click: async () => {
                        if (!(await confirmAction(`Revoke the key ${k.name || k.prefix}? Programs using it stop working at once.`, { confirm: "Revoke key" }))) return;
                        try {
                          await api("DELETE", `/keys/${encodeURIComponent(k.id)}`);
                          toast("Key revoked.", "success");
                          await reload();
                        } catch (err) {
                          toast(err.message, "error");
                        }
                      },
                    },
                  },
                  "Revoke",
                ),
        },
      ],
      keys,
      { caption: "Keys of your tenant", testid: "keys-table" },
    ),
    form,
  );
}

// --- users ------------------------------------------------------------------------------------

async function renderUsers(box, signal) {
  const { users } = await api("GET", "/users", { signal });
  const reload = () => renderUsers(box).catch((err) => toast(err.message, "error"));
  const change = async (user, patch, what) => {
    try {
      await api("PATCH", `/users/${encodeURIComponent(user.id)}`, { json: patch });
      toast(`${user.username}: ${what}.`, "success");
    } catch (err) {
      toast(err.message, "error");
    }
    reload();
  };
  box.replaceChildren(
    h("h2", { id: "users-title" }, "Users"),
    table(
      [
        { key: "username", label: "Username" },
        { key: "name", label: "Name" },
        {
          key: "role",
          label: "Role",
          render: (u) => {
            const select = h("select", { "aria-label": `Role of ${u.username}`, "data-testid": "user-role" }, ROLES.map((r) => h("option", { value: r.value, selected: r.value === u.role }, r.value)));
            select.addEventListener("change", () => change(u, { role: select.value }, `role is now ${select.value}`));
            return select;
          },
        },
        { key: "disabled", label: "State", render: (u) => badge(u.disabled ? "disabled" : "active") },
        { key: "created_at", label: "Since", render: (u) => when(u.created_at) },
        {
          key: "id",
          label: "",
          render: (u) =>
            state.me && state.me.user.id === u.id
              ? h("span", { class: "muted" }, "you")
              : h(
                  "button",
                  {
                    type: "button",
                    class: ["btn", "btn-small", u.disabled ? null : "btn-danger"],
                    "aria-label": `${u.disabled ? "Enable" : "Disable"} ${u.username}`,
                    "data-testid": "user-disable",
                    on: {
                      click: async () => {
                        if (!u.disabled && !(await confirmAction(`Disable ${u.username}? They are signed out and cannot sign in until enabled again.`, { confirm: "Disable" }))) return;
                        change(u, { disabled: !u.disabled }, u.disabled ? "enabled" : "disabled");
                      },
                    },
                  },
                  u.disabled ? "Enable" : "Disable",
                ),
        },
      ],
      users,
      { sortable: true, caption: "People who sign in to your tenant", testid: "users-table" },
    ),
  );
}

// --- invites ----------------------------------------------------------------------------------

async function renderInvites(box, signal) {
  const { invites } = await api("GET", "/users/invites", { signal });
  const reload = () => renderInvites(box).catch((err) => toast(err.message, "error"));
  const username = field({ label: "Username", name: "username", required: true, autocomplete: "off", "data-testid": "invite-username" });
  const name = field({ label: "Name", name: "name", "data-testid": "invite-fullname" });
  const role = field({ label: "Role", name: "role", type: "select", value: "builder", options: ROLES, "data-testid": "invite-role" });
  const result = h("div", { "aria-live": "polite", "data-testid": "invite-result" });
  const error = h("div");
  box.replaceChildren(
    h("h2", { id: "invites-title" }, "Invites"),
    h(
      "form",
      {
        novalidate: true,
        "data-testid": "invite-create-form",
        on: {
          submit: async (event) => {
            event.preventDefault();
            error.replaceChildren();
            const body = { username: username.control.value.trim(), role: role.control.value };
            if (name.control.value.trim()) body.name = name.control.value.trim();
            if (!body.username) return error.append(errorBox({ message: "Enter the username the person will sign in with." }));
            try {
              const created = await api("POST", "/users/invites", { json: body });
              const url = new URL(created.url, location.origin).href;
              await reload();
              box.querySelector("[data-testid=invite-result]").replaceChildren(
                h(
                  "div",
                  { class: "secret", role: "status" },
                  h("p", null, `Send this link to ${created.invite.username}; it is shown only now and works until ${when(created.invite.expires_at)}.`),
                  h("p", null, h("code", { "data-testid": "invite-link" }, url), " ", copyButton(url, "Copy link")),
                ),
              );
            } catch (err) {
              error.append(errorBox(err));
            }
          },
        },
      },
      h("h3", null, "Invite someone"),
      h("div", { class: "form-row" }, username, name, role),
      error,
      h("button", { type: "submit", class: "btn btn-primary", "data-testid": "invite-create" }, "Create invite"),
    ),
    result,
    table(
      [
        { key: "username", label: "Username" },
        { key: "name", label: "Name" },
        { key: "role", label: "Role" },
        { key: "expires_at", label: "Expires", render: (i) => when(i.expires_at) },
        {
          key: "id",
          label: "",
          render: (i) =>
            h(
              "button",
              {
                type: "button",
                class: "btn btn-small btn-danger",
                "aria-label": `Revoke the invite of ${i.username}`,
                "data-testid": "invite-revoke",
                on: {
                  click: async () => {
                    if (!(await confirmAction(`Revoke the invite of ${i.username}? Their link stops working.`, { confirm: "Revoke invite" }))) return;
                    try {
                      await api("DELETE", `/users/invites/${encodeURIComponent(i.id)}`);
                      toast("Invite revoked.", "success");
                    } catch (err) {
                      toast(err.message, "error");
                    }
                    reload();
                  },
                },
              },
              "Revoke",
            ),
        },
      ],
      invites,
      { caption: "Pending invites", empty: "No pending invites.", testid: "invites-table" },
    ),
  );
}

register({ path: "/admin", title: "Admin", nav: "Admin", roles: ["admin"], render: adminPage });

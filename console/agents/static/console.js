/*! Parley agents' console. One file, no dependencies, no build step (ES2019).
 *
 * Served by the gateway at /console/agents under a strict Content-Security-Policy (no inline
 * scripts or styles). It speaks the agents' API under /v1/agent (cookie session) and listens on
 * the /v1/agent/ws websocket for inbox changes and new turns.
 *
 * Everything customers, bots and agents write is inserted as text nodes; links and images are
 * only ever http(s) URLs checked by safeUrl(). Nothing here uses innerHTML.
 */
(function () {
  "use strict";

  var API = "/v1/agent";
  var WAIT_TICK_MS = 5000;
  var PING_MS = 25000;
  var BACKOFF_FIRST_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  var REFRESH_DEBOUNCE_MS = 150;
  var MAX_UPLOAD_BYTES = 10 * 1024 * 1024;
  var MAX_QUICK_REPLIES = 10;
  var TOAST_MS = 8000;
  var ID_RE = /^[A-Za-z0-9_-]{1,100}$/;
  var URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
  var CHANNELS = {
    webchat: "Web chat",
    rest: "REST",
    slack: "Slack",
    telegram: "Telegram",
    twilio: "SMS / WhatsApp",
    messenger: "Messenger",
  };
  var STATUSES = {
    bot: "with the bot",
    waiting_for_agent: "waiting for an agent",
    with_agent: "with an agent",
    closed: "closed",
  };
  var FROM = { customer: "Customer", bot: "Bot", agent: "Agent", note: "Internal note", system: "" };
  var SHELL_TITLE = document.title;

  var state = {
    me: null,
    csrf: null, // the session's CSRF token: sent in X-CSRF-Token on every write
    inbox: { waiting: [], mine: [], others: null },
    agents: [],
    openId: null,
    conv: null,
    turnIds: {},
    atBottom: true,
    loadSeq: 0,
    ws: null,
    backoff: BACKOFF_FIRST_MS,
    timers: {},
  };

  // ---------------------------------------------------------------- small helpers

  function $(id) {
    return document.getElementById(id);
  }

  /** An element: attrs may hold class, text, testid and plain attributes (null skips one);
   * children are nodes or strings (inserted as text). */
  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = String(v);
      else if (k === "testid") el.setAttribute("data-testid", v);
      else if (/^on/i.test(k)) throw new Error("h(): attach handlers with addEventListener");
      else el.setAttribute(k, v === true ? "" : String(v));
    });
    append(el, children);
    return el;
  }

  var SENTIMENTS = { positive: "Positive", neutral: "Neutral", negative: "Negative" };

  /** A sentiment badge (prebuilt-sentiment): the word itself, never colour alone, after a
   * hidden "Sentiment:" for screen readers; the confidence in the title. Null for no sentiment. */
  function sentimentBadge(label, score, testid) {
    if (typeof label !== "string" || !Object.prototype.hasOwnProperty.call(SENTIMENTS, label)) return null;
    var title = "Customer sentiment: " + label;
    if (typeof score === "number") title += " (confidence " + Math.round(score * 100) + "%)";
    return h("span", { class: "badge sentiment sentiment-" + label, testid: testid, "data-sentiment": label, title: title }, [
      h("span", { class: "visually-hidden" }, "Sentiment: "),
      SENTIMENTS[label],
    ]);
  }

  function append(el, children) {
    (Array.isArray(children) ? children : [children]).forEach(function (c) {
      if (c === null || c === undefined || c === false || c === "") return;
      el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    });
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  /** The URL as an absolute http(s) address, or null for anything else (javascript:, data:, ...). */
  function safeUrl(value) {
    if (typeof value !== "string" || !value) return null;
    var url;
    try {
      url = new URL(value, location.href);
    } catch (e) {
      return null;
    }
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  }

  /** Text as text nodes, with http(s) URLs as links that open in a new tab. */
  function textWithLinks(text) {
    var frag = document.createDocumentFragment();
    var last = 0;
    var match;
    URL_RE.lastIndex = 0;
    while ((match = URL_RE.exec(text))) {
      var raw = match[0].replace(/[.,;:!?)\]}]+$/, "");
      var href = safeUrl(raw);
      if (match.index > last) frag.appendChild(document.createTextNode(text.slice(last, match.index)));
      frag.appendChild(
        href ? h("a", { href: href, target: "_blank", rel: "noopener noreferrer nofollow" }, raw) : document.createTextNode(raw)
      );
      last = match.index + raw.length;
      URL_RE.lastIndex = last;
    }
    if (last < text.length) frag.appendChild(document.createTextNode(text.slice(last)));
    return frag;
  }

  function path(id) {
    return "/conversations/" + encodeURIComponent(id);
  }

  function since(seconds) {
    var s = Math.max(0, Math.floor(Date.now() / 1000 - seconds));
    if (s < 10) return "just now";
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min";
    var hr = Math.floor(m / 60);
    if (hr < 24) return hr + " h " + (m % 60) + " min";
    return Math.floor(hr / 24) + " d " + (hr % 24) + " h";
  }

  function clock(seconds) {
    if (typeof seconds !== "number") return "";
    var d = new Date(seconds * 1000);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function debounce(name, fn, ms) {
    clearTimeout(state.timers[name]);
    state.timers[name] = setTimeout(fn, ms === undefined ? REFRESH_DEBOUNCE_MS : ms);
  }

  function channelName(channel) {
    return CHANNELS[channel] || String(channel || "unknown channel");
  }

  function customerName(item) {
    return item.sender_id ? String(item.sender_id) : "Customer";
  }

  // ---------------------------------------------------------------- the API

  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  /** Call the agents' API; resolves with the JSON body (null for 204), rejects with ApiError. */
  function api(method, route, body) {
    var init = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET" && state.csrf) init.headers["X-CSRF-Token"] = state.csrf;
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(API + route, init).then(
      function (response) {
        if (response.status === 204) return null;
        return response.text().then(function (raw) {
          var data = null;
          try {
            data = raw ? JSON.parse(raw) : null;
          } catch (e) {
            data = null;
          }
          if (!response.ok) {
            var message = data && typeof data.message === "string" ? data.message : "The server answered " + response.status + ".";
            throw new ApiError(response.status, (data && data.error) || "http_" + response.status, message);
          }
          return data;
        });
      },
      function () {
        throw new ApiError(0, "network", "Cannot reach the server; check the connection and try again.");
      }
    );
  }

  /** Show an API failure where it belongs; a lost session goes back to the sign-in form. */
  function fail(err, where) {
    if (err && err.status === 401) {
      signedOut("Your session has ended; sign in again.");
      return;
    }
    var message = err && err.message ? err.message : String(err);
    if (!(err instanceof ApiError)) console.error("Parley console:", err);
    if (where) where.textContent = message;
    else toast(message);
  }

  function toast(message) {
    var el = $("toast");
    el.textContent = message;
    el.hidden = false;
    debounce("toast", function () {
      el.hidden = true;
    }, TOAST_MS);
  }

  function announce(message) {
    $("announcer").textContent = message;
  }

  // ---------------------------------------------------------------- sign in and out

  function showLogin(message) {
    $("app-screen").hidden = true;
    $("login-screen").hidden = false;
    $("whoami").hidden = true;
    $("logout").hidden = true;
    $("login-error").textContent = message || "";
    $("login-password").value = "";
    var empty = ["login-tenant", "login-username", "login-password"].filter(function (id) {
      return !$(id).value;
    });
    $(empty[0]).focus();
  }

  function onLoginSubmit(event) {
    event.preventDefault();
    var body = {
      tenant: $("login-tenant").value.trim(),
      username: $("login-username").value.trim(),
      password: $("login-password").value,
    };
    var missing = ["tenant", "username", "password"].filter(function (k) {
      return !body[k];
    });
    if (missing.length) {
      $("login-error").textContent = "Fill in the " + missing.join(", ") + ".";
      return;
    }
    var button = event.target.querySelector("button[type=submit]");
    button.disabled = true;
    $("login-error").textContent = "";
    api("POST", "/login", body)
      .then(function (data) {
        start(data);
      })
      .catch(function (err) {
        $("login-error").textContent = err.message;
        $("login-password").focus();
      })
      .finally(function () {
        button.disabled = false;
      });
  }

  function onLogout() {
    api("POST", "/logout")
      .catch(function () {
        /* the session is forgotten here either way */
      })
      .then(function () {
        signedOut("You are signed out.");
      });
  }

  /** Forget everything about the session (nothing of it stays on screen) and ask to sign in. */
  function signedOut(message) {
    state.me = null;
    state.csrf = null;
    closeSocket();
    Object.keys(state.timers).forEach(function (k) {
      clearTimeout(state.timers[k]);
      clearInterval(state.timers[k]);
    });
    state.timers = {};
    state.inbox = { waiting: [], mine: [], others: null };
    state.agents = [];
    closeConversation();
    renderInbox();
    clear($("agents"));
    document.title = SHELL_TITLE;
    showLogin(message);
  }

  /** Whether the user has a supervisor's rights (supervisors, and admins). */
  function supervises(agent) {
    return agent.role === "supervisor" || agent.role === "admin";
  }

  function start(session) {
    var agent = session.agent;
    state.me = agent;
    state.csrf = session.csrf_token;
    $("login-screen").hidden = true;
    $("app-screen").hidden = false;
    var who = $("whoami");
    who.textContent = (agent.name || agent.username) + (supervises(agent) ? " · " + agent.role : "");
    who.hidden = false;
    $("logout").hidden = false;
    $("supervisor-panel").hidden = !supervises(agent);
    state.timers.tick = setInterval(updateWaits, WAIT_TICK_MS);
    connect();
    refreshInbox();
    if (isSupervisor()) refreshAgents();
    openFromAddress();
  }

  /** ``#c=cv_...`` in the address opens that conversation (a link from a colleague, a reload). */
  function openFromAddress() {
    var wanted = /^#c=([A-Za-z0-9_-]+)$/.exec(location.hash);
    var id = wanted ? wanted[1] : null;
    if (state.me && id && ID_RE.test(id) && id !== state.openId) openConversation(id);
  }

  function isSupervisor() {
    return !!state.me && supervises(state.me);
  }

  // ---------------------------------------------------------------- the inbox

  function refreshInbox() {
    if (!state.me) return Promise.resolve();
    return api("GET", "/inbox")
      .then(function (data) {
        if (!state.me) return;
        var before = state.inbox.waiting.length;
        state.inbox = { waiting: data.waiting || [], mine: data.mine || [], others: data.others || null };
        renderInbox();
        var now = state.inbox.waiting.length;
        if (now > before) announce(now === 1 ? "1 customer is waiting" : now + " customers are waiting");
      })
      .catch(function (err) {
        fail(err);
      });
  }

  function renderInbox() {
    var focused = document.activeElement && document.activeElement.getAttribute("data-id");
    fillList("waiting", state.inbox.waiting);
    fillList("mine", state.inbox.mine);
    $("others-section").hidden = !state.inbox.others;
    if (state.inbox.others) fillList("others", state.inbox.others);
    var waiting = state.inbox.waiting.length;
    document.title = waiting ? "(" + waiting + ") " + SHELL_TITLE : SHELL_TITLE;
    if (focused) {
      var again = document.querySelector('.inbox-open[data-id="' + CSS.escape(focused) + '"]');
      if (again) again.focus();
    }
  }

  function fillList(kind, items) {
    var list = $(kind + "-list");
    clear(list);
    items.forEach(function (item) {
      list.appendChild(inboxItem(item, kind));
    });
    $(kind + "-count").textContent = String(items.length);
    $(kind + "-empty").hidden = items.length > 0;
  }

  function inboxItem(item, kind) {
    var waitingSince = kind === "waiting" && typeof item.waiting_since === "number" ? item.waiting_since : null;
    var wait = waitingSince === null ? null : h("span", { class: "wait", testid: "item-wait", "data-since": waitingSince }, "waiting " + since(waitingSince));
    var button = h(
      "button",
      {
        type: "button",
        class: "inbox-open",
        "data-id": item.id,
        "aria-current": item.id === state.openId ? "true" : null,
      },
      [
        h("span", { class: "item-row" }, [
          h("span", { class: "badge badge-" + String(item.channel || "unknown"), testid: "item-channel" }, channelName(item.channel)),
          h("span", { class: "customer", testid: "item-customer" }, customerName(item)),
          sentimentBadge(item.sentiment, null, "item-sentiment"),
        ]),
        wait || item.handoff_reason
          ? h("span", { class: "item-sub" }, [
              wait,
              item.handoff_reason ? h("span", { class: "reason", testid: "item-reason" }, item.handoff_reason) : null,
            ])
          : null,
        h("span", { class: "last", testid: "item-last" }, item.last_message ? String(item.last_message) : "(no message yet)"),
        kind === "others" && item.assigned_agent_name ? h("span", { class: "reason" }, "held by " + item.assigned_agent_name) : null,
        h("span", { class: "bot-name" }, item.bot_name ? "Bot: " + item.bot_name : null),
      ]
    );
    button.addEventListener("click", function () {
      openConversation(item.id, { focus: true });
    });
    return h("li", { class: "inbox-item", testid: kind + "-item", "data-id": item.id, "data-status": item.status }, [button]);
  }

  function updateWaits() {
    var els = document.querySelectorAll("[data-since]");
    for (var i = 0; i < els.length; i++) {
      var s = Number(els[i].getAttribute("data-since"));
      els[i].textContent = (els[i].getAttribute("data-prefix") || "waiting ") + since(s);
    }
  }

  function markCurrent() {
    var buttons = document.querySelectorAll(".inbox-open");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].getAttribute("data-id") === state.openId) buttons[i].setAttribute("aria-current", "true");
      else buttons[i].removeAttribute("aria-current");
    }
  }

  // ---------------------------------------------------------------- one conversation

  function openConversation(id, opts) {
    if (id !== state.openId) {
      closeConversation();
      state.openId = id;
      $("conv-placeholder").hidden = true;
      $("conv-body").hidden = false;
      $("conv-title").textContent = "Loading…";
      try {
        history.replaceState(null, "", "#c=" + encodeURIComponent(id));
      } catch (e) {
        /* a sandboxed page: the address just does not follow */
      }
    }
    markCurrent();
    if (opts && opts.focus) $("conversation").focus();
    return loadConversation();
  }

  function closeConversation() {
    state.openId = null;
    state.conv = null;
    state.turnIds = {};
    state.atBottom = true;
    state.loadSeq++;
    clear($("transcript"));
    clear($("slots"));
    clear($("last-parse"));
    $("conv-error").textContent = "";
    $("conv-notice").textContent = "";
    $("reply-text").value = "";
    $("reply-quick").value = "";
    $("reply-file").value = "";
    $("note-text").value = "";
    $("reset-flow").checked = false;
    $("conv-body").hidden = true;
    $("conv-placeholder").hidden = false;
    $("context-panel").hidden = true;
    $("reassign").hidden = true;
    markCurrent();
  }

  function loadConversation() {
    var id = state.openId;
    if (!id) return Promise.resolve();
    var seq = ++state.loadSeq;
    return api("GET", path(id))
      .then(function (data) {
        if (id !== state.openId) return;
        (data.transcript || []).forEach(addTurn);
        if (seq !== state.loadSeq) return; // a newer load is on its way
        state.conv = data.conversation;
        renderHeader();
        renderContext(data.slots || {}, data.last_parse || null);
        updateControls();
      })
      .catch(function (err) {
        if (id !== state.openId) return;
        if (err.status === 404) {
          $("conv-title").textContent = "Conversation not found";
          $("conv-meta").textContent = "";
          state.conv = null;
          updateControls();
        }
        fail(err, $("conv-error"));
      });
  }

  function renderHeader() {
    var c = state.conv;
    $("conv-title").textContent = customerName(c) + " · " + channelName(c.channel);
    var meta = $("conv-meta");
    clear(meta);
    var holder = c.assigned_agent_id
      ? c.assigned_agent_id === state.me.id
        ? "held by you"
        : "held by " + (c.assigned_agent_name || "another agent")
      : null;
    var mood = sentimentBadge(c.sentiment, null, "conversation-sentiment");
    append(meta, [
      h("span", { class: "status status-" + c.status, testid: "conversation-status", "data-status": c.status }, STATUSES[c.status] || c.status),
      holder ? " · " + holder : null,
      c.bot_name ? " · bot " + c.bot_name : null,
      c.handoff_reason ? " · " + c.handoff_reason : null,
      mood ? " · " : null,
      mood,
      typeof c.waiting_since === "number" && c.status === "waiting_for_agent"
        ? h("span", { "data-since": c.waiting_since, "data-prefix": " · waiting " }, " · waiting " + since(c.waiting_since))
        : null,
    ]);
  }

  function renderContext(slots, parse) {
    $("context-panel").hidden = false;
    var dl = $("slots");
    clear(dl);
    var names = Object.keys(slots).sort();
    if (!names.length) dl.appendChild(h("dd", { class: "empty" }, "No slots filled."));
    names.forEach(function (name) {
      var value = slots[name];
      var shown = value === null || value === undefined ? "—" : typeof value === "string" ? value : JSON.stringify(value);
      dl.appendChild(h("dt", {}, name));
      dl.appendChild(h("dd", { testid: "slot-" + name }, shown));
    });
    var box = $("last-parse");
    clear(box);
    if (!parse || !parse.intent) {
      box.appendChild(h("p", { class: "empty" }, parse ? "The bot did not read the last message." : "The bot has not read a message yet."));
      return;
    }
    var confidence = typeof parse.intent.confidence === "number" ? Math.round(parse.intent.confidence * 100) + "%" : "?";
    box.appendChild(
      h("p", { class: "intent", testid: "parse-intent" }, [
        h("strong", {}, parse.intent.name ? String(parse.intent.name) : "(no intent)"),
        " " + confidence,
      ])
    );
    var entities = parse.entities || [];
    if (!entities.length) {
      box.appendChild(h("p", { class: "empty" }, "No entities."));
      return;
    }
    box.appendChild(
      h(
        "ul",
        { class: "entities", testid: "parse-entities" },
        entities.map(function (e) {
          var label = e.entity || e.label || "entity";
          var value = e.value !== undefined ? e.value : e.text;
          return h("li", {}, [h("code", {}, String(label)), " ", typeof value === "string" ? value : JSON.stringify(value)]);
        })
      )
    );
  }

  function updateControls() {
    var c = state.conv;
    var me = state.me;
    var mine = !!(c && me && c.assigned_agent_id === me.id);
    var sup = isSupervisor();
    var open = !!c && (c.status === "waiting_for_agent" || c.status === "with_agent");
    var claim = $("claim");
    claim.hidden = !(open && !mine);
    claim.textContent = sup && c && c.assigned_agent_id && !mine ? "Take over" : "Claim";
    claim.disabled = false;
    document.querySelector(".handback-group").hidden = !(open && (mine || sup));
    $("handback").disabled = false;
    $("close").hidden = !(c && c.status !== "closed" && (mine || sup));
    $("close").disabled = false;
    var canReply = mine && !!c && c.status === "with_agent";
    ["reply-text", "reply-quick", "reply-file", "reply-send"].forEach(function (id) {
      $(id).disabled = !canReply;
    });
    var hint = "";
    if (!c) hint = "";
    else if (c.status === "closed") hint = "This conversation is closed.";
    else if (c.status === "bot") hint = "The bot is answering this customer.";
    else if (!mine && c.assigned_agent_id) hint = "Held by " + (c.assigned_agent_name || "another agent") + "; only they can reply.";
    else if (!mine) hint = "Claim this conversation to reply.";
    $("composer-hint").textContent = hint;
    $("note-text").disabled = !c;
    $("note-send").disabled = !c;
    $("reassign").hidden = !(sup && open);
    if (sup) fillReassign();
  }

  // ---------------------------------------------------------------- the transcript

  /** One turn's identity, the same whether it came from the transcript (with a stored id), a
   * live frame or the answer to a POST (both may come without one): who, when, what. */
  function turnKey(turn) {
    if (typeof turn.timestamp !== "number") return typeof turn.id === "number" ? "id:" + turn.id : null;
    return [turn.from, turn.timestamp, turn.text || "", turn.image || ""].join("\u0000");
  }

  /** Add a turn to the open transcript once, in time order. */
  function addTurn(turn) {
    if (!turn || typeof turn !== "object") return;
    var list = $("transcript");
    var key = turnKey(turn);
    if (key !== null) {
      if (state.turnIds[key]) return;
      state.turnIds[key] = true;
    }
    var el = renderTurn(turn);
    var before = null;
    if (typeof turn.timestamp === "number") {
      el.setAttribute("data-ts", String(turn.timestamp));
      for (var node = list.lastElementChild; node; node = node.previousElementSibling) {
        if (!node.hasAttribute("data-ts")) continue;
        if (Number(node.getAttribute("data-ts")) <= turn.timestamp) break;
        before = node;
      }
    }
    list.insertBefore(el, before);
    if (state.atBottom || turn.from === "agent" || turn.from === "note") scrollToEnd();
  }

  /** Show the newest turn; the transcript keeps following new turns until the agent scrolls up. */
  function scrollToEnd() {
    var list = $("transcript");
    list.scrollTop = list.scrollHeight;
    state.atBottom = true;
  }

  function onTranscriptScroll() {
    var list = $("transcript");
    state.atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }

  function renderTurn(turn) {
    var from = Object.prototype.hasOwnProperty.call(FROM, turn.from) ? turn.from : "system";
    var text = typeof turn.text === "string" ? turn.text : "";
    var attrs = { class: "turn turn-" + from, testid: "turn", "data-from": from };
    var when = typeof turn.timestamp === "number" ? h("time", { datetime: new Date(turn.timestamp * 1000).toISOString() }, clock(turn.timestamp)) : null;
    if (from === "system") {
      return h("li", attrs, [h("span", { class: "turn-text", testid: "turn-text" }, textWithLinks(text)), when ? " " : null, when]);
    }
    var who = FROM[from];
    if ((from === "agent" || from === "note") && turn.agent_name) who = from === "agent" ? String(turn.agent_name) : FROM.note + " · " + turn.agent_name;
    var mood = from === "customer" && turn.sentiment ? sentimentBadge(turn.sentiment.label, turn.sentiment.score, "turn-sentiment") : null;
    var body = [h("div", { class: "turn-head" }, [h("span", { class: "turn-who" }, who), mood ? " " : null, mood, when])];
    if (text) body.push(h("p", { class: "turn-text", testid: "turn-text" }, textWithLinks(text)));
    if (turn.image) body.push(imageLink(turn.image, from === "customer" ? "Customer's image" : "Image sent"));
    asList(turn.attachments).forEach(function (a) {
      if (a && a.url) body.push(imageLink(a.url, from === "customer" ? "Customer's image" : "Image sent"));
    });
    body.push(chips([].concat(asList(turn.buttons), asList(turn.quick_replies))));
    asList(turn.cards).forEach(function (card) {
      if (!card || typeof card !== "object") return;
      body.push(
        h("div", { class: "card-turn", testid: "turn-card" }, [
          card.title ? h("strong", {}, String(card.title)) : null,
          card.subtitle ? h("p", { class: "turn-text" }, textWithLinks(String(card.subtitle))) : null,
          card.image ? imageLink(card.image, card.title ? String(card.title) : "Card image") : null,
          chips(asList(card.buttons)),
        ])
      );
    });
    return h("li", attrs, body);
  }

  function asList(value) {
    return Array.isArray(value) ? value : [];
  }

  /** The buttons or quick replies a message offered, shown (not clickable) as chips. */
  function chips(choices) {
    if (!choices.length) return null;
    return h(
      "ul",
      { class: "chips", "aria-label": "Choices offered" },
      choices.map(function (c) {
        var title = c && typeof c === "object" ? c.title || c.payload : c;
        var payload = c && typeof c === "object" && c.payload ? String(c.payload) : null;
        return h("li", { class: "chip", title: payload }, String(title === undefined || title === null ? "" : title));
      })
    );
  }

  function imageLink(url, alt) {
    var href = safeUrl(url);
    if (!href) return h("p", { class: "hint" }, "(an image at an address the console does not open)");
    var img = h("img", { src: href, alt: alt, class: "turn-image", testid: "turn-image", loading: "lazy" });
    var link = h("a", { href: href, target: "_blank", rel: "noopener noreferrer", class: "image-link" }, [img]);
    img.addEventListener("load", function () {
      if (state.atBottom) scrollToEnd();
    });
    img.addEventListener("error", function () {
      link.textContent = "Open the image (it could not be shown here)";
    });
    return link;
  }

  // ---------------------------------------------------------------- actions

  function act(button, request, done) {
    var id = state.openId;
    $("conv-error").textContent = "";
    $("conv-notice").textContent = "";
    button.disabled = true;
    return request()
      .then(function (data) {
        if (id !== state.openId) return;
        done(data);
      })
      .catch(function (err) {
        if (id !== state.openId) return;
        return onActionError(err);
      })
      .finally(function () {
        button.disabled = false;
        if (id === state.openId) updateControls();
      });
  }

  function onActionError(err) {
    if (err.status !== 409) {
      fail(err, $("conv-error"));
      return;
    }
    // Someone else holds it: say who, from the conversation as it is now.
    return api("GET", path(state.openId))
      .then(function (data) {
        var c = data.conversation;
        var who = c && c.assigned_agent_name ? c.assigned_agent_name : null;
        $("conv-error").textContent = who ? "Already claimed by " + who + "." : err.message;
        state.conv = c;
        renderHeader();
        (data.transcript || []).forEach(addTurn);
      })
      .catch(function () {
        $("conv-error").textContent = err.message;
      });
  }

  /** The open conversation after an action: show it, say what happened, refresh the rest. */
  function changed(item, notice) {
    state.conv = item;
    $("conv-notice").textContent = notice;
    renderHeader();
    updateControls();
    refreshInbox();
    if (isSupervisor()) refreshAgents();
    loadConversation();
  }

  function onClaim() {
    act($("claim"), function () {
      return api("POST", path(state.openId) + "/claim");
    }, function (item) {
      changed(item, "You hold this conversation now.");
      $("reply-text").focus();
    });
  }

  function onHandback() {
    var reset = $("reset-flow").checked;
    act($("handback"), function () {
      return api("POST", path(state.openId) + "/handback", { reset_flow: reset });
    }, function (item) {
      changed(item, reset ? "Handed back to the bot; its flow starts over." : "Handed back to the bot.");
    });
  }

  function onClose() {
    act($("close"), function () {
      return api("POST", path(state.openId) + "/close");
    }, function (item) {
      changed(item, "Conversation closed. The customer's next message starts a new one with the bot.");
    });
  }

  /** "title|payload" lines (payload defaults to the title) as quick replies; throws on a bad line. */
  function parseQuickReplies(raw) {
    var out = [];
    raw.split(/\r?\n/).forEach(function (line, i) {
      line = line.trim();
      if (!line) return;
      var bar = line.indexOf("|");
      var title = (bar < 0 ? line : line.slice(0, bar)).trim();
      var payload = (bar < 0 ? title : line.slice(bar + 1)).trim() || title;
      if (!title) throw new Error("Quick reply line " + (i + 1) + " needs a title before the |.");
      out.push({ title: title, payload: payload });
    });
    if (out.length > MAX_QUICK_REPLIES) throw new Error("At most " + MAX_QUICK_REPLIES + " quick replies, one per line.");
    return out;
  }

  function onSendReply(event) {
    if (event) event.preventDefault();
    var send = $("reply-send");
    if (send.disabled) return;
    var text = $("reply-text").value.trim();
    var file = $("reply-file").files && $("reply-file").files[0];
    var quick;
    try {
      quick = parseQuickReplies($("reply-quick").value);
    } catch (e) {
      $("conv-error").textContent = e.message;
      return;
    }
    if (!text && !file) {
      $("conv-error").textContent = "Type a reply or attach an image.";
      return;
    }
    if (file && quick.length) {
      $("conv-error").textContent = "Quick replies go with a text message: send the image on its own, then the choices.";
      return;
    }
    if (file && file.size > MAX_UPLOAD_BYTES) {
      $("conv-error").textContent = "The image is larger than 10 MB; send a smaller one.";
      return;
    }
    var body;
    if (file) {
      body = new FormData();
      body.append("file", file, file.name);
      if (text) body.append("text", text);
    } else {
      body = { text: text };
      if (quick.length) body.quick_replies = quick;
    }
    act(send, function () {
      return api("POST", path(state.openId) + "/messages", body);
    }, function (data) {
      addTurn(data.turn);
      $("reply-text").value = "";
      $("reply-quick").value = "";
      $("reply-file").value = "";
      document.querySelector(".composer-extras").open = false;
      $("reply-text").focus();
    });
  }

  function onSendNote(event) {
    if (event) event.preventDefault();
    var send = $("note-send");
    if (send.disabled) return;
    var text = $("note-text").value.trim();
    if (!text) {
      $("conv-error").textContent = "Write the note first.";
      return;
    }
    act(send, function () {
      return api("POST", path(state.openId) + "/notes", { text: text });
    }, function (data) {
      addTurn(data.turn);
      $("note-text").value = "";
      $("note-text").focus();
    });
  }

  /** Enter sends, Shift+Enter (or an IME composition) keeps typing. */
  function enterSends(textarea, handler) {
    textarea.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey && !event.metaKey) {
        event.preventDefault();
        handler();
      }
    });
  }

  // ---------------------------------------------------------------- supervisors

  function refreshAgents() {
    if (!isSupervisor()) return Promise.resolve();
    return api("GET", "/agents")
      .then(function (agents) {
        state.agents = Array.isArray(agents) ? agents : [];
        renderAgents();
      })
      .catch(function (err) {
        fail(err);
      });
  }

  function renderAgents() {
    var list = $("agents");
    clear(list);
    state.agents.forEach(function (a) {
      list.appendChild(
        h("li", { class: "agent-row", testid: "agent-row", "data-agent-id": a.id }, [
          h("span", { class: "agent-name" }, (a.name || a.username) + (a.id === state.me.id ? " (you)" : "")),
          h("span", { class: "agent-role" }, a.role),
          h("span", { class: "load", testid: "agent-load" }, String(a.claimed || 0) + " claimed"),
        ])
      );
    });
    if (!state.agents.length) list.appendChild(h("li", { class: "empty" }, "No agents yet."));
    fillReassign();
  }

  function fillReassign() {
    var select = $("reassign-agent");
    var keep = select.value;
    clear(select);
    state.agents.forEach(function (a) {
      var current = !!state.conv && state.conv.assigned_agent_id === a.id;
      var label = (a.name || a.username) + (current ? " (holds it)" : " · " + (a.claimed || 0) + " claimed");
      select.appendChild(h("option", { value: a.id, disabled: current }, label));
    });
    var kept = keep ? select.querySelector('option[value="' + CSS.escape(keep) + '"]') : null;
    var first = select.querySelector("option:not([disabled])");
    if (kept && !kept.disabled) select.value = keep;
    else if (first) select.value = first.value;
  }

  function onReassign() {
    var agentId = $("reassign-agent").value;
    if (!agentId) {
      $("conv-error").textContent = "Pick an agent to assign.";
      return;
    }
    act($("reassign-send"), function () {
      return api("POST", path(state.openId) + "/assign", { agent_id: agentId });
    }, function (item) {
      changed(item, "Assigned to " + (item.assigned_agent_name || "the agent") + ".");
    });
  }

  // ---------------------------------------------------------------- live updates

  function setLive(s) {
    var el = $("live-state");
    el.setAttribute("data-state", s);
    el.textContent = { on: "Live", connecting: "Connecting…", off: "Offline" }[s];
  }

  function connect() {
    if (!state.me) return;
    var url = (location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + API + "/ws";
    var ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      reconnectLater();
      return;
    }
    state.ws = ws;
    setLive("connecting");
    ws.addEventListener("open", function () {
      if (state.ws !== ws) return;
      state.backoff = BACKOFF_FIRST_MS;
      setLive("on");
      clearInterval(state.timers.ping);
      state.timers.ping = setInterval(function () {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
      }, PING_MS);
      // catch up on whatever happened while the socket was down
      refreshInbox();
      if (state.openId) loadConversation();
      if (isSupervisor()) refreshAgents();
    });
    ws.addEventListener("message", function (event) {
      if (state.ws !== ws) return;
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (frame && typeof frame === "object") onFrame(frame);
    });
    ws.addEventListener("close", function (event) {
      if (state.ws !== ws) return;
      state.ws = null;
      clearInterval(state.timers.ping);
      setLive("off");
      if (event.code === 4401) {
        signedOut("Your session has ended; sign in again.");
        return;
      }
      reconnectLater();
    });
  }

  function reconnectLater() {
    if (!state.me) return;
    var wait = state.backoff;
    state.backoff = Math.min(BACKOFF_MAX_MS, state.backoff * 2);
    debounce("reconnect", connect, wait + Math.floor(Math.random() * 250));
  }

  function closeSocket() {
    var ws = state.ws;
    state.ws = null;
    clearInterval(state.timers.ping);
    if (ws) ws.close(1000);
    setLive("off");
  }

  function onFrame(frame) {
    if (frame.type === "inbox") {
      debounce("inbox", refreshInbox);
      if (isSupervisor()) debounce("agents", refreshAgents);
    } else if (frame.type === "turn") {
      if (frame.conversation_id === state.openId) {
        addTurn(frame.turn);
        debounce("conversation", loadConversation, 400); // slots and the bot's parse
      }
      if (inInbox(frame.conversation_id)) debounce("inbox", refreshInbox, 400);
    } else if (frame.type === "status") {
      if (frame.conversation_id === state.openId) debounce("conversation", loadConversation);
      debounce("inbox", refreshInbox);
    }
  }

  function inInbox(id) {
    return state.inbox.waiting.concat(state.inbox.mine, state.inbox.others || []).some(function (item) {
      return item.id === id;
    });
  }

  // ---------------------------------------------------------------- start

  function boot() {
    $("login-form").addEventListener("submit", onLoginSubmit);
    $("logout").addEventListener("click", onLogout);
    $("claim").addEventListener("click", onClaim);
    $("handback").addEventListener("click", onHandback);
    $("close").addEventListener("click", onClose);
    $("composer").addEventListener("submit", onSendReply);
    $("note-form").addEventListener("submit", onSendNote);
    $("reassign-send").addEventListener("click", onReassign);
    enterSends($("reply-text"), onSendReply);
    enterSends($("note-text"), onSendNote);
    window.addEventListener("hashchange", openFromAddress);
    $("transcript").addEventListener("scroll", onTranscriptScroll, { passive: true });
    api("GET", "/me")
      .then(function (data) {
        start(data);
      })
      .catch(function (err) {
        showLogin(err.status === 401 ? "" : err.message);
      });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();

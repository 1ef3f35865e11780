/*! Parley web chat widget. One file, no dependencies, no build step (ES2019).
 *
 * Embed with one tag (see connectors/webchat/protocol.md):
 *   <script src="https://HOST/widget.js" data-bot="bot_..." data-key="wk_..." async></script>
 *
 * Everything renders inside a Shadow DOM attached to <parley-widget id="parley-widget">, so the
 * page's CSS cannot reach it. Data from the server is only ever inserted as text nodes or
 * checked URLs, never as HTML.
 */
(function () {
  "use strict";

  var VERSION = "1.0.0";
  if (window.__parleyWidgetLoaded) {
    console.warn("Parley widget: widget.js is included twice on this page; the second copy is ignored.");
    return;
  }
  window.__parleyWidgetLoaded = true;

  var MAX_UPLOAD_BYTES = 10 * 1024 * 1024;
  var PING_MS = 25000;
  var BACKOFF_FIRST_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  var SESSION_RE = /^[A-Za-z0-9_-]{8,64}$/;
  var FATAL_CLOSE = {
    4401: "This chat is not set up correctly (the widget key was refused). Please tell the site owner.",
    4403: "Chat is not enabled on this website. Please tell the site owner.",
    4404: "This chat is not available right now.",
  };
  var FATAL_HINT = {
    4401: "check data-key: it must be one of the bot's widget keys (wk_...)",
    4403: "add this page's origin (" + location.origin + ") to the bot's allowed origins",
    4404: "check data-bot: the bot does not exist or is disabled",
  };
  var STATUS_TEXT = {
    waiting_for_agent: "Connecting you to a person…",
    bot: "You're back with the assistant",
  };

  // ---------------------------------------------------------------- configuration

  function findOwnScript() {
    if (document.currentScript && document.currentScript.hasAttribute("data-bot")) {
      return document.currentScript;
    }
    var tags = document.querySelectorAll("script[src][data-bot]");
    for (var i = tags.length - 1; i >= 0; i--) {
      if (/\/widget\.js(?:[?#].*)?$/.test(tags[i].src)) return tags[i];
    }
    return null;
  }

  function readConfig(tag) {
    if (!tag) throw new Error("could not find its own <script> tag (it needs data-bot and data-key)");
    var d = tag.dataset;
    var bot = (d.bot || "").trim();
    var key = (d.key || "").trim();
    if (!bot || !key) throw new Error("the <script> tag needs both data-bot and data-key");
    // The server is where widget.js came from: https://HOST/widget.js -> https://HOST.
    // data-server overrides it (widget.js served from a CDN or another path).
    var base = d.server ? new URL(d.server, location.href) : new URL(".", tag.src);
    var baseUrl = base.href.replace(/\/+$/, "");
    return {
      bot: bot,
      key: key,
      base: baseUrl,
      wsBase: baseUrl.replace(/^http/, "ws"),
      title: (d.title || "").trim() || "Chat",
      color: (d.color || "").trim(),
      avatar: (d.avatar || "").trim(),
      greeting: (d.greeting || "").trim(),
    };
  }

  var cfg;
  try {
    cfg = readConfig(findOwnScript());
  } catch (err) {
    console.error("Parley widget: " + err.message);
    return;
  }
  var SESSION_KEY = "parley:" + cfg.bot + ":session";
  // The session token the server gave for that session: the widget key acts only for it.
  var TOKEN_KEY = "parley:" + cfg.bot + ":session_token";
  var OPEN_KEY = "parley:" + cfg.bot + ":open";

  // ---------------------------------------------------------------- small helpers

  function storageGet(store, key) {
    try {
      return window[store].getItem(key);
    } catch (e) {
      return null; // storage disabled (privacy settings, sandboxed iframe)
    }
  }

  function storageSet(store, key, value) {
    try {
      window[store].setItem(key, value);
    } catch (e) {
      /* storage disabled: the session lasts as long as the page */
    }
  }

  function randomId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    var bytes = new Uint8Array(16);
    if (window.crypto && window.crypto.getRandomValues) {
      window.crypto.getRandomValues(bytes);
    } else {
      for (var i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    return Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  /** Create an element: attrs may hold class, text, on<event> handlers and plain attributes. */
  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    });
    (children || []).forEach(function (c) {
      if (c) el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return el;
  }

  /** A URL from the server that is safe for src/href: http(s), blob: or an inline raster image. */
  function safeUrl(value, relativeTo) {
    if (typeof value !== "string" || !value) return null;
    try {
      var url = new URL(value, relativeTo || cfg.base + "/");
      if (url.protocol === "http:" || url.protocol === "https:") return relativeTo ? url.href : withKey(url);
      if (url.protocol === "blob:") return url.href;
      if (/^data:image\/(?:png|jpe?g|gif|webp);base64,/i.test(value)) return value;
    } catch (e) {
      /* not a URL */
    }
    return null;
  }

  /** Uploads on the Parley server need the widget key and the session's token, and an <img>
   * cannot send a header. */
  function withKey(url) {
    var base = new URL(cfg.base + "/");
    var uploads = base.pathname + "v1/bots/" + encodeURIComponent(cfg.bot) + "/uploads/";
    if (url.origin === base.origin && url.pathname.indexOf(uploads) === 0 &&
        !url.searchParams.has("key") && !url.searchParams.has("token")) {
      url.searchParams.set("key", cfg.key);
      if (sessionToken()) url.searchParams.set("session_token", sessionToken());
    }
    return url.href;
  }

  var URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;

  /** Plain text with http(s) URLs turned into links; line breaks kept by CSS (pre-wrap). */
  function linkify(value) {
    var text = String(value);
    var out = h("div", { class: "text" });
    var last = 0;
    text.replace(URL_RE, function (match, offset) {
      var url = match.replace(/[.,;:!?'"]+$/, "");
      if (/\)$/.test(url) && url.indexOf("(") === -1) url = url.slice(0, -1);
      var href = safeUrl(url);
      if (!href) return match;
      out.appendChild(document.createTextNode(text.slice(last, offset)));
      out.appendChild(h("a", { href: href, target: "_blank", rel: "noopener noreferrer nofollow", text: url }));
      last = offset + url.length;
      return match;
    });
    out.appendChild(document.createTextNode(text.slice(last)));
    return out;
  }

  function hasFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return !!types && Array.prototype.indexOf.call(types, "Files") !== -1;
  }

  // ---------------------------------------------------------------- styles and markup

  var CSS = [
    ":host{all:initial}",
    ".root{--parley-color:#0b5fff;--parley-on-color:#fff;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;color:#1a1a1a;-webkit-font-smoothing:antialiased}",
    ".root *,.root *::before,.root *::after{box-sizing:border-box}",
    "button{font:inherit;cursor:pointer}",
    "button:focus-visible,input:focus-visible,a:focus-visible,.log:focus-visible{outline:2px solid transparent;box-shadow:0 0 0 2px #fff,0 0 0 4px #1a1a1a}",
    ".sr-only{position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}",
    ".launcher{position:fixed;right:20px;bottom:20px;z-index:2147483000;width:58px;height:58px;border:0;border-radius:50%;background:var(--parley-color);color:var(--parley-on-color);box-shadow:0 4px 14px rgba(0,0,0,.25);display:flex;align-items:center;justify-content:center;transition:transform .15s}",
    ".launcher:hover{transform:scale(1.05)}",
    ".launcher svg{width:28px;height:28px}",
    ".launcher .icon-close{display:none}",
    ".root.open .launcher .icon-chat{display:none}",
    ".root.open .launcher .icon-close{display:block}",
    ".badge{position:absolute;top:-3px;right:-3px;min-width:20px;height:20px;padding:0 5px;border-radius:10px;background:#c5221f;color:#fff;font-size:12px;font-weight:700;line-height:20px;text-align:center}",
    ".badge[hidden]{display:none}",
    ".window{position:fixed;right:20px;bottom:92px;z-index:2147483000;width:370px;height:600px;max-height:calc(100vh - 112px);display:flex;flex-direction:column;background:#fff;border-radius:16px;box-shadow:0 10px 40px rgba(0,0,0,.22);overflow:hidden}",
    ".window[hidden]{display:none}",
    "header{display:flex;align-items:center;gap:10px;padding:12px 12px 12px 14px;background:var(--parley-color);color:var(--parley-on-color);flex:none}",
    ".avatar{width:34px;height:34px;border-radius:50%;object-fit:cover;flex:none;background:rgba(255,255,255,.25);display:flex;align-items:center;justify-content:center;font-weight:700}",
    ".title{flex:1;min-width:0;margin:0;font-size:16px;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}",
    ".close{width:36px;height:36px;border:0;border-radius:8px;background:transparent;color:inherit;display:flex;align-items:center;justify-content:center;flex:none}",
    ".close:hover{background:rgba(255,255,255,.18)}",
    ".close svg{width:20px;height:20px}",
    ".status{flex:none;padding:6px 14px;font-size:13px;background:#fff4e5;color:#5f3700}",
    ".status:empty{display:none}",
    ".log{flex:1;min-height:0;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:8px;background:#f5f6f8}",
    ".log>*{flex:none}", // a scrolling log must not squash its rows (cards scroll sideways)
    ".msg{max-width:82%;padding:8px 12px;border-radius:16px;overflow-wrap:anywhere}",
    ".msg .text{white-space:pre-wrap}",
    ".msg.user{align-self:flex-end;background:var(--parley-color);color:var(--parley-on-color);border-bottom-right-radius:4px}",
    ".msg.user a{color:inherit}",
    ".msg.bot,.msg.agent{align-self:flex-start;background:#fff;border:1px solid #e1e3e6;border-bottom-left-radius:4px}",
    ".msg.agent{border-color:#b9d3b5;background:#f3faf1}",
    ".msg a{color:#0b57d0}",
    ".msg.pending{opacity:.6}",
    ".msg.failed{opacity:1;box-shadow:0 0 0 2px #c5221f}",
    ".msg .note{display:block;font-size:12px;margin-top:4px}",
    ".who{display:block;font-size:12px;font-weight:600;color:#2d6a27;margin-bottom:2px}",
    ".media{display:block;max-width:100%;max-height:240px;border-radius:10px;margin:4px 0}",
    ".msg.user .media{margin:0}",
    ".buttons{display:flex;flex-direction:column;gap:6px;margin-top:8px}",
    ".btn{border:1px solid #c4c7cc;background:#fff;color:#1a1a1a;border-radius:10px;padding:7px 12px;text-align:center}",
    ".btn:hover{border-color:var(--parley-color)}",
    ".quick-replies{display:flex;flex-wrap:wrap;gap:6px;justify-content:flex-end}",
    ".chip{border:1px solid var(--parley-color);background:#fff;color:#1a1a1a;border-radius:18px;padding:6px 14px}",
    ".chip:hover{background:#eef3ff}",
    ".cards{align-self:stretch;display:flex;gap:8px;overflow-x:auto;padding:2px 2px 6px}",
    ".card{flex:0 0 220px;display:flex;flex-direction:column;background:#fff;border:1px solid #e1e3e6;border-radius:14px;overflow:hidden}",
    ".card img{display:block;width:100%;height:120px;object-fit:cover;background:#eceff3}",
    ".card .body{padding:10px 12px;display:flex;flex-direction:column;gap:4px;flex:1}",
    ".card h3{margin:0;font-size:15px;font-weight:600}",
    ".card p{margin:0;font-size:13px;color:#555b62;white-space:pre-wrap}",
    ".card .buttons{margin-top:auto;padding-top:6px}",
    ".system{align-self:center;max-width:90%;text-align:center;font-size:13px;color:#555b62}",
    ".system.error{color:#b3261e}",
    ".typing{flex:none;padding:0 14px 8px;background:#f5f6f8}",
    ".typing[hidden]{display:none}",
    ".dots{display:inline-flex;gap:4px;padding:11px 13px;background:#fff;border:1px solid #e1e3e6;border-radius:16px;border-bottom-left-radius:4px}",
    ".dots span{width:7px;height:7px;border-radius:50%;background:#8a9096;animation:parley-bounce 1.2s infinite ease-in-out}",
    ".dots span:nth-child(2){animation-delay:.15s}",
    ".dots span:nth-child(3){animation-delay:.3s}",
    "@keyframes parley-bounce{0%,70%,100%{opacity:.35;transform:translateY(0)}35%{opacity:1;transform:translateY(-3px)}}",
    "@media (prefers-reduced-motion:reduce){.dots span{animation:none}.launcher{transition:none}}",
    ".composer{flex:none;display:flex;align-items:center;gap:6px;padding:10px;border-top:1px solid #e1e3e6;background:#fff}",
    ".input{flex:1;min-width:0;font:inherit;font-size:16px;padding:9px 14px;border:1px solid #c4c7cc;border-radius:20px;background:#fff;color:#1a1a1a}",
    ".icon-btn{width:40px;height:40px;flex:none;border:0;border-radius:50%;background:transparent;color:#555b62;display:flex;align-items:center;justify-content:center}",
    ".icon-btn:hover{background:#eef0f2}",
    ".icon-btn svg{width:22px;height:22px}",
    ".send{background:var(--parley-color);color:var(--parley-on-color)}",
    ".send:hover{background:var(--parley-color);filter:brightness(1.08)}",
    ".drop{position:absolute;inset:0;z-index:2;display:none;align-items:center;justify-content:center;padding:20px;text-align:center;font-weight:600;background:rgba(255,255,255,.94);border:3px dashed var(--parley-color);border-radius:inherit}",
    ".window.dragging .drop{display:flex}",
    "@media (max-width:479.98px){.window{top:0;left:0;right:0;bottom:0;width:100%;height:100%;max-height:none;border-radius:0}.root.open .launcher{display:none}}",
    "@media (forced-colors:active){.msg,.chip,.btn,.dots{border:1px solid CanvasText}}",
  ].join("\n");

  function icon(paths) {
    return '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">' + paths + "</svg>";
  }
  var ICON_CHAT = icon('<path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z"/>');
  var ICON_CLOSE = icon('<path d="M6 6l12 12M18 6L6 18"/>');
  var ICON_IMAGE = icon('<rect x="3" y="4" width="18" height="16" rx="2"/><circle cx="9" cy="10" r="2"/><path d="M21 16l-5-5-9 9"/>');
  var ICON_SEND = icon('<path d="M4 12l16-8-6 16-2.5-6.5L4 12z"/>');

  // Constant markup only: every value that comes from the page or the server is set afterwards
  // through textContent / setAttribute.
  var SHELL =
    '<div class="root">' +
    '<button type="button" class="launcher" aria-label="Open chat" aria-expanded="false" aria-controls="parley-window" aria-describedby="parley-unread">' +
    '<span class="icon-chat">' + ICON_CHAT + '</span><span class="icon-close">' + ICON_CLOSE + "</span>" +
    '<span class="badge" aria-hidden="true" hidden></span></button>' +
    '<span class="sr-only" id="parley-unread"></span>' +
    '<div class="window" id="parley-window" role="dialog" hidden>' +
    "<header>" +
    '<span class="avatar" aria-hidden="true"></span><h2 class="title"></h2>' +
    '<button type="button" class="close" aria-label="Close chat">' + ICON_CLOSE + "</button>" +
    "</header>" +
    '<div class="status" role="status" aria-live="polite"></div>' +
    '<div class="log" role="log" aria-live="polite" aria-label="Messages" tabindex="0"></div>' +
    '<div class="typing" hidden><span class="dots" aria-hidden="true"><span></span><span></span><span></span></span><span class="sr-only typing-text"></span></div>' +
    '<form class="composer" novalidate>' +
    '<input type="file" class="file" accept="image/*" hidden tabindex="-1">' +
    '<button type="button" class="icon-btn attach" aria-label="Send an image">' + ICON_IMAGE + "</button>" +
    '<input type="text" class="input" aria-label="Type your message" placeholder="Type a message…" autocomplete="off" maxlength="4000" enterkeyhint="send">' +
    '<button type="submit" class="icon-btn send" aria-label="Send message">' + ICON_SEND + "</button>" +
    "</form>" +
    '<div class="drop" aria-hidden="true">Drop an image to send it</div>' +
    "</div></div>";

  // ---------------------------------------------------------------- the widget

  var host = document.createElement("parley-widget");
  host.id = "parley-widget";
  // Inline !important beats any page rule that could hide or move the host.
  host.style.setProperty("all", "initial", "important");
  host.style.setProperty("display", "block", "important");
  var shadow = host.attachShadow({ mode: "open" });
  if ("adoptedStyleSheets" in ShadowRoot.prototype && typeof CSSStyleSheet === "function") {
    try {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS); // constructed sheets also work under a strict style-src CSP
      shadow.adoptedStyleSheets = [sheet];
    } catch (e) {
      shadow.appendChild(h("style", { text: CSS }));
    }
  } else {
    shadow.appendChild(h("style", { text: CSS }));
  }
  var tpl = document.createElement("template");
  tpl.innerHTML = SHELL;
  shadow.appendChild(tpl.content);

  function q(sel) {
    return shadow.querySelector(sel);
  }
  var ui = {
    root: q(".root"),
    launcher: q(".launcher"),
    badge: q(".badge"),
    unread: q("#parley-unread"),
    win: q(".window"),
    avatar: q(".avatar"),
    title: q(".title"),
    close: q(".close"),
    status: q(".status"),
    log: q(".log"),
    typing: q(".typing"),
    typingText: q(".typing-text"),
    form: q(".composer"),
    file: q(".file"),
    attach: q(".attach"),
    input: q(".input"),
  };

  ui.title.textContent = cfg.title;
  ui.win.setAttribute("aria-label", cfg.title + " chat");
  ui.typingText.textContent = cfg.title + " is typing";
  var avatarUrl = safeUrl(cfg.avatar, location.href); // the page's own URL, unlike server URLs
  if (avatarUrl) {
    var avatarImg = h("img", { class: "avatar", src: avatarUrl, alt: "", "aria-hidden": "true" });
    ui.avatar.replaceWith(avatarImg);
    ui.avatar = avatarImg;
  } else {
    ui.avatar.textContent = cfg.title.charAt(0).toUpperCase();
  }

  var state = {
    ws: null,
    connected: false, // welcome received on the current socket
    connection: "idle", // idle | connecting | connected | reconnecting | closed | failed
    fatal: false,
    attempt: 0,
    retryTimer: 0,
    pingTimer: 0,
    awaitingPong: false,
    outbox: [], // {id, frame, bubble, key, sent}
    seq: 0,
    clientPrefix: randomId().replace(/-/g, "").slice(0, 8),
    sessionId: null,
    sessionToken: null, // the server's token for sessionId ("" until it gave one)
    open: false,
    unread: 0,
    quickReplies: null,
    typingTimer: 0,
    dragDepth: 0,
  };

  function updateHostState() {
    var tokens = [];
    if (state.connection === "connected") tokens.push("connected");
    if (state.open) tokens.push("open");
    host.setAttribute("data-state", tokens.join(" "));
    host.setAttribute("data-connection", state.connection);
  }

  function setConnection(value) {
    state.connection = value;
    updateHostState();
  }

  function sessionToken() {
    if (state.sessionToken === null) state.sessionToken = storageGet("localStorage", TOKEN_KEY) || "";
    return state.sessionToken;
  }

  function sessionId() {
    if (!state.sessionId) {
      var stored = storageGet("localStorage", SESSION_KEY);
      state.sessionId = stored && SESSION_RE.test(stored) ? stored : randomId();
      if (state.sessionId !== stored) storageSet("localStorage", SESSION_KEY, state.sessionId);
    }
    return state.sessionId;
  }

  function applyTheme() {
    if (!cfg.color) return;
    var probe = h("span", { hidden: true });
    probe.style.color = cfg.color;
    if (!probe.style.color) {
      console.warn("Parley widget: data-color " + JSON.stringify(cfg.color) + " is not a CSS color; using the default.");
      return;
    }
    shadow.appendChild(probe);
    var rgb = (getComputedStyle(probe).color.match(/\d+(\.\d+)?/g) || []).slice(0, 3).map(Number);
    probe.remove();
    ui.root.style.setProperty("--parley-color", cfg.color);
    if (rgb.length === 3) {
      var lum = rgb.map(function (c) {
        c /= 255;
        return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
      });
      var l = 0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2];
      // Whichever of white or near-black text contrasts more with the brand colour.
      ui.root.style.setProperty("--parley-on-color", 1.05 / (l + 0.05) >= (l + 0.05) / 0.06 ? "#fff" : "#111");
    }
  }

  // ------------------------------------------------------------ rendering

  function nearBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  }

  function scrollToBottom() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function append(node, force) {
    var stick = force || nearBottom();
    ui.log.appendChild(node);
    if (stick) scrollToBottom();
    Array.prototype.forEach.call(node.querySelectorAll ? node.querySelectorAll("img") : [], function (img) {
      img.addEventListener("load", function () {
        if (stick) scrollToBottom();
      });
    });
    return node;
  }

  function stamp(node, ts) {
    if (typeof ts === "number" && isFinite(ts)) node.title = new Date(ts * 1000).toLocaleString();
  }

  function addSystem(text, kind) {
    return append(h("div", { class: "system" + (kind ? " " + kind : ""), text: text }), true);
  }

  function choiceButtons(list, cls) {
    var out = [];
    (Array.isArray(list) ? list : []).forEach(function (b) {
      if (!b || typeof b.title !== "string" || !b.title) return;
      out.push(
        h("button", {
          type: "button",
          class: cls,
          text: b.title,
          onclick: function () {
            send(b.title, typeof b.payload === "string" ? b.payload : null);
          },
        })
      );
    });
    return out;
  }

  function clearQuickReplies() {
    if (state.quickReplies) state.quickReplies.remove();
    state.quickReplies = null;
  }

  function showQuickReplies(list) {
    clearQuickReplies();
    var chips = choiceButtons(list, "chip");
    if (!chips.length) return;
    state.quickReplies = append(h("div", { class: "quick-replies", role: "group", "aria-label": "Suggested replies" }, chips));
  }

  function renderUser(message, ts, previewUrl) {
    var bubble = h("div", { class: "msg user" }, [h("span", { class: "sr-only", text: "You: " })]);
    var atts = Array.isArray(message.attachments) ? message.attachments : [];
    atts.forEach(function (a) {
      var src = previewUrl || safeUrl(a && a.url);
      if (src) bubble.appendChild(h("img", { class: "media", src: src, alt: "Image you sent" }));
      else bubble.appendChild(h("div", { class: "text", text: "[image]" }));
    });
    if (message.text) bubble.appendChild(linkify(message.text));
    stamp(bubble, ts);
    return append(bubble, true);
  }

  function renderCard(card) {
    if (!card || typeof card !== "object") return null;
    var src = safeUrl(card.image);
    var body = h("div", { class: "body" }, [
      card.title ? h("h3", { text: String(card.title) }) : null,
      card.subtitle ? h("p", { text: String(card.subtitle) }) : null,
    ]);
    var buttons = choiceButtons(card.buttons, "btn");
    if (buttons.length) body.appendChild(h("div", { class: "buttons" }, buttons));
    return h("div", { class: "card", role: "group", "aria-label": card.title ? String(card.title) : "Card" }, [
      src ? h("img", { src: src, alt: card.title ? String(card.title) : "" }) : null,
      body,
    ]);
  }

  /** A bot or agent message. Quick replies stay under the newest message until the user
   * sends something; ``newest`` says whether this message's own quick replies apply. */
  function renderIncoming(from, m, ts, newest) {
    m = m && typeof m === "object" ? m : {};
    var who = from === "agent" ? "Support agent" : cfg.title;
    var bubble = h("div", { class: "msg " + (from === "agent" ? "agent" : "bot") }, [
      from === "agent" ? h("span", { class: "who", text: who }) : h("span", { class: "sr-only", text: who + ": " }),
    ]);
    var filled = false;
    if (typeof m.text === "string" && m.text) {
      bubble.appendChild(linkify(m.text));
      filled = true;
    }
    var img = safeUrl(m.image);
    if (img) {
      bubble.appendChild(h("img", { class: "media", src: img, alt: "Image from " + who }));
      filled = true;
    }
    var buttons = choiceButtons(m.buttons, "btn");
    if (buttons.length) {
      bubble.appendChild(h("div", { class: "buttons", role: "group", "aria-label": "Choices" }, buttons));
      filled = true;
    }
    if (filled) {
      stamp(bubble, ts);
      append(bubble);
    }
    var cards = (Array.isArray(m.cards) ? m.cards : []).map(renderCard).filter(Boolean);
    if (cards.length) append(h("div", { class: "cards", role: "group", "aria-label": "Cards" }, cards));
    if (newest && Array.isArray(m.quick_replies) && m.quick_replies.length) showQuickReplies(m.quick_replies);
    else if (state.quickReplies) append(state.quickReplies); // keep the earlier ones last
  }

  function renderGreeting() {
    if (cfg.greeting) renderIncoming("bot", { text: cfg.greeting }, null, false);
  }

  function renderHistory(history, status) {
    ui.log.setAttribute("aria-busy", "true");
    ui.log.textContent = "";
    state.quickReplies = null;
    if (!history.length) renderGreeting();
    // Quick replies still on offer: the last ones sent after the user's last message.
    var offer = -1;
    history.forEach(function (entry, i) {
      if (!entry || typeof entry !== "object") return;
      if (entry.from === "user") offer = -1;
      else if (entry.message && Array.isArray(entry.message.quick_replies) && entry.message.quick_replies.length) offer = i;
    });
    history.forEach(function (entry, i) {
      if (!entry || typeof entry !== "object") return;
      if (entry.from === "user") renderUser(entry.message || {}, entry.timestamp, null);
      else renderIncoming(entry.from, entry.message, entry.timestamp, i === offer);
    });
    if (status === "waiting_for_agent") addSystem(STATUS_TEXT.waiting_for_agent);
    ui.log.removeAttribute("aria-busy");
    scrollToBottom();
  }

  function setTyping(on) {
    clearTimeout(state.typingTimer);
    ui.typing.hidden = !on;
    // Never leave the dots up forever if the "off" frame is lost.
    if (on) state.typingTimer = setTimeout(function () { setTyping(false); }, 30000);
  }

  function setUnread(n) {
    state.unread = n;
    ui.badge.hidden = n === 0;
    ui.badge.textContent = n > 9 ? "9+" : String(n);
    ui.unread.textContent = n ? n + (n === 1 ? " new message" : " new messages") : "";
  }

  function showStatus(text) {
    ui.status.textContent = text;
  }

  // ------------------------------------------------------------ outbox

  function messageKey(text, uploadIds) {
    return (text || "") + "\u0000" + uploadIds.join(",");
  }

  function enqueue(frame, bubble, key) {
    state.seq += 1;
    var id = "c-" + state.clientPrefix + "-" + state.seq;
    frame.client_id = id;
    bubble.classList.add("pending");
    state.outbox.push({ id: id, frame: frame, bubble: bubble, key: key, sent: false });
    if (state.fatal) {
      failOutbox();
    } else if (!state.ws) {
      connect();
    }
    flush();
    return id;
  }

  function flush() {
    if (!state.connected || !state.ws) return;
    for (var i = 0; i < state.outbox.length; i++) {
      var entry = state.outbox[i];
      if (entry.sent) continue;
      try {
        state.ws.send(JSON.stringify(entry.frame));
        entry.sent = true;
      } catch (e) {
        return; // the socket is closing; onclose reconnects and flushes again
      }
    }
  }

  function markFailed(entry, note) {
    entry.bubble.classList.remove("pending");
    entry.bubble.classList.add("failed");
    entry.bubble.appendChild(h("span", { class: "note", text: note }));
  }

  function takeEntry(clientId) {
    for (var i = 0; i < state.outbox.length; i++) {
      if (state.outbox[i].id === clientId) return state.outbox.splice(i, 1)[0];
    }
    return null;
  }

  function failOutbox() {
    state.outbox.splice(0).forEach(function (entry) {
      markFailed(entry, "Not sent");
    });
  }

  /** After a reconnect: drop sent messages the history shows arrived, re-queue the rest. */
  function reconcileOutbox(history) {
    var seen = [];
    history.slice(-30).forEach(function (entry) {
      if (!entry || entry.from !== "user") return;
      var m = entry.message || {};
      var ids = (Array.isArray(m.attachments) ? m.attachments : []).map(function (a) {
        return a && a.upload_id;
      });
      seen.push(messageKey(m.text, ids));
    });
    state.outbox = state.outbox.filter(function (entry) {
      if (entry.sent) {
        var at = seen.indexOf(entry.key);
        if (at !== -1) {
          seen.splice(at, 1);
          return false;
        }
        entry.sent = false;
      }
      append(entry.bubble, true);
      return true;
    });
  }

  // ------------------------------------------------------------ connection

  function connect() {
    if (state.fatal || state.ws) return;
    clearTimeout(state.retryTimer);
    state.retryTimer = 0;
    var url =
      cfg.wsBase + "/v1/bots/" + encodeURIComponent(cfg.bot) + "/ws?key=" + encodeURIComponent(cfg.key) +
      "&session=" + encodeURIComponent(sessionId()) +
      (sessionToken() ? "&session_token=" + encodeURIComponent(sessionToken()) : "");
    setConnection(state.attempt ? "reconnecting" : "connecting");
    var ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      console.error("Parley widget: cannot open " + url + ": " + err.message);
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    ws.onmessage = function (ev) {
      if (state.ws === ws) onFrame(ev.data);
    };
    ws.onclose = function (ev) {
      if (state.ws === ws) onClose(ev.code, ev.reason);
    };
  }

  function dropSocket() {
    var ws = state.ws;
    state.ws = null;
    state.connected = false;
    clearInterval(state.pingTimer);
    state.pingTimer = 0;
    state.awaitingPong = false;
    setTyping(false);
    if (ws) {
      ws.onmessage = ws.onclose = null;
      if (ws.readyState <= 1) ws.close(1000);
    }
  }

  function onClose(code, reason) {
    dropSocket();
    if (FATAL_CLOSE[code]) {
      state.fatal = true;
      setConnection("failed");
      showStatus("");
      console.error("Parley widget: the server closed the chat with " + code + (reason ? " (" + reason + ")" : "") + ": " + FATAL_HINT[code]);
      addSystem(FATAL_CLOSE[code], "error");
      failOutbox();
      return;
    }
    if (code === 1009) {
      // Our last frame was too big: resending it would only loop.
      state.outbox = state.outbox.filter(function (entry) {
        if (!entry.sent) return true;
        markFailed(entry, "Too long to send");
        return false;
      });
    }
    if (code === 1000) {
      setConnection("closed"); // a deliberate close: reconnect on the next open or send
      if (state.outbox.length || state.open) scheduleReconnect();
      return;
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (state.fatal || state.retryTimer) return;
    var ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, state.attempt));
    var delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    state.attempt += 1;
    setConnection("reconnecting");
    showStatus("Reconnecting…");
    state.retryTimer = setTimeout(function () {
      state.retryTimer = 0;
      connect();
    }, delay);
  }

  function startPing() {
    clearInterval(state.pingTimer);
    state.awaitingPong = false;
    state.pingTimer = setInterval(function () {
      if (!state.ws) return;
      if (state.awaitingPong) {
        // No answer to the last ping: the connection is dead without having closed.
        dropSocket();
        scheduleReconnect();
        return;
      }
      state.awaitingPong = true;
      try {
        state.ws.send(JSON.stringify({ type: "ping" }));
      } catch (e) {
        /* closing: onclose takes over */
      }
    }, PING_MS);
  }

  function onWelcome(f) {
    state.connected = true;
    state.attempt = 0;
    showStatus("");
    if (typeof f.session_id === "string" && SESSION_RE.test(f.session_id) && f.session_id !== state.sessionId) {
      state.sessionId = f.session_id;
      storageSet("localStorage", SESSION_KEY, f.session_id);
    }
    if (typeof f.session_token === "string" && f.session_token) {
      // a new conversation: its token resumes it later and opens its images
      state.sessionToken = f.session_token;
      storageSet("localStorage", TOKEN_KEY, f.session_token);
    }
    var history = Array.isArray(f.history) ? f.history : [];
    renderHistory(history, f.status);
    reconcileOutbox(history);
    setConnection("connected");
    startPing();
    flush();
  }

  function onFrame(raw) {
    var f;
    try {
      f = JSON.parse(raw);
    } catch (e) {
      return;
    }
    if (!f || typeof f !== "object") return;
    state.awaitingPong = false; // any frame proves the connection is alive
    switch (f.type) {
      case "welcome":
        onWelcome(f);
        break;
      case "ack":
        var done = takeEntry(f.client_id);
        if (done) done.bubble.classList.remove("pending");
        break;
      case "typing":
        setTyping(!!f.on);
        break;
      case "message":
        setTyping(false);
        renderIncoming(f.from === "agent" ? "agent" : "bot", f.message, null, true);
        if (!state.open) setUnread(state.unread + 1);
        break;
      case "status":
        if (STATUS_TEXT[f.status]) addSystem(STATUS_TEXT[f.status]);
        break;
      case "error":
        if (!state.connected) {
          // Refused before the welcome: the close code that follows explains it to the visitor.
          console.error("Parley widget: " + (f.message || f.error));
          break;
        }
        var failed = typeof f.client_id === "string" ? takeEntry(f.client_id) : null;
        if (failed) markFailed(failed, "Not sent");
        addSystem(typeof f.message === "string" && f.message ? f.message : "Something went wrong. Please try again.", "error");
        break;
      default:
        break; // pong, and frame types from newer servers
    }
  }

  // ------------------------------------------------------------ user actions

  function send(text, payload) {
    var value = String(text === null || text === undefined ? "" : text).trim();
    if (!value) return null;
    clearQuickReplies();
    var frame = { type: "message", text: value };
    if (payload) frame.payload = payload;
    return enqueue(frame, renderUser({ text: value }, null, null), messageKey(value, []));
  }

  function uploadAndSend(file) {
    if (!file) return;
    if (!file.type || file.type.indexOf("image/") !== 0) {
      addSystem("Only images can be sent here. Please choose a photo (PNG, JPEG, WebP or GIF).", "error");
      return;
    }
    if (file.size > MAX_UPLOAD_BYTES) {
      addSystem("That image is larger than 10 MB. Please send a smaller photo.", "error");
      return;
    }
    clearQuickReplies();
    var preview = URL.createObjectURL(file);
    var bubble = renderUser({ attachments: [{}] }, null, preview);
    bubble.classList.add("pending");
    var body = new FormData();
    body.append("file", file, file.name || "image");
    var url = cfg.base + "/v1/bots/" + encodeURIComponent(cfg.bot) + "/uploads?key=" + encodeURIComponent(cfg.key) +
      "&session_token=" + encodeURIComponent(sessionToken());
    var status = 0;
    fetch(url, { method: "POST", body: body, mode: "cors", credentials: "omit" })
      .then(function (res) {
        status = res.status;
        return res.json().catch(function () {
          return null;
        });
      })
      .then(
        function (data) {
          if (status === 201 && data && typeof data.upload_id === "string") {
            enqueue({ type: "message", attachments: [{ upload_id: data.upload_id }] }, bubble, messageKey("", [data.upload_id]));
            return;
          }
          var why = data && typeof data.message === "string" && data.message ? data.message : "The image could not be sent (error " + status + "). Please try again.";
          markFailed({ bubble: bubble }, "Not sent");
          addSystem(why, "error");
        },
        function () {
          markFailed({ bubble: bubble }, "Not sent");
          addSystem("The image could not be uploaded. Check your connection and try again.", "error");
        }
      );
  }

  function openChat(focus) {
    if (!state.open) {
      state.open = true;
      ui.win.hidden = false;
      ui.root.classList.add("open");
      ui.launcher.setAttribute("aria-expanded", "true");
      storageSet("sessionStorage", OPEN_KEY, "1");
      setUnread(0);
      updateHostState();
      if (!ui.log.childNodes.length) renderGreeting();
      if (!state.ws && !state.retryTimer) connect();
      scrollToBottom();
    }
    if (focus) ui.input.focus();
  }

  function closeChat(returnFocus) {
    if (state.open) {
      state.open = false;
      ui.win.hidden = true;
      ui.root.classList.remove("open");
      ui.launcher.setAttribute("aria-expanded", "false");
      storageSet("sessionStorage", OPEN_KEY, "0");
      updateHostState();
    }
    if (returnFocus) ui.launcher.focus();
  }

  ui.launcher.addEventListener("click", function () {
    if (state.open) closeChat(true);
    else openChat(true);
  });
  ui.close.addEventListener("click", function () {
    closeChat(true);
  });
  shadow.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && state.open) {
      ev.preventDefault();
      closeChat(true);
    }
  });
  ui.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (send(ui.input.value, null)) ui.input.value = "";
  });
  ui.attach.addEventListener("click", function () {
    ui.file.click();
  });
  ui.file.addEventListener("change", function () {
    var file = ui.file.files && ui.file.files[0];
    ui.file.value = ""; // choosing the same file again fires change again
    uploadAndSend(file);
  });
  ui.input.addEventListener("paste", function (ev) {
    var files = ev.clipboardData && ev.clipboardData.files;
    if (files && files.length && files[0].type.indexOf("image/") === 0) {
      ev.preventDefault();
      uploadAndSend(files[0]);
    }
  });
  ui.win.addEventListener("dragenter", function (ev) {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    state.dragDepth += 1;
    ui.win.classList.add("dragging");
  });
  ui.win.addEventListener("dragover", function (ev) {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
  });
  ui.win.addEventListener("dragleave", function () {
    state.dragDepth = Math.max(0, state.dragDepth - 1);
    if (!state.dragDepth) ui.win.classList.remove("dragging");
  });
  ui.win.addEventListener("drop", function (ev) {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    state.dragDepth = 0;
    ui.win.classList.remove("dragging");
    uploadAndSend(ev.dataTransfer.files[0]);
  });
  window.addEventListener("online", function () {
    if (state.retryTimer) connect(); // the network is back: retry now rather than after the backoff
  });

  // ------------------------------------------------------------ start

  var mounted = false;
  var pending = [];

  function whenMounted(fn) {
    if (mounted) fn();
    else pending.push(fn);
  }

  function mount() {
    document.body.appendChild(host);
    applyTheme();
    mounted = true;
    updateHostState();
    if (storageGet("sessionStorage", OPEN_KEY) === "1") {
      openChat(false); // reopened after a reload: show it, but do not steal the page's focus
    } else if (storageGet("localStorage", SESSION_KEY)) {
      connect(); // a returning visitor: fetch the conversation so replies can raise the badge
    }
    pending.splice(0).forEach(function (fn) {
      fn();
    });
  }

  window.Parley = Object.freeze({
    version: VERSION,
    open: function () {
      whenMounted(function () {
        openChat(true);
      });
    },
    close: function () {
      whenMounted(function () {
        closeChat(false);
      });
    },
    send: function (text) {
      whenMounted(function () {
        send(text, null);
      });
    },
  });

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();

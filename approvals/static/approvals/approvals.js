// The approvals page: pending approvals, live from the websocket, decided through the REST API.
//
// Sign-in: a personal token from the URL fragment (#token=ail_pat_…&org=<id>, which never reaches the server)
// or pasted into the form, kept in this tab's sessionStorage. A notification's one-time link
// (#link=ail_apl_…) instead shows its one approval and decides it once, as the person it was sent to, through
// /api/v1/approval-links/ (it is no token for anything else). Everything an agent or a requester wrote
// (actions, arguments, reasons) is untrusted and is only ever set as text, never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "aileron.token";
  const LINK_KEY = "aileron.link";
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const RECENT_MAX = 20;
  const HISTORY_PAGES_MAX = 20;
  const SETTLED_LABELS = {
    granted: "Granted",
    rejected: "Rejected",
    expired: "Expired",
    cancelled: "Cancelled",
    pending: "Pending",
  };

  const body = document.body;
  const decideRoles = new Set((body.dataset.decideRoles || "").split(" ").filter(Boolean));
  const state = {
    token: null,
    link: null, // a one-time approval link's secret, while it may still decide
    linkView: null, // what the server said about the link (its approval, its person, may_decide)
    org: UUID.test(body.dataset.org || "") ? body.dataset.org : null,
    me: null,
    role: null,
    pending: new Map(), // id -> {approval, bornAt, card}
    recent: new Map(), // id -> {approval, bornAt, card}
    ws: null,
    attempts: 0,
    reconnectTimer: null,
    historyTimer: null,
  };

  const $ = (id) => document.getElementById(id);

  // --- small DOM helpers --------------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function notice(message) {
    $("notice-text").textContent = message;
    show($("notice"), Boolean(message));
  }

  function setConn(kind, text) {
    const conn = $("conn");
    conn.dataset.state = kind;
    conn.textContent = text;
  }

  function age(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min`;
    const h = Math.floor(m / 60);
    if (h < 24) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  // --- token and API ------------------------------------------------------------------------------------

  function takeFragment() {
    if (!location.hash) return;
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    const org = params.get("org");
    const link = params.get("link");
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    if (link) sessionStorage.setItem(LINK_KEY, link);
    if (!state.org && org && UUID.test(org)) state.org = org;
    // The token must not stay in the address bar, the history or a bookmark.
    const path = state.org ? `/approvals/${state.org}/` : location.pathname;
    history.replaceState(null, "", path + location.search);
  }

  class ApiError extends Error {
    constructor(status, problem, message) {
      super(message);
      this.status = status;
      this.problem = problem;
    }
  }

  // One request to the API; its JSON, or an ApiError with the problem's `detail` (RFC 9457, written for people).
  async function call(path, init) {
    let response;
    try {
      response = await fetch(path, { cache: "no-store", credentials: "omit", ...init });
    } catch (err) {
      throw new ApiError(0, null, "The server cannot be reached. Check your connection and try again.");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const detail = data && (data.detail || data.title);
      throw new ApiError(response.status, data, detail || `The server answered ${response.status}.`);
    }
    return data;
  }

  async function api(method, path, payload) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
    const init = { method, headers };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    return call(path, init);
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    forgetLink();
    state.linkView = null;
    delete body.dataset.mode;
    show($("tab-history"), true);
    state.token = null;
    stopSocket();
    show($("board"), false);
    show($("orgs"), false);
    show($("sign-out"), false);
    show($("switch-org"), false);
    setConn("idle", "Not connected");
    show($("signin"), true);
    notice(message || "");
    $("token-input").focus();
  }

  // --- a one-time approval link --------------------------------------------------------------------------

  function forgetLink() {
    sessionStorage.removeItem(LINK_KEY);
    state.link = null;
  }

  async function linkCall(verb, payload) {
    // The link's secret is the credential, in the body: no Authorization header.
    return call(`/api/v1/approval-links/${verb}/`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(payload),
    });
  }

  async function startLink() {
    show($("signin"), false);
    let view;
    try {
      view = await linkCall("open", { token: state.link });
    } catch (err) {
      forgetLink();
      signOut(err.status === 404 ? `${err.message} Sign in to see the approvals.` : err.message);
      return;
    }
    showLink(view, "");
  }

  function showLink(view, message) {
    state.linkView = view;
    state.org = view.organization.id;
    state.me = { kind: "apl", user: { id: view.decider_id, email: view.decider } };
    body.dataset.mode = "link";
    $("org-name").textContent = `${view.organization.name} · deciding as ${view.decider} through a one-time link`;
    show($("tab-history"), false);
    show($("board"), true);
    if (!view.may_decide) {
      forgetLink(); // used up, or nothing left to decide: it must not linger in the tab
      setConn("link", "Link used up");
      notice(
        message ||
          (view.used_at
            ? "This link has been used: it decides once. Sign in to see the other approvals."
            : "This approval can no longer be decided through this link."),
      );
    } else {
      setConn("link", "One-time link");
    }
    keep(view.approval);
    renderPending();
  }

  // --- start-up -----------------------------------------------------------------------------------------

  async function start() {
    show($("signin"), false);
    show($("sign-out"), true);
    try {
      state.me = await api("GET", "/api/v1/whoami/");
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        signOut(`The server refused the token: ${err.message}`);
      } else {
        notice(err.message);
      }
      return;
    }
    if (state.me.kind !== "pat") {
      signOut("That is not a personal token: agents' session tokens cannot decide approvals.");
      return;
    }
    const memberships = state.me.memberships || [];
    if (!state.org) {
      if (memberships.length === 1) {
        location.replace(`/approvals/${memberships[0].organization}/`);
        return;
      }
      listOrganizations(memberships);
      return;
    }
    const membership = memberships.find((m) => m.organization === state.org);
    if (!membership) {
      notice("No such organization, or you are not a member of it.");
      listOrganizations(memberships);
      return;
    }
    state.role = membership.role;
    $("org-name").textContent = `${membership.name} · ${state.me.user.email} (${membership.role})`;
    show($("switch-org"), memberships.length > 1);
    show($("board"), true);
    renderPending();
    connect();
  }

  function listOrganizations(memberships) {
    const list = $("org-list");
    list.replaceChildren();
    for (const m of memberships) {
      const item = el("li");
      const link = el("a", "org-link", m.name);
      link.href = `/approvals/${m.organization}/`;
      item.append(link, el("span", "muted", ` ${m.role}`));
      list.append(item);
    }
    if (!memberships.length) list.append(el("li", "muted", "You are not a member of any organization."));
    show($("orgs"), true);
  }

  // --- the websocket ------------------------------------------------------------------------------------

  function stopSocket() {
    clearTimeout(state.reconnectTimer);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close();
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (!state.token || !state.org) return;
    setConn("connecting", "Connecting…");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    let ws;
    try {
      // Browsers cannot set headers on a websocket: the token rides as a subprotocol the server never echoes.
      ws = new WebSocket(`${scheme}://${location.host}/ws/orgs/${state.org}/approvals/`, [
        "aileron.v1",
        `bearer.${state.token}`,
      ]);
    } catch (err) {
      reconnectLater();
      return;
    }
    state.ws = ws;
    ws.onmessage = (event) => {
      if (state.ws !== ws) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      receive(message);
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return; // replaced or stopped on purpose
      state.ws = null;
      if (event.code === 4401) {
        signOut("The server refused the token (expired or revoked). Paste a new one.");
      } else if (event.code === 4403) {
        signOut("That is not a personal token: agents' session tokens cannot decide approvals.");
      } else if (event.code === 4404) {
        setConn("offline", "Not connected");
        notice("No such organization, or you are no longer a member of it.");
      } else {
        reconnectLater();
      }
    };
  }

  function reconnectLater() {
    // Exponential backoff with jitter, capped at 30 s; the snapshot on reconnect resyncs the list.
    const delay = Math.min(30000, 1000 * 2 ** state.attempts) * (0.5 + Math.random() / 2);
    state.attempts = Math.min(state.attempts + 1, 10);
    setConn("offline", `Offline · retrying in ${Math.ceil(delay / 1000)} s`);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function receive(message) {
    if (message.event === "snapshot") {
      state.attempts = 0;
      setConn("live", "Live");
      const fresh = new Set();
      for (const approval of message.approvals || []) {
        fresh.add(approval.id);
        keep(approval);
      }
      for (const [id, entry] of state.pending) {
        if (!fresh.has(id)) {
          // Settled while we were away (or no longer ours to see): the morning view has it.
          state.pending.delete(id);
          entry.card.remove();
        }
      }
      renderPending();
      historyChanged();
      return;
    }
    if (message.approval && message.approval.id) {
      keep(message.approval);
      renderPending();
      historyChanged();
    }
  }

  // --- keeping the lists --------------------------------------------------------------------------------

  function keep(approval) {
    const bornAt = Date.now() - (Number(approval.age_seconds) || 0) * 1000;
    if (approval.state === "pending") {
      const entry = state.pending.get(approval.id);
      if (entry) {
        entry.approval = approval;
        fillPendingCard(entry);
      } else {
        const fresh = { approval, bornAt, card: null };
        fresh.card = pendingCard(fresh);
        state.pending.set(approval.id, fresh);
      }
      return;
    }
    const was = state.pending.get(approval.id);
    if (was) {
      state.pending.delete(approval.id);
      was.card.remove();
    }
    const known = state.recent.get(approval.id);
    if (!was && !known && !state.linkView) return; // never shown here: the morning view has it
    const entry = known || { approval, bornAt, card: null };
    entry.approval = approval;
    if (entry.card) entry.card.remove();
    entry.card = settledCard(approval);
    state.recent.delete(approval.id);
    state.recent.set(approval.id, entry);
    while (state.recent.size > RECENT_MAX) {
      const oldest = state.recent.keys().next().value;
      state.recent.get(oldest).card.remove();
      state.recent.delete(oldest);
    }
    const recent = $("recent");
    recent.prepend(entry.card);
    show($("recent-section"), true);
  }

  function renderPending() {
    const list = $("pending");
    const entries = [...state.pending.values()].sort((a, b) =>
      a.approval.created_at < b.approval.created_at ? 1 : -1,
    );
    // Re-append in order: moving nodes keeps whatever reason an approver is typing in a card.
    for (const entry of entries) list.append(entry.card);
    $("pending-count").textContent = String(entries.length);
    show($("pending-empty"), entries.length === 0);
    document.title = entries.length ? `(${entries.length}) Approvals · Aileron` : "Approvals · Aileron";
    tick();
  }

  // --- cards --------------------------------------------------------------------------------------------

  function argsList(args) {
    const entries = Object.entries(args || {});
    if (!entries.length) return el("p", "muted", "No arguments were parsed from this request.");
    const list = el("dl", "args");
    for (const [key, value] of entries) {
      list.append(el("dt", "", key));
      const dd = el("dd");
      if (value !== null && typeof value === "object") {
        dd.append(el("pre", "", JSON.stringify(value, null, 2)));
      } else {
        dd.textContent = value === null ? "null" : String(value);
      }
      list.append(dd);
    }
    return list;
  }

  function mayDecide() {
    if (state.linkView) return Boolean(state.linkView.may_decide);
    return decideRoles.has(state.role);
  }

  function myId() {
    return state.me && state.me.user ? state.me.user.id : null;
  }

  function pendingCard(entry) {
    const card = el("article", "card");
    card.dataset.approvalId = entry.approval.id;
    const head = el("header", "card-head");
    const title = el("h3", "action");
    const ageNode = el("span", "age");
    ageNode.dataset.born = String(entry.bornAt);
    head.append(title, ageNode);
    const fields = el("div", "fields");
    const controls = el("div", "decide");
    const error = el("p", "error");
    error.setAttribute("role", "alert");
    error.hidden = true;
    card.append(head, fields, controls, error);

    if (mayDecide()) {
      const label = el("label", "reason-label", "Reason (required to reject)");
      const reason = el("input", "reason");
      reason.type = "text";
      reason.maxLength = 1000;
      reason.autocomplete = "off";
      label.append(reason);
      const buttons = el("div", "buttons");
      const grant = el("button", "grant primary", "Grant");
      grant.type = "button";
      const reject = el("button", "reject danger", "Reject");
      reject.type = "button";
      buttons.append(grant, reject);
      controls.append(label, buttons);
      grant.addEventListener("click", () => decide(entry, "grant", reason.value, card));
      reject.addEventListener("click", () => {
        if (!reason.value.trim()) {
          fail(card, "A rejection needs a reason: the agent and the requester are shown it.");
          reason.focus();
          return;
        }
        decide(entry, "reject", reason.value, card);
      });
    } else if (!state.linkView) {
      const withdraw = el("button", "cancel", "Withdraw this request");
      withdraw.type = "button";
      controls.append(withdraw);
      withdraw.addEventListener("click", () => decide(entry, "cancel", "", card));
    }
    fillPendingCard(entry, card);
    return card;
  }

  function fillPendingCard(entry, cardNode) {
    const a = entry.approval;
    const card = cardNode || entry.card;
    card.dataset.state = a.state;
    card.querySelector(".action").textContent = a.action || `${a.method} ${a.host}${a.path}`;
    const fields = card.querySelector(".fields");
    fields.replaceChildren();
    const who = el("p", "who");
    who.append("Asked by ", el("strong", "requester", a.requester_email || "unknown"));
    if (a.agent) who.append(" · agent ", el("strong", "agent", a.agent));
    fields.append(who, argsList(a.args));
    fields.append(el("p", "request muted", `${a.method} ${a.host}${a.path}${a.query ? `?${a.query}` : ""}`));
    if (a.held_reason) fields.append(el("p", "why", `Held because: ${a.held_reason}`));
    const rules = [];
    if (a.four_eyes) {
      rules.push(
        a.requester_id && a.requester_id === myId()
          ? "Four eyes: this is your agent's request, so someone else must decide it."
          : "Four eyes: the requester may not decide it.",
      );
    }
    if (a.approvers_required > 1) {
      rules.push(`Needs ${a.approvers_required} approvers: ${a.grants || 0} granted so far.`);
      const mine = (a.decisions || []).some((d) => d.approver_id && d.approver_id === myId());
      if (mine) rules.push("You have granted it; another approver must agree.");
    }
    for (const rule of rules) fields.append(el("p", "rule", rule));
    if (a.expires_at && a.created_at) {
      const expires = el("p", "expires muted");
      const lifetime = new Date(a.expires_at).getTime() - new Date(a.created_at).getTime();
      expires.dataset.expires = String(entry.bornAt + lifetime);
      fields.append(expires);
    }
  }

  function decisionsText(a) {
    return (a.decisions || [])
      .map((d) => `${d.decision === "grant" ? "granted" : "rejected"} by ${d.approver}${d.reason ? `: ${d.reason}` : ""}`)
      .join("; ");
  }

  function outcomeText(a) {
    if (a.completed) {
      return a.outcome_status ? `Used; upstream answered ${a.outcome_status}` : "Used; waiting for the upstream's answer";
    }
    if (a.state === "granted") return "Granted; not used yet";
    if (a.state === "expired" && (a.decisions || []).some((d) => d.decision === "grant")) {
      return "Granted but never used";
    }
    return SETTLED_LABELS[a.state] || a.state;
  }

  function settledCard(a) {
    const card = el("article", "card settled");
    card.dataset.approvalId = a.id;
    card.dataset.state = a.state;
    const head = el("header", "card-head");
    head.append(el("h3", "action", a.action), el("span", `badge badge-${a.state}`, SETTLED_LABELS[a.state] || a.state));
    card.append(head);
    card.append(el("p", "who", `Asked by ${a.requester_email || "unknown"}${a.agent ? ` · agent ${a.agent}` : ""}`));
    card.append(el("p", "outcome", outcomeText(a)));
    const decided = decisionsText(a);
    if (decided) card.append(el("p", "decided muted", decided));
    else if (a.decision_reason) card.append(el("p", "decided muted", a.decision_reason));
    return card;
  }

  function fail(card, message) {
    const error = card.querySelector(".error");
    error.textContent = message;
    error.hidden = !message;
  }

  async function decide(entry, verb, reason, card) {
    const buttons = card.querySelectorAll("button");
    buttons.forEach((b) => {
      b.disabled = true;
    });
    fail(card, "");
    const payload = verb === "cancel" ? undefined : { reason: reason.trim() };
    if (state.linkView) {
      try {
        const view = await linkCall("decide", {
          token: state.link,
          approval_id: entry.approval.id,
          decision: verb,
          reason: reason.trim(),
        });
        const done = view.approval.state === "pending" ? "Your vote is in" : `Done: ${view.approval.state}`;
        showLink(view, `${done}. This link is now used up.`);
      } catch (err) {
        fail(card, err.message);
        buttons.forEach((b) => {
          b.disabled = false;
        });
      }
      return;
    }
    try {
      const updated = await api(
        "POST",
        `/api/v1/orgs/${state.org}/approvals/${entry.approval.id}/${verb}/`,
        payload,
      );
      keep(updated);
      renderPending();
      historyChanged();
    } catch (err) {
      fail(card, err.message);
      if (err.status === 401) signOut("The server refused the token (expired or revoked). Paste a new one.");
    } finally {
      buttons.forEach((b) => {
        b.disabled = false;
      });
    }
  }

  function tick() {
    const now = Date.now();
    for (const node of document.querySelectorAll("[data-born]")) {
      node.textContent = `${age(now - Number(node.dataset.born))} ago`;
    }
    for (const node of document.querySelectorAll("[data-expires]")) {
      const left = Number(node.dataset.expires) - now;
      node.textContent = left > 0 ? `Expires in ${age(left)}` : "Expired: it can no longer be decided";
    }
  }

  // --- the morning view ---------------------------------------------------------------------------------

  const GROUPS = [
    ["pending", "Still pending", (a) => a.state === "pending"],
    ["completed", "Completed", (a) => a.completed],
    ["granted", "Granted, not used yet", (a) => a.state === "granted" && !a.completed],
    ["rejected", "Rejected", (a) => a.state === "rejected"],
    ["expired", "Expired", (a) => a.state === "expired"],
    ["cancelled", "Cancelled", (a) => a.state === "cancelled"],
  ];

  function historyVisible() {
    return !$("history-view").hidden;
  }

  function historyChanged() {
    if (!historyVisible()) return;
    clearTimeout(state.historyTimer);
    state.historyTimer = setTimeout(loadHistory, 500);
  }

  async function loadHistory() {
    const hours = Math.min(720, Math.max(1, Number($("history-hours").value) || 12));
    const since = new Date(Date.now() - hours * 3600 * 1000).toISOString();
    const status = $("history-status");
    status.textContent = "Loading…";
    const found = [];
    let path = `/api/v1/orgs/${state.org}/approvals/?${new URLSearchParams({ state: "all", since, limit: "500" })}`;
    try {
      for (let page = 0; path && page < HISTORY_PAGES_MAX; page += 1) {
        const data = await api("GET", path);
        found.push(...(data.results || []));
        path = data.next ? new URL(data.next, location.href).pathname + new URL(data.next, location.href).search : null;
      }
    } catch (err) {
      status.textContent = "";
      notice(err.message);
      return;
    }
    status.textContent = `${found.length} approval${found.length === 1 ? "" : "s"} asked since ${when(since)}.`;
    renderHistory(found);
  }

  function renderHistory(approvals) {
    const root = $("history");
    root.replaceChildren();
    for (const [key, title, test] of GROUPS) {
      const items = approvals.filter(test);
      const section = el("section", "group");
      section.dataset.group = key;
      section.append(el("h2", "", `${title} (${items.length})`));
      if (!items.length) {
        section.classList.add("empty-group");
        root.append(section);
        continue;
      }
      const list = el("ul", "history-list");
      for (const a of items) {
        const item = el("li", "history-item");
        item.dataset.approvalId = a.id;
        item.dataset.state = a.state;
        const head = el("div", "history-head");
        head.append(el("strong", "action", a.action), el("span", "muted", when(a.created_at)));
        item.append(head);
        const args = Object.entries(a.args || {})
          .map(([k, v]) => `${k}=${typeof v === "object" && v !== null ? JSON.stringify(v) : v}`)
          .join(", ");
        if (args) item.append(el("p", "args-inline", args));
        item.append(el("p", "who muted", `Asked by ${a.requester_email || "unknown"}${a.agent ? ` · agent ${a.agent}` : ""}`));
        item.append(el("p", "outcome", outcomeText(a)));
        const decided = decisionsText(a) || (a.state === "cancelled" || a.state === "expired" ? a.decision_reason : "");
        if (decided) item.append(el("p", "decided muted", decided));
        list.append(item);
      }
      section.append(list);
      root.append(section);
    }
  }

  // --- tabs and forms -----------------------------------------------------------------------------------

  function selectTab(name) {
    const history = name === "history";
    $("tab-pending").setAttribute("aria-selected", String(!history));
    $("tab-history").setAttribute("aria-selected", String(history));
    show($("pending-view"), !history);
    show($("history-view"), history);
    if (history) loadHistory();
  }

  function wire() {
    $("notice-close").addEventListener("click", () => notice(""));
    $("sign-out").addEventListener("click", () => signOut(""));
    $("tab-pending").addEventListener("click", () => selectTab("pending"));
    $("tab-history").addEventListener("click", () => selectTab("history"));
    $("history-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadHistory();
    });
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (!token.startsWith("ail_pat_")) {
        notice("Paste a personal token (it starts with ail_pat_); agents' session tokens cannot decide.");
        return;
      }
      $("token-input").value = "";
      sessionStorage.setItem(TOKEN_KEY, token);
      state.token = token;
      notice("");
      start();
    });
    setInterval(tick, 1000);
    // A phone that slept or lost its network: retry now rather than at the end of the backoff.
    const retryNow = () => {
      if (state.token && state.org && !state.ws && !$("board").hidden && document.visibilityState === "visible") {
        state.attempts = 0;
        connect();
      }
    };
    window.addEventListener("online", retryNow);
    document.addEventListener("visibilitychange", retryNow);
  }

  function boot() {
    takeFragment();
    wire();
    state.link = sessionStorage.getItem(LINK_KEY);
    if (state.link) {
      startLink();
      return;
    }
    state.token = sessionStorage.getItem(TOKEN_KEY);
    if (!state.token) {
      signOut("");
      return;
    }
    start();
  }

  boot();
})();

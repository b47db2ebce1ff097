// phasestream dashboard: polls the JSON API of this server and hands the answers to the
// panels (overview.js, panels.js) and the workflow page (workflow.js); signs in, checks the
// URL's parameters and routes (#workflow=ID). No dependencies and no network access beyond
// this origin (see the page's CSP). Every number on the page carries data-* attributes
// (data-chart|data-table, data-phase, data-metric, data-value) so tests and scripts can
// read the raw value next to the formatted text.
"use strict";

(() => {
  const C = window.PhaseCharts;
  const { el } = C;
  const RECENT = 20;  // rows of the violations, chains and running tables
  const SEARCH_LIMIT = 10;
  const TIMEOUT_MS = 10000;
  const DLQ_TIMEOUT_MS = 15000;  // beyond the server's own 10 s, so its 503 says why
  // The time series change by the bucket: asked again every 15 s, not with every poll
  // (one chart is three requests per phase), and at once when the filters change.
  const SERIES_EVERY_MS = 15000;
  // Window -> [since asked, step, what the panel says]; "all" is bounded (1500 buckets).
  const SERIES = { "1h": ["1h", "1m", "last hour, 1 min buckets"],
                   "24h": ["24h", "5m", "last 24 h, 5 min buckets"],
                   "7d": ["7d", "1h", "last 7 days, 1 h buckets"],
                   "30d": ["30d", "1h", "last 30 days, 1 h buckets"],
                   all: ["30d", "1h", "last 30 days (the longest series), 1 h buckets"] };
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  // The bearer token lives in this tab's sessionStorage only: never in the URL (logs,
  // history, Referer) and never in a cookie (sent along by any page that links here).
  const TOKEN_KEY = "phasestream.token";

  const state = { timer: null, refreshes: 0, last: null, inFlight: false, series: null,
                  seriesKey: "", seriesAt: 0, dlq: null, dlqInFlight: false, again: false };
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- URL parameters
  const PARAMS = ["since", "phase", "refresh", "prefix", "user"];

  // Each bad or unknown URL parameter is named on the page, with what was used instead.
  function checkUrl(query) {
    const problems = [];
    for (const [name, value] of query) {
      if (!PARAMS.includes(name)) {
        problems.push([name, `${name}=${value}: unknown parameter (known: ${PARAMS.join(", ")})`]);
        continue;
      }
      const select = $(`filter-${name}`);
      if (select && ![...select.options].some((o) => o.value === value)) {
        const allowed = [...select.options].map((o) => o.value || "all").join(", ");
        problems.push([name, `${name}=${value}: not one of ${allowed}; ` +
                             `showing ${select.options[select.selectedIndex].text}`]);
      }
      if (name === "user" && !UUID.test(value)) {
        problems.push([name, `user=${value}: not a UUID; searching every user`]);
      }
      if (name === "prefix" && (value.length > 255 || value.includes("\0"))) {
        problems.push([name, "prefix: at most 255 characters, no NUL; searching every id"]);
      }
    }
    const box = $("param-warning");
    box.hidden = problems.length === 0;
    box.dataset.params = problems.map(([name]) => name).join(",");
    box.replaceChildren(el("strong", {}, "Ignored in the URL: "),
                        ...problems.map(([, text]) => el("span", { class: "problem" }, text)));
    return new Set(problems.map(([name]) => name));
  }

  // ---------------------------------------------------------------- workflow page
  const routeWorkflow = () => {
    const match = /^#workflow=(.+)$/.exec(location.hash);
    try {
      return match ? decodeURIComponent(match[1]) : null;
    } catch (_) {
      return match[1];  // not valid percent-encoding: the id as written (the API says 404)
    }
  };

  // The workflow page replaces the overview; polling goes on, and redraws the page too.
  async function showRoute() {
    const id = routeWorkflow();
    const page = $("workflow-page");
    document.body.dataset.view = id === null ? "overview" : "workflow";
    $("overview").hidden = id !== null;
    page.hidden = id === null;
    if (id === null) {
      page.dataset.workflowId = "";
      if (state.last) render(state.last);  // drawn while hidden: at its real width now
      return;
    }
    if (page.dataset.workflowId !== id) {
      page.dataset.workflowId = id;
      page.dataset.state = "loading";
      $("workflow-body").replaceChildren(el("p", { class: "muted" }, `loading ${id}…`));
      window.scrollTo(0, 0);
    }
    await drawWorkflow(id);
  }

  async function drawWorkflow(id) {
    const page = $("workflow-page"), box = $("workflow-body");
    try {
      const data = await getJson(`api/workflows/${encodeURIComponent(id)}`,
                                 new URLSearchParams({ limit: "1000" }));
      if (routeWorkflow() !== id) return;  // the reader moved on meanwhile
      window.PhaseWorkflow.render(box, data, Date.parse(data.now || "") || Date.now());
      page.dataset.state = "ready";
    } catch (err) {
      if (err instanceof AuthError) return askForToken(err);
      box.replaceChildren(el("p", { class: "error", "data-error": "workflow" },
                             `Could not show workflow ${id}: ${err.message}`));
      page.dataset.state = "error";
    }
  }

  // ---------------------------------------------------------------- polling
  function filters() {
    const params = new URLSearchParams();
    const since = $("filter-since").value;
    const phase = $("filter-phase").value;
    if (since && since !== "all") params.set("since", since);
    if (phase) params.set("phase", phase);
    return params;
  }

  // ---------------------------------------------------------------- sign-in
  class AuthError extends Error {
    constructor(status, code, reason) {
      super(reason || code || String(status));
      this.status = status;
      this.code = code;
    }
  }
  const storedToken = () => sessionStorage.getItem(TOKEN_KEY);

  function refusalText(err, hadToken) {
    if (err.code === "expired") return "Your token has expired: sign in with a new one.";
    if (err.status === 403) return `This token may not read the data: ${err.message}.`;
    if (hadToken) return `The token was refused: ${err.message}.`;
    return "This server needs a token to show its data.";
  }

  function askForToken(err) {
    // Several requests may be refused at once (the poll, the workflow page): the first
    // one's reason is the one shown.
    if (document.body.dataset.state === "signin") return;
    const hadToken = storedToken() !== null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(state.timer);
    document.body.dataset.state = "signin";
    setStatus("signin", "sign-in needed");
    $("error").hidden = true;
    $("signout").hidden = true;
    const message = $("signin-message");
    message.textContent = refusalText(err, hadToken);
    message.dataset.code = err.code || "";
    message.hidden = false;
    $("signin").hidden = false;
    $("signin-token").focus();
  }

  function signIn(event) {
    event.preventDefault();
    const input = $("signin-token");
    const token = input.value.trim().replace(/^Bearer\s+/i, "");
    input.value = "";
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("signin").hidden = true;
    document.body.dataset.state = "loading";
    setStatus("loading", "signing in…");
    refresh();
  }

  function signOut() {
    askForToken(new AuthError(401, "signed_out", ""));
    $("signin-message").textContent = "Signed out.";
  }

  class HttpError extends Error {
    constructor(path, status, reason) {
      super(`${path}: ${status} ${reason}`);
      this.status = status;
    }
  }

  async function getJson(path, params, timeoutMs = TIMEOUT_MS) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    const headers = { Accept: "application/json" };
    const token = storedToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      const query = params.toString();
      const response = await fetch(`${path}${query ? `?${query}` : ""}`,
                                   { cache: "no-store", credentials: "omit", headers,
                                     signal: controller.signal });
      let body = null;
      try { body = await response.json(); } catch (_) { body = null; }
      if (response.status === 401 || response.status === 403) {
        throw new AuthError(response.status, body && body.error, body && body.reason);
      }
      if (!response.ok) {
        const reason = body && body.error ? body.error : response.statusText;
        throw new HttpError(path, response.status, reason);
      }
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  function setStatus(kind, text) {
    const status = $("status");
    status.dataset.state = kind;
    $("status-text").textContent = text;
  }

  async function fetchAll(base, paged) {
    const running = new URLSearchParams({ limit: String(RECENT) });
    if (base.get("phase")) running.set("phase", base.get("phase"));
    const [analytics, sla, rollbacks, live, workflows, dlq] = await Promise.all([
      getJson("api/analytics", paged(100)),
      getJson("api/sla", paged(RECENT)),
      getJson("api/rollbacks", paged(RECENT)),
      getJson("api/running", running),
      fetchWorkflows(),
    ]);
    const series = await fetchSeries(base, analytics.items.map((r) => r.phase));
    return { analytics, sla, rollbacks, running: live, workflows, series };
  }

  // Dead letters come from a scan of a Kafka topic (the server gives up after 10 s): asked
  // beside the poll, never holding it up, one request at a time.
  function refreshDeadLetters() {
    if (state.dlqInFlight) return;
    state.dlqInFlight = true;
    fetchDeadLetters().then((dlq) => {
      state.dlq = dlq;
      window.PhasePanels.drawDeadLetters(dlq);
    }).catch(() => {
      // Only an AuthError gets here: the poll beside it asks for the token, once.
    }).finally(() => { state.dlqInFlight = false; });
  }

  // A server without /api/dlq (404) says so in the panel; the rest of the page still draws.
  async function fetchDeadLetters() {
    try {
      return { state: "ready",
               body: await getJson("api/dlq", new URLSearchParams(), DLQ_TIMEOUT_MS) };
    } catch (err) {
      if (err instanceof AuthError) throw err;
      if (err instanceof HttpError && err.status === 404) return { state: "unavailable" };
      return { state: "error", message: err.message };
    }
  }

  function searchParams() {
    const params = new URLSearchParams({ limit: String(SEARCH_LIMIT) });
    const prefix = $("search-prefix").value.trim(), user = $("search-user").value.trim();
    if (prefix) params.set("prefix", prefix);
    if (user) params.set("user", user);
    return params;
  }

  async function fetchWorkflows() {
    try {
      return { found: await getJson("api/workflows", searchParams()), error: null };
    } catch (err) {
      if (err instanceof AuthError) throw err;
      return { found: null, error: err.message };
    }
  }

  // Per phase with events in the window: started and failed per bucket, and p95 against
  // the phase's SLA; violations over time for all phases (or the one chosen).
  async function fetchSeries(base, phases) {
    const [since, step, label] = SERIES[$("filter-since").value] || SERIES["24h"];
    const key = `${since}|${step}|${phases.join(",")}|${base.get("phase") || ""}`;
    if (state.series && key === state.seriesKey && Date.now() - state.seriesAt < SERIES_EVERY_MS) {
      return state.series;
    }
    const ask = (metric, phase) => {
      const params = new URLSearchParams({ metric, step, since });
      if (phase !== null) params.set("phase", String(phase));
      return getJson("api/timeseries", params);
    };
    const perPhase = await Promise.all(phases.map(async (phase) => {
      const [started, failed, p95] = await Promise.all(
        ["started", "failed", "p95_duration"].map((m) => ask(m, phase)));
      return { phase, started, failed, p95 };
    }));
    const selected = base.get("phase");
    const violations = await ask("violations", selected === null ? null : Number(selected));
    Object.assign(state, { series: { perPhase, violations, label }, seriesKey: key,
                           seriesAt: Date.now() });
    return state.series;
  }

  function render(data) {
    const P = window.PhasePanels;
    P.drawRunning(data.running);
    P.drawHealth(data.running);
    if (state.dlq) P.drawDeadLetters(state.dlq);
    P.drawSeries(data.series);
    P.drawWorkflows(data.workflows);
    window.PhaseOverview.render(data);
    document.body.dataset.drawnAt = String(window.innerWidth);  // for tests: drawn at this width
  }

  async function refresh() {
    if (state.inFlight) {  // a filter changed mid-poll: poll again as soon as this one ends
      state.again = true;
      return;
    }
    state.inFlight = true;
    clearTimeout(state.timer);
    const base = filters();
    const paged = (limit) => {
      const params = new URLSearchParams(base);
      params.set("limit", String(limit));
      return params;
    };
    refreshDeadLetters();
    try {
      state.last = await fetchAll(base, paged);
      render(state.last);
      state.refreshes += 1;
      const now = new Date();
      const stamp = now.toISOString();
      document.body.dataset.state = "ready";
      document.body.dataset.refreshes = String(state.refreshes);
      $("updated").dataset.updated = stamp;
      $("updated").textContent = `updated ${stamp.slice(11, 19)} UTC`;
      $("error").hidden = true;
      $("signin").hidden = true;
      $("signout").hidden = storedToken() === null;
      setStatus("live", `live · ${stamp.slice(11, 19)} UTC`);
      if (routeWorkflow() !== null) showRoute();
    } catch (err) {
      if (err instanceof AuthError) {
        askForToken(err);
        return;
      }
      document.body.dataset.state = "error";
      const box = $("error");
      box.textContent = `Could not refresh: ${err.message}. Showing the last data; retrying.`;
      box.hidden = false;
      setStatus("error", "API unreachable");
    } finally {
      state.inFlight = false;
      const again = state.again;
      state.again = false;
      if (document.body.dataset.state !== "signin") {
        if (again) refresh();
        else schedule();
      }
    }
  }

  // A search answers at once, whatever the poll is doing.
  async function search(event) {
    event.preventDefault();
    syncUrl();
    try {
      const found = await fetchWorkflows();
      if (state.last) state.last.workflows = found;
      window.PhasePanels.drawWorkflows(found);
    } catch (err) {
      if (err instanceof AuthError) askForToken(err);
    }
  }

  function schedule() {
    clearTimeout(state.timer);
    const seconds = Number($("filter-refresh").value);
    if (seconds > 0) {
      state.timer = setTimeout(refresh, seconds * 1000);
    } else if (document.body.dataset.state === "ready") {
      setStatus("paused", "paused");
    }
  }

  function syncUrl() {
    const params = new URLSearchParams();
    for (const name of ["since", "phase", "refresh"]) {
      const value = $(`filter-${name}`).value;
      if (value) params.set(name, value);
    }
    for (const name of ["prefix", "user"]) {
      const value = $(`search-${name}`).value.trim();
      if (value) params.set(name, value);
    }
    history.replaceState(null, "", `${location.pathname}?${params}${location.hash}`);
  }

  function init() {
    const query = new URLSearchParams(location.search);
    const refused = checkUrl(query);
    for (const name of ["prefix", "user"]) {
      $(`search-${name}`).value = refused.has(name) ? "" : query.get(name) || "";
    }
    $("search").addEventListener("submit", search);
    window.addEventListener("hashchange", showRoute);
    showRoute();
    for (const name of ["since", "phase", "refresh"]) {
      const select = $(`filter-${name}`);
      const wanted = query.get(name);
      if (wanted !== null && [...select.options].some((o) => o.value === wanted)) {
        select.value = wanted;
      }
      select.addEventListener("change", () => { syncUrl(); refresh(); });
    }
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", signOut);
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        if (state.last) render(state.last);
        if (routeWorkflow() !== null) showRoute();  // its timeline, at the new width
      }, 150);
    });
    refresh();
  }

  document.addEventListener("DOMContentLoaded", init);
})();

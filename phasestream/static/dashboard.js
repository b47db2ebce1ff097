// phasestream dashboard: polls the JSON API of this server and draws inline SVG charts.
// No dependencies and no network access beyond this origin (see the page's CSP).
// Every number on the page comes from /api/analytics, /api/sla or /api/rollbacks; each
// one carries data-* attributes (data-chart|data-table, data-phase, data-metric,
// data-value) so tests and scripts can read the raw value next to the formatted text.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const COUNTS = ["started", "completed", "failed", "rolled_back"];
  const RATES = ["completion_rate", "failure_rate", "rollback_rate"];
  // Charted: every failure of phases 2-7 is rolled back, so rolled_back (and its rate)
  // would repeat the failure bar; the per-phase table and the tiles keep them.
  const CHART_COUNTS = ["started", "completed", "failed"];
  const CHART_RATES = ["completion_rate", "failure_rate"];
  const PERCENTILES = ["p50_ms", "p95_ms", "p99_ms"];
  const KINDS = ["late_completed", "late_failed", "overdue"];
  const LABELS = {
    started: "started", completed: "completed", failed: "failed", rolled_back: "rolled back",
    completion_rate: "completion", failure_rate: "failure", rollback_rate: "rollback",
    p50_ms: "p50", p95_ms: "p95", p99_ms: "p99",
  };
  const RECENT = 20;  // rows of the violations and chains tables
  const TIMEOUT_MS = 10000;
  // The bearer token lives in this tab's sessionStorage only: never in the URL (logs,
  // history, Referer) and never in a cookie (sent along by any page that links here).
  const TOKEN_KEY = "phasestream.token";

  const state = { timer: null, refreshes: 0, last: null, inFlight: false };
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- formatting
  const fmtInt = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));
  const fmtPct = (v) => (v === null || v === undefined ? "—" : `${Number(v)}%`);
  const trim = (v, digits) => String(Number(v.toFixed(digits)));
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "—";
    if (ms < 1000) return `${trim(ms, 1)} ms`;
    if (ms < 600000) return `${trim(ms / 1000, 2)} s`;
    if (ms < 7200000) return `${trim(ms / 60000, 1)} min`;
    return `${trim(ms / 3600000, 1)} h`;
  }
  const fmtTime = (iso) => (iso ? `${iso.slice(0, 19).replace("T", " ")}` : "—");
  const raw = (v) => (v === null || v === undefined ? "" : String(v));

  // ---------------------------------------------------------------- DOM helpers
  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function titled(node, text) {
    node.appendChild(svg("title", {}, text));
    return node;
  }
  function empty(container, message) {
    container.replaceChildren(el("p", { class: "empty" }, message));
  }
  function niceStep(span, ticks, integer) {
    const rough = Math.max(span / ticks, integer ? 1 : Number.MIN_VALUE);
    const power = 10 ** Math.floor(Math.log10(rough));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough);
    return integer ? Math.max(1, Math.ceil(step)) : step;
  }
  function widthOf(container, fallback) {
    return Math.max(320, Math.floor(container.clientWidth || fallback));
  }

  // ---------------------------------------------------------------- charts
  function drawThroughput(items) {
    const box = $("chart-throughput");
    if (!items.length) return empty(box, "no events in this window");
    const W = widthOf(box, 1200), H = 280, left = 48, right = 12, top = 16, bottom = 42;
    const max = Math.max(1, ...items.flatMap((r) => CHART_COUNTS.map((m) => r[m])));
    const step = niceStep(max, 4, true);
    const top_ = Math.ceil(max / step) * step;
    const y = (v) => top + (H - top - bottom) * (1 - v / top_);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                              "aria-label": "events per phase and status" });
    for (let t = 0; t <= top_; t += step) {
      root.appendChild(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(t), y2: y(t) }));
      root.appendChild(svg("text", { class: "tick", x: left - 6, y: y(t) + 4,
                                     "text-anchor": "end" }, fmtInt(t)));
    }
    const group = (W - left - right) / items.length;
    const bar = Math.min(34, (group * 0.8) / CHART_COUNTS.length);
    items.forEach((row, i) => {
      const x0 = left + i * group + (group - bar * CHART_COUNTS.length) / 2;
      CHART_COUNTS.forEach((metric, j) => {
        const value = row[metric];
        const g = svg("g", { class: `bar m-${metric}`, "data-chart": "throughput",
                             "data-phase": row.phase, "data-metric": metric,
                             "data-value": raw(value) });
        const x = x0 + j * bar;
        titled(g, `phase ${row.phase} ${LABELS[metric]}: ${fmtInt(value)}`);
        g.appendChild(svg("rect", { x: x + 1, y: y(value), width: bar - 2,
                                    height: Math.max(0, y(0) - y(value)), rx: 2 }));
        g.appendChild(svg("text", { class: "value", x: x + bar / 2, y: y(value) - 4,
                                    "text-anchor": "middle" }, fmtInt(value)));
        root.appendChild(g);
      });
      root.appendChild(svg("text", { class: "axis", x: left + i * group + group / 2, y: H - 16,
                                     "text-anchor": "middle" }, `phase ${row.phase}`));
    });
    root.appendChild(svg("line", { class: "baseline", x1: left, x2: W - right,
                                   y1: y(0), y2: y(0) }));
    box.replaceChildren(legend(CHART_COUNTS), root);
  }

  function drawRates(items) {
    const box = $("chart-rates");
    if (!items.length) return empty(box, "no events in this window");
    const W = widthOf(box, 600), left = 70, right = 64, rowH = 15, gap = 14, top = 8;
    const H = top + items.length * (CHART_RATES.length * rowH + gap) + 18;
    const x = (pct) => left + (W - left - right) * (pct / 100);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                              "aria-label": "completion, failure and rollback rate per phase" });
    for (const t of [0, 25, 50, 75, 100]) {
      root.appendChild(svg("line", { class: "grid", x1: x(t), x2: x(t), y1: top, y2: H - 18 }));
      root.appendChild(svg("text", { class: "tick", x: x(t), y: H - 4, "text-anchor": "middle" },
                           `${t}%`));
    }
    items.forEach((row, i) => {
      const y0 = top + i * (CHART_RATES.length * rowH + gap);
      root.appendChild(svg("text", { class: "axis", x: 4,
                                     y: y0 + (CHART_RATES.length * rowH) / 2 + 4 },
                           `phase ${row.phase}`));
      CHART_RATES.forEach((metric, j) => {
        const value = row[metric];
        const g = svg("g", { class: `bar m-${metric}`, "data-chart": "rates",
                             "data-phase": row.phase, "data-metric": metric,
                             "data-value": raw(value) });
        titled(g, `phase ${row.phase} ${LABELS[metric]} rate: ${fmtPct(value)}`);
        const yy = y0 + j * rowH;
        const w = value === null ? 0 : x(value) - x(0);
        g.appendChild(svg("rect", { x: x(0), y: yy + 1, width: Math.max(0, w),
                                    height: rowH - 3, rx: 2 }));
        g.appendChild(svg("text", { class: "value", x: x(0) + Math.max(0, w) + 4,
                                    y: yy + rowH - 4 }, fmtPct(value)));
        root.appendChild(g);
      });
    });
    box.replaceChildren(legend(CHART_RATES), root);
  }

  function drawDurations(items) {
    const box = $("chart-durations");
    if (!items.length) return empty(box, "no events in this window");
    // Rows balanced (7 cards: one row of 7, or 4 + 3 widened to fill), so no cell is blank.
    const gap = 12, full = box.clientWidth || 1200;
    const fit = Math.max(1, Math.min(items.length, Math.floor((full + gap) / (170 + gap))));
    const perRow = Math.ceil(items.length / Math.ceil(items.length / fit));
    const W = Math.max(150, Math.floor((full - gap * (perRow - 1)) / perRow) - 18);
    const cards = items.map((row) => {
      const H = 200, left = 10, right = 10, top = 22, bottom = 24;
      const values = PERCENTILES.map((m) => row[m]).filter((v) => v !== null);
      const sla = row.sla_ms;
      const max = Math.max(1, ...values, sla ?? 0) * 1.12;
      const y = (v) => top + (H - top - bottom) * (1 - v / max);
      const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                                "aria-label": `phase ${row.phase} durations` });
      const slot = (W - left - right) / PERCENTILES.length;
      root.appendChild(svg("line", { class: "baseline", x1: left, x2: W - right,
                                     y1: y(0), y2: y(0) }));
      if (sla !== null) {
        root.appendChild(titled(svg("line", { class: "sla-line", x1: left, x2: W - right,
                                              y1: y(sla), y2: y(sla) }),
                                `phase ${row.phase} SLA threshold: ${fmtMs(sla)}`));
      }
      PERCENTILES.forEach((metric, j) => {
        const value = row[metric];
        const over = value !== null && sla !== null && value > sla;
        const g = svg("g", { class: `bar m-${metric}${over ? " over" : ""}`,
                             "data-chart": "durations", "data-phase": row.phase,
                             "data-metric": metric, "data-value": raw(value),
                             "data-over-sla": over ? "true" : "false" });
        titled(g, `phase ${row.phase} ${LABELS[metric]}: ${fmtMs(value)}` +
                  (over ? " (over the SLA)" : ""));
        const x = left + j * slot + slot * 0.2, w = slot * 0.6;
        if (value !== null) {
          g.appendChild(svg("rect", { x, y: y(value), width: w, height: y(0) - y(value), rx: 2 }));
        }
        g.appendChild(svg("text", { class: "value", x: x + w / 2,
                                    y: value === null ? y(0) - 6 : Math.max(12, y(value) - 4),
                                    "text-anchor": "middle" }, fmtMs(value)));
        root.appendChild(g);
        root.appendChild(svg("text", { class: "axis", x: x + w / 2, y: H - 8,
                                       "text-anchor": "middle" }, LABELS[metric]));
      });
      const card = el("figure", { class: "multiple", "data-phase": String(row.phase) });
      card.style.flexBasis = `${W + 18}px`;
      const caption = el("figcaption");
      caption.append(el("strong", {}, `phase ${row.phase}`));
      caption.append(el("span", { class: "sla", "data-chart": "durations",
                                  "data-phase": String(row.phase), "data-metric": "sla_ms",
                                  "data-value": raw(sla) },
                        sla === null ? "no SLA" : `SLA ${fmtMs(sla)}`));
      caption.append(el("span", { class: row.over_sla ? "badge bad" : "badge",
                                  "data-chart": "durations", "data-phase": String(row.phase),
                                  "data-metric": "over_sla", "data-value": raw(row.over_sla) },
                        `${fmtInt(row.over_sla)} over SLA`));
      if (!values.length) caption.append(el("span", { class: "muted" }, "none finished"));
      card.append(caption, root);
      return card;
    });
    box.replaceChildren(...cards);
  }

  function legend(metrics) {
    const list = el("ul", { class: "legend" });
    for (const m of metrics) {
      const item = el("li", { class: `m-${m}` });
      item.append(el("span", { class: "swatch" }), LABELS[m]);
      list.appendChild(item);
    }
    return list;
  }

  // ---------------------------------------------------------------- tables and tiles
  function cell(attrs, text, title) {
    const td = el("td", attrs, text);
    if (title) td.title = title;
    return td;
  }
  function fillTable(id, rows, columns, rowAttrs, emptyText) {
    const body = $(id).tBodies[0];
    if (!rows.length) {
      const td = el("td", { colspan: String(columns.length), class: "empty" }, emptyText);
      body.replaceChildren(el("tr", {}, undefined));
      body.rows[0].appendChild(td);
      return;
    }
    body.replaceChildren(...rows.map((row) => {
      const tr = el("tr", rowAttrs(row));
      for (const [field, format, cls] of columns) {
        const attrs = { "data-field": field, "data-value": raw(row[field]) };
        if (cls) attrs.class = cls(row);
        tr.appendChild(cell(attrs, format(row[field]),
                            format === fmtTime ? row[field] : undefined));
      }
      return tr;
    }));
  }

  function drawAnalyticsTable(items) {
    const body = $("table-analytics").tBodies[0];
    if (!items.length) {
      body.replaceChildren(el("tr"));
      body.rows[0].appendChild(el("td", { colspan: "9", class: "empty" },
                                  "no events in this window"));
      return;
    }
    const columns = [...COUNTS.map((m) => [m, fmtInt]), ...RATES.map((m) => [m, fmtPct]),
                     ["over_sla", fmtInt]];
    body.replaceChildren(...items.map((row) => {
      const tr = el("tr", { "data-phase": String(row.phase) });
      tr.appendChild(el("th", { scope: "row" }, String(row.phase)));
      for (const [metric, format] of columns) {
        tr.appendChild(cell({ "data-table": "analytics", "data-phase": String(row.phase),
                              "data-metric": metric, "data-value": raw(row[metric]),
                              class: metric === "over_sla" && row[metric] ? "num bad" : "num" },
                            format(row[metric])));
      }
      return tr;
    }));
  }

  function drawTiles(items, byKind) {
    for (const m of [...COUNTS, "over_sla"]) {
      const total = items.reduce((sum, r) => sum + r[m], 0);
      const node = $(`total-${m}`);
      node.textContent = fmtInt(total);
      node.dataset.value = String(total);
    }
    const counts = Object.fromEntries(byKind.map((k) => [k.kind, k.violations]));
    for (const kind of KINDS) {
      const node = $(`kind-${kind}`);
      node.textContent = fmtInt(counts[kind] ?? 0);
      node.dataset.value = String(counts[kind] ?? 0);
    }
  }

  function drawViolations(sla) {
    fillTable("table-violations", sla.items, [
      ["at", fmtTime], ["kind", String, (r) => `kind k-${r.kind}`], ["workflow_id", String],
      ["phase", String, () => "num"], ["status", String], ["duration_ms", fmtMs, () => "num"],
      ["threshold_ms", fmtMs, () => "num"], ["excess_ms", (v) => `+${fmtMs(v)}`, () => "num bad"],
    ], (r) => ({ "data-table": "violations", "data-event-id": r.event_id, "data-kind": r.kind,
                 "data-phase": String(r.phase) }), "no SLA violations in this window");
  }

  function drawRollbacks(rollbacks) {
    fillTable("table-rollbacks", rollbacks.by_phase, [
      ["phase", String], ["rollbacks", fmtInt, () => "num"], ["workflows", fmtInt, () => "num"],
      ["retries", fmtInt, () => "num"], ["gave_up", fmtInt, (r) => (r.gave_up ? "num bad" : "num")],
      ["loops_stopped", fmtInt, (r) => (r.loops_stopped ? "num bad" : "num")],
    ], (r) => ({ "data-table": "rollbacks", "data-phase": String(r.phase) }),
    "no rollbacks in this window");
    fillTable("table-chains", rollbacks.items, [
      ["workflow_id", String], ["rollbacks", fmtInt, () => "num"], ["chain", String, () => "chain"],
      ["first_at", fmtTime], ["last_at", fmtTime],
    ], (r) => ({ "data-table": "chains", "data-workflow-id": r.workflow_id }),
    "no workflow was rolled back more than once in this window");
  }

  function render(data) {
    const items = data.analytics.items;
    drawRunning(data.running);
    drawHealth(data.running, data.dlq);
    drawSeriesPanels(data.series);
    drawWorkflows(data.workflows);
    drawTiles(items, data.sla.by_kind);
    drawThroughput(items);
    drawRates(items);
    drawAnalyticsTable(items);
    drawDurations(items);
    drawViolations(data.sla);
    drawRollbacks(data.rollbacks);
  }

  // ---------------------------------------------------------------- over time
  const C = window.PhaseCharts;
  const SERIES_STEP = { "1h": "1m", "24h": "1h", "7d": "1h", "30d": "1h", all: "1h" };
  const msFormat = (v) => fmtMs(v);
  const intFormat = (v) => fmtInt(v);

  // Per phase with events in the window (or the one asked for): started and failed per
  // bucket, and p95 against the phase's SLA. Violations over time: one chart, all phases.
  async function fetchSeries(base, phases) {
    const since = $("filter-since").value;
    const ask = (metric, phase) => {
      const params = new URLSearchParams({ metric, step: SERIES_STEP[since] || "1h",
                                           since: since === "all" ? "30d" : since });
      if (phase !== null) params.set("phase", String(phase));
      return getJson("api/timeseries", params);
    };
    const selected = base.get("phase");
    const perPhase = await Promise.all(phases.map(async (phase) => {
      const [started, failed, p95] = await Promise.all(
        ["started", "failed", "p95_duration"].map((m) => ask(m, phase)));
      return { phase, started, failed, p95 };
    }));
    const violations = await ask("violations", selected === null ? null : Number(selected));
    return { perPhase, violations };
  }

  function drawSeriesPanels(series) {
    const box = $("chart-series");
    if (!series.perPhase.length) {
      empty(box, "no events in this window");
    } else {
      const full = box.clientWidth || 1200, gap = 12;
      const fit = Math.max(1, Math.min(series.perPhase.length, Math.floor((full + gap) / (300 + gap))));
      const perRow = Math.ceil(series.perPhase.length / Math.ceil(series.perPhase.length / fit));
      const width = Math.floor((full - gap * (perRow - 1)) / perRow) - 18;
      box.replaceChildren(C.legend([["started", "started"], ["failed", "failed"],
                                    ["p95", "p95 duration"], ["sla", "SLA"]]),
                          ...series.perPhase.map((s) => seriesCard(s, width)));
    }
    const v = series.violations;
    const vbox = $("chart-violations-series");
    vbox.replaceChildren(C.seriesChart({
      chart: "violations-series", phase: v.phase, width: vbox.clientWidth || 600, height: 170,
      bars: true, series: [{ metric: "violations", label: "violations", buckets: v.items,
                             format: intFormat, integer: true }] }));
  }

  function seriesCard(s, width) {
    const card = el("figure", { class: "multiple series", "data-phase": String(s.phase) });
    card.style.flexBasis = `${width + 18}px`;
    const caption = el("figcaption");
    caption.append(el("strong", {}, `phase ${s.phase}`),
                   el("span", { class: "sla" }, s.p95.sla_ms === null ? "no SLA"
                                                                     : `SLA ${fmtMs(s.p95.sla_ms)}`));
    card.append(caption,
      C.seriesChart({ chart: "series", phase: s.phase, width, series: [
        { metric: "started", label: "started", buckets: s.started.items, format: intFormat,
          integer: true },
        { metric: "failed", label: "failed", buckets: s.failed.items, format: intFormat,
          integer: true }] }),
      C.seriesChart({ chart: "series", phase: s.phase, width, height: 120, sla: s.p95.sla_ms,
                      series: [{ metric: "p95_duration", label: "p95", buckets: s.p95.items,
                                 format: msFormat }] }));
    return card;
  }

  // ---------------------------------------------------------------- running and health
  const workflowLink = (id) => {
    const a = el("a", { href: `#workflow=${encodeURIComponent(id)}`, class: "wf",
                        "data-workflow-link": id }, id);
    return a;
  };

  function linkCells(tableId, field) {
    for (const td of $(tableId).querySelectorAll(`td[data-field="${field}"]`)) {
      const id = td.dataset.value;
      if (id) td.replaceChildren(workflowLink(id));
    }
  }

  function drawRunning(running) {
    fillTable("table-running", running.items, [
      ["workflow_id", String], ["user_id", (v) => v.slice(0, 8), () => "mono"],
      ["phase", String, () => "num"], ["started_at", fmtTime],
      ["elapsed_ms", fmtMs, () => "num"], ["threshold_ms", fmtMs, () => "num"],
      ["left_ms", fmtMs, (r) => (r.left_ms < 0 ? "num bad" : "num")],
      ["state", String, (r) => `state st-${r.state}`],
    ], (r) => ({ "data-table": "running", "data-state": r.state, class: `st-${r.state}`,
                 "data-phase": String(r.phase) }), "nothing is running");
    linkCells("table-running", "workflow_id");
    const counts = { ok: 0, at_risk: 0, overdue: 0 };
    for (const r of running.items) counts[r.state] += 1;
    for (const [k, n] of Object.entries(counts)) {
      const node = $(`running-${k}`);
      node.textContent = fmtInt(n);
      node.dataset.value = String(n);
    }
    $("running-more").hidden = running.next_offset === null;
  }

  function drawHealth(running, dlq) {
    fillTable("table-health", running.freshness, [
      ["role", String], ["consumer", String, () => "mono"], ["partitions", fmtInt, () => "num"],
      ["lag", (v) => (v === null ? "unknown" : fmtInt(v)), (r) => (r.lag ? "num bad" : "num")],
      ["last_event_at", fmtTime], ["updated_at", fmtTime],
    ], (r) => ({ "data-table": "health", "data-role": r.role }), "no consumer known");
    if (dlq === null) return;
    fillTable("table-dlq", dlq.by_reason, [
      ["field", String], ["reason", String], ["letters", fmtInt, () => "num bad"],
    ], () => ({ "data-table": "dlq" }), "no dead letters");
    $("dlq-total").textContent = fmtInt(dlq.total);
    $("dlq-total").dataset.value = String(dlq.total);
  }

  // ---------------------------------------------------------------- search
  function searchParams() {
    const params = new URLSearchParams({ limit: String(RECENT) });
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

  function drawWorkflows({ found, error }) {
    const message = $("search-message");
    message.hidden = error === null;
    message.textContent = error === null ? "" : `Search refused: ${error}`;
    if (found === null) return;
    fillTable("table-workflows", found.items, [
      ["workflow_id", String], ["user_id", (v) => v.slice(0, 8), () => "mono"],
      ["events", fmtInt, () => "num"], ["last_phase", String, () => "num"],
      ["last_status", String, (r) => `status s-${r.last_status}`], ["last_at", fmtTime],
    ], (r) => ({ "data-table": "workflows", "data-workflow-id": r.workflow_id }),
    "no workflow matches");
    linkCells("table-workflows", "workflow_id");
  }

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
    }
    const box = $("param-warning");
    box.hidden = problems.length === 0;
    box.dataset.params = problems.map(([name]) => name).join(",");
    box.replaceChildren(el("strong", {}, "Ignored in the URL: "),
                        ...problems.map(([, text]) => el("span", { class: "problem" }, text)));
  }

  // ---------------------------------------------------------------- workflow page
  const routeWorkflow = () => {
    const match = /^#workflow=(.+)$/.exec(location.hash);
    return match ? decodeURIComponent(match[1]) : null;
  };

  async function showRoute() {
    const id = routeWorkflow();
    const page = $("workflow-page");
    document.body.dataset.view = id === null ? "overview" : "workflow";
    $("overview").hidden = id !== null;
    page.hidden = id === null;
    if (id === null) return;
    page.dataset.state = "loading";
    const box = $("workflow-body");
    try {
      const data = await getJson(`api/workflows/${encodeURIComponent(id)}`,
                                 new URLSearchParams({ limit: "1000" }));
      window.PhaseWorkflow.render(box, data, Date.now());
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

  async function getJson(path, params) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
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
        throw new Error(`${path}: ${response.status} ${reason}`);
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

  async function refresh() {
    if (state.inFlight) return;
    state.inFlight = true;
    clearTimeout(state.timer);
    const base = filters();
    const paged = (limit) => {
      const params = new URLSearchParams(base);
      params.set("limit", String(limit));
      return params;
    };
    try {
      const running = new URLSearchParams({ limit: String(RECENT) });
      if (base.get("phase")) running.set("phase", base.get("phase"));
      const [analytics, sla, rollbacks, live, workflows, dlq] = await Promise.all([
        getJson("api/analytics", paged(100)),
        getJson("api/sla", paged(RECENT)),
        getJson("api/rollbacks", paged(RECENT)),
        getJson("api/running", running),
        fetchWorkflows(),
        getJson("api/dlq", new URLSearchParams()).catch((err) => {
          if (err instanceof AuthError) throw err;
          return null;  // no broker configured for this server: the panel says so
        }),
      ]);
      const series = await fetchSeries(base, analytics.items.map((r) => r.phase));
      state.last = { analytics, sla, rollbacks, running: live, workflows, dlq, series };
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
      if (routeWorkflow() !== null && $("workflow-page").dataset.state !== "ready") showRoute();
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
      if (document.body.dataset.state !== "signin") schedule();
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
    for (const name of ["prefix", "user"]) $(`search-${name}`).value = query.get(name) || "";
    checkUrl(query);
    $("search").addEventListener("submit", (event) => {
      event.preventDefault();
      syncUrl();
      refresh();
    });
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
      resizeTimer = setTimeout(() => { if (state.last) render(state.last); }, 150);
    });
    refresh();
  }

  document.addEventListener("DOMContentLoaded", init);
})();

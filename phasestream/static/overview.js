// phasestream dashboard: the panels of the chosen window, from /api/analytics, /api/sla
// and /api/rollbacks: the tiles, throughput, outcome rates, the per-phase table,
// durations against the SLA, recent violations, rollbacks and rollback chains.
"use strict";

window.PhaseOverview = (() => {
  const C = window.PhaseCharts;
  const { svg, el, titled, niceStep, raw, fmtInt, fmtPct, fmtMs, fmtTime } = C;
  const $ = (id) => document.getElementById(id);
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
  const widthOf = (container, fallback) =>
    Math.max(300, Math.floor(container.clientWidth || fallback));

  function drawThroughput(items) {
    const box = $("chart-throughput");
    if (!items.length) return C.empty(box, "no events in this window");
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
    if (!items.length) return C.empty(box, "no events in this window");
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
    box.replaceChildren();
    if (!items.length) return C.empty(box, "no events in this window");
    C.multiples(box, items, 170, durationCard);
  }

  function durationCard(card, row, W) {
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
    card.dataset.phase = String(row.phase);
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
  }

  const legend = (metrics) => C.legend(metrics.map((m) => [m, LABELS[m]]));

  // ---------------------------------------------------------------- tables and tiles
  function cell(attrs, text) {
    return el("td", attrs, text);
  }
  const fill = (id, ...args) => C.fillTable($(id), ...args);

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
    fill("table-violations", sla.items, [
      ["at", fmtTime], ["kind", String, (r) => `kind k-${r.kind}`], ["workflow_id", String],
      ["phase", String, () => "num"], ["status", String], ["duration_ms", fmtMs, () => "num"],
      ["threshold_ms", fmtMs, () => "num"], ["excess_ms", (v) => `+${fmtMs(v)}`, () => "num bad"],
    ], (r) => ({ "data-table": "violations", "data-event-id": r.event_id, "data-kind": r.kind,
                 "data-phase": String(r.phase) }), "no SLA violations in this window");
    C.linkCells($("table-violations"), "workflow_id");
  }

  function drawRollbacks(rollbacks) {
    fill("table-rollbacks", rollbacks.by_phase, [
      ["phase", String], ["rollbacks", fmtInt, () => "num"], ["workflows", fmtInt, () => "num"],
      ["retries", fmtInt, () => "num"], ["gave_up", fmtInt, (r) => (r.gave_up ? "num bad" : "num")],
      ["loops_stopped", fmtInt, (r) => (r.loops_stopped ? "num bad" : "num")],
    ], (r) => ({ "data-table": "rollbacks", "data-phase": String(r.phase) }),
    "no rollbacks in this window");
    fill("table-chains", rollbacks.items, [
      ["workflow_id", String], ["rollbacks", fmtInt, () => "num"], ["chain", String, () => "chain"],
      ["first_at", fmtTime], ["last_at", fmtTime],
    ], (r) => ({ "data-table": "chains", "data-workflow-id": r.workflow_id }),
    "no workflow was rolled back more than once in this window");
    C.linkCells($("table-chains"), "workflow_id");
  }

  function render(data) {
    const items = data.analytics.items;
    drawTiles(items, data.sla.by_kind);
    drawThroughput(items);
    drawRates(items);
    drawAnalyticsTable(items);
    drawDurations(items);
    drawViolations(data.sla);
    drawRollbacks(data.rollbacks);
  }

  return { render };
})();

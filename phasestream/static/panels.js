// phasestream dashboard: the live panels, drawn from what dashboard.js fetched: running
// phases (/api/running), consumer health (its freshness) and dead letters (/api/dlq), the
// time series (/api/timeseries) and the workflow search (/api/workflows).
"use strict";

window.PhasePanels = (() => {
  const C = window.PhaseCharts;
  const { el, fmtInt, fmtMs, fmtTime } = C;
  const $ = (id) => document.getElementById(id);
  const STATES = ["ok", "at_risk", "overdue"];
  // A user id as its first and last characters: enough to tell users apart in a table.
  const short = (v) => (v ? `${String(v).slice(0, 8)}…${String(v).slice(-4)}` : "—");

  // ---------------------------------------------------------------- running now
  function drawRunning(running) {
    const table = $("table-running");
    C.fillTable(table, running.items, [
      ["workflow_id", String], ["user_id", short, () => "mono"],
      ["phase", String, () => "num"], ["started_at", fmtTime],
      ["elapsed_ms", fmtMs, () => "num"], ["threshold_ms", fmtMs, () => "num"],
      ["left_ms", fmtMs, (r) => (r.left_ms < 0 ? "num bad" : "num")],
      ["state", (v) => v.replace("_", " "), (r) => `state st-${r.state}`],
    ], (r) => ({ "data-table": "running", "data-state": r.state, class: `st-${r.state}`,
                 "data-phase": String(r.phase), "data-workflow-id": r.workflow_id }),
    "nothing is running");
    C.linkCells(table, "workflow_id");
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const r of running.items) counts[r.state] += 1;
    for (const [k, n] of Object.entries(counts)) {
      const node = $(`running-${k}`);
      node.textContent = fmtInt(n);
      node.dataset.value = String(n);
    }
    $("running-more").hidden = running.next_offset === null;
  }

  // ---------------------------------------------------------------- consumer health
  // An age ("12 s ago") against the API's own clock, so a skewed browser clock does not lie.
  function age(iso, now) {
    if (!iso) return "never";
    return `${fmtMs(Math.max(0, Date.parse(now) - Date.parse(iso)))} ago`;
  }

  function drawHealth(running) {
    const table = $("table-health");
    const rows = running.freshness.map((r) => ({ ...r, event_age: r.last_event_at,
                                                 moved: r.updated_at }));
    C.fillTable(table, rows, [
      ["role", (v) => v.replace("_", " ")], ["consumer", String, () => "mono"],
      ["partitions", (v) => (v ? fmtInt(v) : "never ran here"),
       (r) => (r.partitions ? "num" : "num muted")],
      ["lag", (v) => (v === null ? "unknown" : fmtInt(v)), (r) => (r.lag ? "num bad" : "num")],
      ["event_age", (v) => age(v, running.now), () => "num"],
      ["moved", (v) => age(v, running.now), () => "num"],
    ], (r) => ({ "data-table": "health", "data-role": r.role }), "no consumer known");
    for (const td of table.querySelectorAll("td[data-field=event_age], td[data-field=moved]")) {
      if (td.dataset.value) td.title = td.dataset.value;
    }
  }

  // dlq: {state: "ready", body} (the /api/dlq shape), {state: "unavailable"} (a server
  // without it: 404) or {state: "error", message}.
  function drawDeadLetters(dlq) {
    const total = $("dlq-total"), note = $("dlq-note");
    $("dlq").dataset.state = dlq.state;
    $("dlq-detail").hidden = dlq.state !== "ready";
    if (dlq.state !== "ready") {
      total.textContent = "—";
      total.dataset.value = "";
      total.classList.remove("bad");
      note.textContent = dlq.state === "unavailable"
        ? "dead letters: unavailable (this server has no /api/dlq)"
        : `dead letters: unavailable (${dlq.message})`;
      return;
    }
    const body = dlq.body;
    total.textContent = `${body.truncated ? "≥ " : ""}${fmtInt(body.total)}`;
    total.dataset.value = String(body.total);
    total.classList.toggle("bad", body.total > 0);
    note.textContent = body.truncated
      ? `counted in the newest ${fmtInt(body.scanned)} letters (the scan is bounded)`
      : `${fmtInt(body.scanned)} letters scanned`;
    C.fillTable($("table-dlq-reasons"), body.by_reason, [
      ["reason", String], ["count", fmtInt, () => "num bad"],
    ], (r) => ({ "data-table": "dlq-reasons", "data-reason": r.reason }), "no dead letters");
    C.fillTable($("table-dlq-fields"), body.by_field, [
      ["field", String, () => "mono"], ["count", fmtInt, () => "num bad"],
    ], (r) => ({ "data-table": "dlq-fields", "data-field-name": r.field }), "no dead letters");
    C.fillTable($("table-dlq-topics"), body.topics, [
      ["topic", String, () => "mono"], ["count", fmtInt, () => "num"],
      ["oldest", fmtTime], ["newest", fmtTime],
    ], (r) => ({ "data-table": "dlq-topics", "data-topic": r.topic }), "no dead-letter topic");
  }

  // ---------------------------------------------------------------- over time
  function drawSeries(series) {
    $("series-window").textContent = series.label;
    const box = $("chart-series");
    box.replaceChildren();
    if (!series.perPhase.length) {
      C.empty(box, "no events in this window");
    } else {
      box.append(C.legend([["started", "started"], ["failed", "failed"],
                           ["p95_duration", "p95 duration"], ["sla", "SLA threshold"]]));
      const cards = el("div", { class: "multiples" });
      box.append(cards);
      C.multiples(cards, series.perPhase, 280, seriesCard);
    }
    const v = series.violations;
    const vbox = $("chart-violations-series");
    vbox.replaceChildren(C.seriesChart({
      chart: "violations-series", phase: v.phase, width: vbox.clientWidth || 600,
      height: 170, bars: true,
      series: [{ metric: "violations", label: "violations", buckets: v.items,
                 format: fmtInt, integer: true }] }));
  }

  function seriesCard(card, s, width) {
    card.classList.add("series");
    card.dataset.phase = String(s.phase);
    const caption = el("figcaption");
    caption.append(el("strong", {}, `phase ${s.phase}`),
                   el("span", { class: "sla", "data-chart": "series", "data-phase":
                                String(s.phase), "data-metric": "sla_ms",
                                "data-value": C.raw(s.p95.sla_ms) },
                      s.p95.sla_ms === null ? "no SLA" : `SLA ${fmtMs(s.p95.sla_ms)}`));
    card.append(caption,
      C.seriesChart({ chart: "series", phase: s.phase, width, series: [
        { metric: "started", label: "started", buckets: s.started.items, format: fmtInt,
          integer: true },
        { metric: "failed", label: "failed", buckets: s.failed.items, format: fmtInt,
          integer: true }] }),
      C.seriesChart({ chart: "series", phase: s.phase, width, height: 110, sla: s.p95.sla_ms,
                      series: [{ metric: "p95_duration", label: "p95", buckets: s.p95.items,
                                 format: fmtMs }] }));
  }

  // ---------------------------------------------------------------- search
  function drawWorkflows({ found, error }) {
    const message = $("search-message");
    message.hidden = error === null;
    message.textContent = error === null ? "" : `Search refused: ${error}`;
    if (found === null) return;
    const table = $("table-workflows");
    C.fillTable(table, found.items, [
      ["workflow_id", String], ["user_id", short, () => "mono"],
      ["events", fmtInt, () => "num"], ["last_phase", String, () => "num"],
      ["last_status", (v) => v.replace("_", " "), (r) => `s-${r.last_status}`],
      ["last_at", fmtTime],
    ], (r) => ({ "data-table": "workflows", "data-workflow-id": r.workflow_id }),
    "no workflow matches");
    C.linkCells(table, "workflow_id");
    $("search-more").hidden = found.next_offset === null;
  }

  return { drawRunning, drawHealth, drawDeadLetters, drawSeries, drawWorkflows };
})();

// phasestream dashboard: one workflow's page (#workflow=ID), from /api/workflows/{id}.
// A timeline of its phase executions (start to end against the SLA), with its failures,
// rollbacks, the commander's retries and the SLA violations; then the raw tables.
"use strict";

window.PhaseWorkflow = (() => {
  const { svg, el, titled, raw, fmtInt, fmtMs, fmtTime } = window.PhaseCharts;
  const ms = (iso) => Date.parse(iso);

  // Executions: a start and the next completed/failed of the same phase (none: running).
  function executions(transitions, now) {
    const open = new Map(), found = [];
    for (const t of transitions) {
      if (t.status === "started") {
        const run = { phase: t.phase, start: t.at, end: null, status: "running",
                      threshold_ms: t.threshold_ms, duration_ms: null, over_sla: false };
        open.set(t.phase, run);
        found.push(run);
      } else if (t.status === "completed" || t.status === "failed") {
        const run = open.get(t.phase);
        if (!run) continue;
        Object.assign(run, { end: t.at, status: t.status, duration_ms: t.duration_ms,
                             over_sla: t.over_sla });
        open.delete(t.phase);
      }
    }
    for (const run of found) {
      if (run.end === null) {
        run.elapsed_ms = now - ms(run.start);
        run.over_sla = run.threshold_ms !== null && run.elapsed_ms > run.threshold_ms;
      }
    }
    return found;
  }

  function summary(data, runs) {
    const t = data.items, last = t[t.length - 1];
    const rollbacks = t.filter((r) => r.status === "rolled_back").length;
    const retries = data.commands.filter((c) => c.kind === "retry").length;
    const total = t.length ? ms(last.at) - ms(t[0].at) : 0;
    const facts = [
      ["phases", [...new Set(t.map((r) => r.phase))].sort().join(", ")],
      ["last", last ? `phase ${last.phase} ${last.status}` : "—"],
      ["events", fmtInt(t.length)], ["span", fmtMs(total)],
      ["running", fmtInt(runs.filter((r) => r.status === "running").length)],
      ["rollbacks", fmtInt(rollbacks)], ["retries", fmtInt(retries)],
      ["violations", fmtInt(data.violations.length)],
    ];
    const list = el("dl", { class: "facts" });
    for (const [name, value] of facts) {
      list.append(el("dt", {}, name), el("dd", { "data-summary": name }, value));
    }
    return list;
  }

  function timeline(data, runs, width, now) {
    const marks = [...data.items.map((t) => ms(t.at)), ...runs.map((r) => ms(r.start) +
                   (r.threshold_ms ?? 0)), ...data.commands.map((c) => ms(c.due_at || c.decided_at))];
    if (runs.some((r) => r.status === "running")) marks.push(now);
    const t0 = Math.min(...marks), t1 = Math.max(t0 + 1000, ...marks);
    const W = Math.max(320, Math.floor(width)), rowH = 24, left = 64, right = 12, top = 8;
    const H = top + runs.length * rowH + 28;
    const x = (t) => left + ((W - left - right) * (t - t0)) / (t1 - t0);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                              "aria-label": "timeline of the workflow's phases" });
    runs.forEach((run, i) => root.appendChild(bar(run, i, { x, rowH, top, now })));
    for (const c of data.commands) root.appendChild(commandMark(c, x, H));
    for (const t of data.items.filter((r) => r.status === "rolled_back")) {
      const g = svg("g", { class: "mark rollback", "data-chart": "timeline-rollback",
                           "data-phase": t.phase, "data-value": raw(t.rollback_to_phase) });
      titled(g, `${fmtTime(t.at)} phase ${t.phase} rolled back to ${t.rollback_to_phase}`);
      g.appendChild(svg("path", { d: `M${x(ms(t.at))},${H - 22} l-5,9 h10 z` }));
      root.appendChild(g);
    }
    root.appendChild(svg("text", { class: "tick", x: left, y: H - 2 }, fmtTime(new Date(t0).toISOString())));
    root.appendChild(svg("text", { class: "tick", x: W - right, y: H - 2, "text-anchor": "end" },
                         fmtTime(new Date(t1).toISOString())));
    return root;
  }

  function bar(run, i, { x, rowH, top, now }) {
    const start = ms(run.start), end = run.end ? ms(run.end) : now;
    const y = top + i * rowH;
    const g = svg("g", { class: `run s-${run.status}${run.over_sla ? " over" : ""}`,
                         "data-chart": "timeline", "data-phase": run.phase,
                         "data-status": run.status, "data-start": run.start,
                         "data-end": raw(run.end), "data-duration-ms": raw(run.duration_ms),
                         "data-threshold-ms": raw(run.threshold_ms),
                         "data-over-sla": run.over_sla ? "true" : "false" });
    titled(g, `phase ${run.phase} ${run.status}: ${fmtMs(run.duration_ms ?? end - start)}` +
              ` (SLA ${fmtMs(run.threshold_ms)})`);
    g.appendChild(svg("text", { class: "axis", x: 4, y: y + rowH / 2 + 4 }, `phase ${run.phase}`));
    if (run.threshold_ms !== null) {
      g.appendChild(svg("rect", { class: "sla-box", x: x(start), y: y + 3,
                                  width: Math.max(1, x(start + run.threshold_ms) - x(start)),
                                  height: rowH - 6, rx: 2 }));
    }
    g.appendChild(svg("rect", { class: "span", x: x(start), y: y + 6,
                                width: Math.max(2, x(end) - x(start)), height: rowH - 12, rx: 2 }));
    return g;
  }

  function commandMark(c, x, H) {
    const at = Date.parse(c.due_at || c.decided_at);
    const g = svg("g", { class: `mark cmd-${c.kind}`, "data-chart": "timeline-command",
                         "data-kind": c.kind, "data-phase": c.failed_phase,
                         "data-value": raw(c.attempt) });
    titled(g, `${c.kind} of phase ${c.failed_phase} (attempt ${c.attempt}) ${fmtTime(c.due_at || c.decided_at)}`);
    g.appendChild(svg("circle", { cx: x(at), cy: H - 18, r: 4 }));
    return g;
  }

  function table(name, rows, columns, emptyText) {
    const t = el("table", { "data-table": name });
    const head = el("tr");
    for (const [field, , cls] of columns) head.appendChild(el("th", cls ? { class: cls } : {}, field));
    t.appendChild(el("thead")).appendChild(head);
    const body = t.appendChild(el("tbody"));
    if (!rows.length) {
      body.appendChild(el("tr")).appendChild(el("td", { colspan: String(columns.length),
                                                        class: "empty" }, emptyText));
    }
    for (const row of rows) {
      const tr = body.appendChild(el("tr", { "data-table": name }));
      for (const [field, format, cls] of columns) {
        tr.appendChild(el("td", { "data-field": field, "data-value": raw(row[field]),
                                  ...(cls ? { class: cls } : {}) }, format(row[field])));
      }
    }
    return el("div", { class: "scroll" }).appendChild(t).parentNode;
  }

  function render(box, data, now) {
    const runs = executions(data.items, now);
    const width = box.clientWidth || 1200;
    const opt = (v) => (v === null || v === undefined ? "—" : String(v));
    box.replaceChildren(
      el("h2", { "data-workflow-id": data.workflow_id }, `workflow ${data.workflow_id}`),
      summary(data, runs),
      el("h3", {}, "timeline: each phase from start to end; the outline is its SLA"),
      el("div", { class: "chart" }, undefined),
      el("h3", {}, "SLA violations"),
      table("wf-violations", data.violations, [["at", fmtTime], ["kind", String],
        ["phase", String, "num"], ["duration_ms", fmtMs, "num"], ["excess_ms", fmtMs, "num"]],
      "no SLA violation"),
      el("h3", {}, "rollback commands"),
      table("wf-commands", data.commands, [["decided_at", fmtTime], ["kind", String],
        ["failed_phase", String, "num"], ["rollback_to_phase", opt, "num"],
        ["attempt", String, "num"], ["due_at", fmtTime]], "no rollback command"),
      el("h3", {}, "events"),
      table("transitions", data.items, [["at", fmtTime], ["phase", String, "num"],
        ["status", String], ["duration_ms", fmtMs, "num"], ["threshold_ms", fmtMs, "num"],
        ["error_message", opt]], "no events"));
    const chart = box.querySelector(".chart");
    chart.appendChild(timeline(data, runs, chart.clientWidth || width, now));
  }

  return { render, executions };
})();

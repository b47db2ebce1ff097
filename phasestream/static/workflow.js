// phasestream dashboard: one workflow's page (#workflow=ID), from /api/workflows/{id}.
// A timeline of its phase executions (start to end against the SLA), with its failures,
// rollbacks, the commander's retries and the SLA violations; then the raw tables.
"use strict";

window.PhaseWorkflow = (() => {
  const C = window.PhaseCharts;
  const { svg, el, titled, raw, fmtInt, fmtMs, fmtTime } = C;
  const ms = (iso) => Date.parse(iso);
  const HEADINGS = {
    at: "at (UTC)", duration_ms: "duration", excess_ms: "over by", threshold_ms: "SLA",
    decided_at: "decided (UTC)", failed_phase: "failed phase", rollback_to_phase: "back to",
    due_at: "due (UTC)", error_message: "error",
  };

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
      ["last", last ? `phase ${last.phase} ${last.status.replace("_", " ")}` : "—"],
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

  // One row per execution, then a lane each for rollbacks, the commander's commands and
  // SLA violations, on one time axis; the dashed box after each start is its SLA.
  function timeline(data, runs, width, now) {
    const times = [...data.items.map((t) => ms(t.at)), ...runs.map((r) => ms(r.start) +
                   (r.threshold_ms ?? 0)), ...data.commands.map((c) => ms(c.due_at || c.decided_at))];
    if (runs.some((r) => r.status === "running")) times.push(now);
    const t0 = Math.min(...times), t1 = Math.max(t0 + 1000, ...times);
    const W = Math.max(300, Math.floor(width)), rowH = 26, left = 78, right = 16, top = 6;
    const lanes = ["rollbacks", "commands", "violations"];
    const H = top + (runs.length + lanes.length) * rowH + 22;
    const x = (t) => left + ((W - left - right) * (t - t0)) / (t1 - t0);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                              "aria-label": "timeline of the workflow's phases" });
    const marks = [];
    axis(root, { x, t0, t1, W, H, left, right, top });
    runs.forEach((run, i) => root.appendChild(bar(run, i, { x, rowH, top, now })));
    const laneY = (name) => top + (runs.length + lanes.indexOf(name)) * rowH + rowH / 2;
    for (const name of lanes) {
      root.appendChild(svg("text", { class: "axis", x: 4, y: laneY(name) + 4 }, name));
    }
    for (const t of data.items.filter((r) => r.status === "rolled_back")) {
      marks.push(({ kind: "rollback", chart: "timeline-rollback", phase: t.phase,
                              value: t.rollback_to_phase, at: ms(t.at), y: laneY("rollbacks"),
                              x, label: `${t.phase}→${t.rollback_to_phase ?? "?"}`,
                              title: `${fmtTime(t.at)} phase ${t.phase} rolled back to ` +
                                     `${t.rollback_to_phase}` }));
    }
    for (const c of data.commands) {
      const at = c.due_at || c.decided_at;
      marks.push(({ kind: `cmd-${c.kind}`, chart: "timeline-command",
                              phase: c.failed_phase, value: c.attempt, at: ms(at),
                              y: laneY("commands"), x, label: c.kind.replace("_", " "),
                              extra: { "data-kind": c.kind },
                              title: `${fmtTime(at)} ${c.kind} of phase ${c.failed_phase} ` +
                                     `(attempt ${c.attempt})` }));
    }
    for (const v of data.violations) {
      marks.push(({ kind: "violation", chart: "timeline-violation", phase: v.phase,
                              value: v.excess_ms, at: ms(v.at), y: laneY("violations"), x,
                              label: `+${fmtMs(v.excess_ms)}`, extra: { "data-kind": v.kind },
                              title: `${fmtTime(v.at)} ${v.kind} phase ${v.phase}: ` +
                                     `+${fmtMs(v.excess_ms)} over its SLA` }));
    }
    for (const m of joinLabels(marks)) root.appendChild(mark({ ...m, W }));
    return root;
  }

  function axis(root, { x, t0, t1, W, H, left, right, top }) {
    const ticks = W < 600 ? 2 : 4;  // a phone's timeline has room for three times
    for (let i = 0; i <= ticks; i += 1) {
      const t = t0 + ((t1 - t0) * i) / ticks;
      root.appendChild(svg("line", { class: "grid", x1: x(t), x2: x(t), y1: top, y2: H - 18 }));
      const anchor = i === 0 ? "start" : i === ticks ? "end" : "middle";
      root.appendChild(svg("text", { class: "tick", x: x(t), y: H - 4, "text-anchor": anchor },
                           new Date(t).toISOString().slice(11, 19)));
    }
    root.appendChild(svg("line", { class: "baseline", x1: left, x2: W - right, y1: H - 18,
                                   y2: H - 18 }));
  }

  function mark({ kind, chart, phase, value, at, y, x, W, label, title, extra = {} }) {
    const g = svg("g", { class: `mark ${kind}`, "data-chart": chart, "data-phase": phase,
                         "data-value": raw(value), ...extra });
    titled(g, title);
    g.appendChild(kind === "rollback"
      ? svg("path", { d: `M${x(at)},${y - 6} l-6,11 h12 z` })
      : kind === "violation"
        ? svg("path", { d: `M${x(at)},${y - 6} l6,6 l-6,6 l-6,-6 z` })
        : svg("circle", { cx: x(at), cy: y, r: 5 }));
    // Right of the mark; left of it in the right half, so it is not cut. A phone's timeline
    // has no room for labels: the tables below it name each mark.
    if (label && W >= 600) {
      const right = x(at) > W / 2;
      g.appendChild(svg("text", { class: "mark-label", x: x(at) + (right ? -9 : 9), y: y + 4,
                                  "text-anchor": right ? "end" : "start" }, label));
    }
    return g;
  }

  // Marks of one lane at the same moment (a rollback and its gave-up): one label for all.
  function joinLabels(marks) {
    const first = new Map();
    for (const m of marks) {
      const key = `${m.y}|${m.at}`;
      if (first.has(key)) {
        first.get(key).label += `, ${m.label}`;
        m.label = "";
      } else {
        first.set(key, m);
      }
    }
    return marks;
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

  function table(name, rows, columns, emptyText) {
    const t = el("table", { "data-table": name });
    const head = el("tr");
    for (const [field, , cls] of columns) {
      head.appendChild(el("th", cls ? { class: cls } : {}, HEADINGS[field] || field));
    }
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
      el("h3", {}, "timeline (UTC): each phase from start to end; the dashed box is its SLA"),
      C.legend([["completed", "completed"], ["failed", "failed"], ["running", "running"],
                ["over", "over its SLA (outlined)"], ["rollback", "▲ rollback"],
                ["command", "● command"], ["violation", "◆ violation"]]),
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
        ["status", (v) => v.replace("_", " ")], ["duration_ms", fmtMs, "num"], ["threshold_ms", fmtMs, "num"],
        ["error_message", opt]], "no events"));
    const chart = box.querySelector(".chart");
    chart.appendChild(timeline(data, runs, chart.clientWidth || width, now));
  }

  return { render, executions };
})();

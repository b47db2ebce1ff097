// phasestream dashboard: what the overview (dashboard.js), the live panels (panels.js) and
// the workflow page (workflow.js) share: formatting, DOM and table helpers, and the small
// time-series chart. Hand-written SVG rather than a vendored library (uPlot and the like
// draw on a canvas): the charts are a few lines and bars, and every mark carries its raw
// API value in data-* attributes, which tests and scripts read next to the shown text.
"use strict";

window.PhaseCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";

  const raw = (v) => (v === null || v === undefined ? "" : String(v));
  const fmtInt = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));
  const trim = (v, digits) => String(Number(v.toFixed(digits)));
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "—";
    const sign = ms < 0 ? "-" : "";
    const a = Math.abs(ms);
    if (a < 1000) return `${sign}${trim(a, 1)} ms`;
    if (a < 600000) return `${sign}${trim(a / 1000, 2)} s`;
    if (a < 7200000) return `${sign}${trim(a / 60000, 1)} min`;
    return `${sign}${trim(a / 3600000, 1)} h`;
  }
  const fmtTime = (iso) => (iso ? `${iso.slice(0, 19).replace("T", " ")}` : "—");
  const fmtClock = (iso) => (iso ? iso.slice(11, 16) : "");
  const fmtPct = (v) => (v === null || v === undefined ? "—" : `${Number(v)}%`);

  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function titled(node, text) {
    node.appendChild(svg("title", {}, text));
    return node;
  }
  function niceStep(span, ticks, integer) {
    const rough = Math.max(span / ticks, integer ? 1 : Number.MIN_VALUE);
    const power = 10 ** Math.floor(Math.log10(rough));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough);
    return integer ? Math.max(1, Math.ceil(step)) : step;
  }

  // One small chart of buckets: lines (counts) or bars, an optional dashed SLA line.
  // series: [{metric, label, buckets: [{bucket, value}], format}]; every point is a <g>
  // with data-chart, data-phase, data-metric, data-bucket and data-value.
  function seriesChart({ chart, phase, series, sla, width, height = 150, bars = false }) {
    const W = Math.max(160, Math.floor(width)), H = height;
    const left = 40, right = 8, top = 10, bottom = 20;
    const n = Math.max(1, ...series.map((s) => s.buckets.length));
    const values = series.flatMap((s) => s.buckets.map((b) => b.value)).filter((v) => v !== null);
    const integer = series.every((s) => s.integer);
    const max0 = Math.max(integer ? 1 : 0.001, ...values, sla ?? 0);
    const step = niceStep(max0, 3, integer);
    const max = Math.ceil(max0 / step) * step * (sla ? 1.05 : 1);
    const x = (i) => left + ((W - left - right) * (i + 0.5)) / n;
    const y = (v) => top + (H - top - bottom) * (1 - v / max);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                              "aria-label": `${chart} phase ${phase ?? "all"}` });
    for (let t = 0; t <= max; t += step) {
      root.appendChild(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(t), y2: y(t) }));
      root.appendChild(svg("text", { class: "tick", x: left - 4, y: y(t) + 4, "text-anchor": "end" },
                           series[0].format(t)));
    }
    const first = series[0].buckets;
    if (first.length) {
      const ticks = [0, Math.floor((first.length - 1) / 2), first.length - 1];
      for (const i of new Set(ticks)) {
        // The first and last labels align inwards, so neither is cut at the chart's edge.
        const anchor = i === 0 ? "start" : i === first.length - 1 ? "end" : "middle";
        root.appendChild(svg("text", { class: "tick", x: x(i), y: H - 5, "text-anchor": anchor },
                             fmtClock(first[i].bucket)));
      }
    }
    if (sla) {
      root.appendChild(titled(svg("line", { class: "sla-line", x1: left, x2: W - right,
                                            y1: y(sla), y2: y(sla) }), `SLA ${fmtMs(sla)}`));
    }
    series.forEach((s) => drawSeries(root, s, { chart, phase, x, y, n, W, left, right, bars, sla }));
    return root;
  }

  function drawSeries(root, s, { chart, phase, x, y, n, W, left, right, bars, sla }) {
    const points = [];
    const slot = (W - left - right) / n;
    s.buckets.forEach((b, i) => {
      const over = sla !== null && sla !== undefined && b.value !== null && b.value > sla;
      const g = svg("g", { class: `pt m-${s.metric}${over ? " over" : ""}`, "data-chart": chart,
                           "data-phase": phase ?? "", "data-metric": s.metric,
                           "data-bucket": b.bucket, "data-value": raw(b.value) });
      titled(g, `${fmtTime(b.bucket)} ${s.label}: ${s.format(b.value)}`);
      if (b.value === null) {
        points.push(null);
      } else {
        if (bars) {
          g.appendChild(svg("rect", { x: x(i) - slot * 0.4, y: y(b.value), width: slot * 0.8,
                                      height: Math.max(0, y(0) - y(b.value)) }));
        } else {
          points.push([x(i), y(b.value)]);
          if (b.value > 0 || n < 40) g.appendChild(svg("circle", { cx: x(i), cy: y(b.value), r: 2 }));
        }
      }
      root.appendChild(g);
    });
    // A null bucket (no duration: nothing finished) breaks the line rather than bridging it.
    for (const run of points.length && !bars ? segments(points) : []) {
      root.appendChild(svg("polyline", { class: `line m-${s.metric}`, fill: "none",
                                         points: run.map((p) => p.join(",")).join(" ") }));
    }
  }

  function segments(points) {
    const runs = [[]];
    for (const p of points) {
      if (p === null) runs.push([]);
      else runs[runs.length - 1].push(p);
    }
    return runs.filter((r) => r.length > 0);
  }

  function legend(entries) {
    const list = el("ul", { class: "legend" });
    for (const [metric, label] of entries) {
      const item = el("li", { class: `m-${metric}` });
      item.append(el("span", { class: "swatch" }), label);
      list.appendChild(item);
    }
    return list;
  }

  function empty(container, message) {
    container.replaceChildren(el("p", { class: "empty" }, message));
  }

  // A table body from rows: columns are [field, format, class-of-row]; every cell carries
  // data-field and data-value (the API's value), each row rowAttrs(row).
  function fillTable(table, rows, columns, rowAttrs, emptyText) {
    const body = table.tBodies[0];
    if (!rows.length) {
      const tr = el("tr");
      tr.appendChild(el("td", { colspan: String(columns.length), class: "empty" }, emptyText));
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(...rows.map((row) => {
      const tr = el("tr", rowAttrs(row));
      for (const [field, format, cls] of columns) {
        const attrs = { "data-field": field, "data-value": raw(row[field]) };
        if (cls) attrs.class = cls(row);
        const td = el("td", attrs, format(row[field]));
        // A shortened id or a formatted time: the whole value on hover.
        if (typeof row[field] === "string" && td.textContent !== row[field]) td.title = row[field];
        tr.appendChild(td);
      }
      return tr;
    }));
  }

  // Every workflow id on the page opens its workflow page (a hash route: no reload).
  const workflowHref = (id) => `#workflow=${encodeURIComponent(id)}`;
  function linkCells(table, field) {
    for (const td of table.querySelectorAll(`td[data-field="${field}"]`)) {
      const id = td.dataset.value;
      if (id) {
        td.replaceChildren(el("a", { href: workflowHref(id), class: "wf",
                                     "data-workflow-link": id }, id));
      }
    }
  }

  // Cards of equal width in balanced rows (7 cards: 4 + 3, the 3 widened to fill), each
  // drawn at its own width once laid out, so no cell of the grid is left blank.
  function multiples(box, items, minWidth, draw) {
    const gap = 12, full = box.clientWidth || 1200;
    const fit = Math.max(1, Math.min(items.length, Math.floor((full + gap) / (minWidth + gap))));
    const perRow = Math.ceil(items.length / Math.ceil(items.length / fit));
    const basis = Math.floor((full - gap * (perRow - 1)) / perRow);
    const cards = items.map(() => {
      const card = el("figure", { class: "multiple" });
      card.style.flexBasis = `${basis}px`;
      return card;
    });
    box.append(...cards);
    // Card padding and border: 18 px.
    items.forEach((item, i) => draw(cards[i], item, Math.max(120, cards[i].clientWidth - 18)));
  }

  return { svg, el, titled, niceStep, seriesChart, legend, raw, fmtInt, fmtMs, fmtTime, fmtPct,
           empty, fillTable, linkCells, workflowHref, multiples };
})();

// Line charts on uPlot (vendored, loaded before this module as window.uPlot). Each chart keeps
// its series as (x, y) arrays and plots them joined on one x axis. What a chart plots can be read
// back, from the plot itself, through window.fitserveCharts.read(id): the tests read it.

import { fmtNum, h } from "./dom.js";

export const PALETTE = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2",
  "#ca8a04", "#db2777", "#4b5563", "#65a30d", "#7c3aed", "#0d9488"];

const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 1e5, 2e5, 5e5, 1e6];
const registry = new Map();

window.fitserveCharts = {
  ids: () => [...registry.keys()],
  read: (id) => (registry.has(id) ? registry.get(id).read() : null),
};

export function forgetCharts() {
  for (const chart of registry.values()) chart.destroy();
  registry.clear();
}

// Series of different x values on one axis: the union of the x values, null where a series has
// no point (the line spans the gap).
export function join(list) {
  const xs = [...new Set(list.flatMap((s) => s.x))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = list.map((s) => {
    const column = new Array(xs.length).fill(null);
    s.x.forEach((x, i) => {
      column[index.get(x)] = s.y[i];
    });
    return column;
  });
  return [xs, ...ys];
}

export class LineChart {
  // id: the registry's name; xLabel: the axis; styles: label -> {color, width, points, dash}.
  constructor(parent, { id, title, xLabel = "epoch", height = 260, styles = {} }) {
    this.id = id;
    this.title = title;
    this.xLabel = xLabel;
    this.height = height;
    this.styles = styles;
    this.series = new Map(); // label -> {x: [], y: []}
    this.plot = null;
    this.pending = null;
    this.target = h("div", { class: "chart-plot" });
    this.el = h("figure", { class: "chart", dataset: { chart: id, points: "0" } },
      h("figcaption", { text: title }), this.target);
    parent.append(this.el);
    this.resize = new ResizeObserver(() => this.plot && this.plot.setSize(this.size()));
    this.resize.observe(this.el);
    registry.set(id, this);
  }

  size() {
    return { width: Math.max(240, this.target.clientWidth || this.el.clientWidth - 24), height: this.height };
  }

  has(label) {
    return this.series.has(label);
  }

  // Replace a series' points; the chart is redrawn once for a burst of changes.
  set(label, x, y) {
    const fresh = !this.series.has(label);
    this.series.set(label, { x, y });
    if (fresh) this.rebuild = true;
    this.schedule();
  }

  push(label, x, y) {
    const s = this.series.get(label);
    if (!s) {
      this.set(label, [x], [y]);
      return;
    }
    s.x.push(x);
    s.y.push(y);
    this.schedule();
  }

  schedule() {
    if (this.pending === null) this.pending = setTimeout(() => this.draw(), 120);
  }

  draw() {
    this.pending = null;
    const labels = [...this.series.keys()];
    const data = join(labels.map((l) => this.series.get(l)));
    this.el.dataset.points = String(labels.reduce((n, l) => n + this.series.get(l).x.length, 0));
    if (this.plot && !this.rebuild) {
      this.plot.setData(data);
      return;
    }
    this.rebuild = false;
    if (this.plot) this.plot.destroy();
    this.plot = new window.uPlot(this.options(labels), data, this.target);
  }

  options(labels) {
    const axis = { stroke: "#475569", grid: { stroke: "#e2e8f0", width: 1 }, ticks: { stroke: "#cbd5e1" } };
    return {
      ...this.size(),
      scales: { x: { time: false } },
      // x is a step or an epoch: whole numbers only
      axes: [{ ...axis, label: this.xLabel, labelSize: 20, incrs: WHOLE }, { ...axis, size: 56, values: (u, v) => v.map(fmtNum) }],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      series: [
        { label: this.xLabel, value: (u, v) => (v == null ? "—" : fmtNum(v)) },
        ...labels.map((label, i) => {
          const style = this.styles[label] || {};
          const color = style.color || PALETTE[i % PALETTE.length];
          return {
            label,
            stroke: color,
            width: style.width || 2,
            dash: style.dash,
            spanGaps: true,
            points: { show: style.points ?? true, size: 5, fill: color },
            value: (u, v) => (v == null ? "—" : fmtNum(v)),
          };
        }),
      ],
    };
  }

  // What the plot holds: per series, its x and y values where it has a point.
  read() {
    const labels = [...this.series.keys()];
    const data = this.plot ? this.plot.data : [[]];
    return {
      id: this.id,
      title: this.title,
      xLabel: this.xLabel,
      series: labels.map((label, i) => {
        const x = [];
        const y = [];
        const column = data[i + 1] || [];
        data[0].forEach((xv, j) => {
          if (column[j] != null) {
            x.push(xv);
            y.push(column[j]);
          }
        });
        return { label, x, y };
      }),
    };
  }

  destroy() {
    clearTimeout(this.pending);
    this.resize.disconnect();
    if (this.plot) this.plot.destroy();
    registry.delete(this.id);
  }
}

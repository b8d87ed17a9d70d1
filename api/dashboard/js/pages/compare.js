// Compare jobs: pick several, choose a metric, see their curves overlaid and their settings and
// latest metrics side by side. Running jobs' curves keep growing.

import { allMetrics, api, query } from "../api.js";
import { LineChart, PALETTE, forgetCharts } from "../charts.js";
import { TERMINAL, badge, clear, datasetName, errorBox, fmtInt, fmtNum, h, headline,
  uploadNames } from "../dom.js";
import { SYSTEM } from "../metrics.js";

const ID = /^job_[0-9a-f]{32}$/;

function optimizer(spec) {
  const o = spec.compile && spec.compile.optimizer;
  if (!o) return ["—", "—"];
  return typeof o === "string" ? [o, "default"] : [o.type, o.learning_rate ?? "default"];
}

export function mountCompare(view, params) {
  const ids = (params.get("ids") || "").split(",").filter((i) => ID.test(i)).slice(0, 12);
  let metric = params.get("metric");
  let jobs = [];
  let cursors = new Map();
  let chart = null;
  let uploads = new Map();
  const picker = h("div", { class: "picker-list" });
  const filter = h("input", { type: "search", placeholder: "filter by name", maxLength: 100, "aria-label": "filter jobs by name" });
  const select = h("select", { name: "metric", "aria-label": "metric" });
  const plot = h("div", { class: "compare-plot" });
  const table = h("div", { class: "table-wrap" });
  const error = h("div");
  clear(view,
    h("div", { class: "page-head" }, h("h1", { text: "Compare" })),
    h("div", { class: "compare" },
      h("aside", { class: "picker card-box" }, h("h3", { text: "Jobs" }), filter, picker),
      h("div", { class: "compare-main" }, error,
        h("div", { class: "toolbar" }, h("label", {}, h("span", { text: "metric " }), select)), plot, table)));

  function remember() {
    history.replaceState(null, "", `#/compare${query({ ids: ids.join(","), metric })}`);
  }

  async function loadPicker() {
    try {
      const answer = await api(`/v1/jobs${query({ limit: 100, name: filter.value.trim() })}`);
      clear(picker, answer.data.map((job) => {
        const box = h("input", { type: "checkbox", checked: ids.includes(job.id), value: job.id });
        box.addEventListener("change", () => {
          if (box.checked && !ids.includes(job.id)) ids.push(job.id);
          if (!box.checked) ids.splice(ids.indexOf(job.id), 1);
          remember();
          load();
        });
        return h("label", { class: "pick" }, box, h("span", { class: "pick-name", text: job.name }), badge(job.status));
      }));
    } catch (err) {
      clear(picker, errorBox(err));
    }
  }

  function label(job) {
    return `${job.name} · ${job.id.slice(4, 10)}`;
  }

  function renderTable() {
    const names = [...new Set(jobs.flatMap((j) => Object.keys(j.metrics)))].filter((n) => !SYSTEM.includes(n)).sort();
    clear(table, h("table", { class: "table" },
      h("thead", {}, h("tr", {}, ["job", "status", "family", "dataset", "optimizer", "learning rate", "batch", "epochs", "parameters", ...names].map((t) => h("th", { text: t })))),
      h("tbody", {}, jobs.map((job, i) => {
        const swatch = h("span", { class: "swatch" });
        swatch.style.background = PALETTE[i % PALETTE.length];
        const [opt, lr] = optimizer(job.spec);
        return h("tr", {},
          h("td", { class: "job-cell" }, swatch, h("a", { href: `#/jobs/${job.id}`, text: job.name })),
          h("td", {}, badge(job.status)),
          h("td", { text: job.spec.family || "supervised" }),
          h("td", { text: datasetName(job.spec, uploads) }),
          h("td", { text: String(opt) }),
          h("td", { class: "num", text: String(lr) }),
          h("td", { class: "num", text: String(job.spec.fit.batch_size) }),
          h("td", { class: "num", text: `${job.progress.epoch}/${job.progress.epochs}` }),
          h("td", { class: "num", text: fmtInt(job.parameters) }),
          names.map((n) => h("td", { class: `num${n === metric ? " chosen" : ""}`, text: fmtNum(job.metrics[n]) })));
      }))));
  }

  async function plotMetric() {
    forgetCharts();
    clear(plot);
    cursors = new Map();
    if (!jobs.length || !metric) return;
    chart = new LineChart(plot, { id: "compare", title: metric, xLabel: metric === "step_loss" ? "step" : "epoch", height: 340 });
    for (const job of jobs) {
      const { points, next } = await allMetrics(job.id, metric);
      cursors.set(job.id, next);
      const x = points.map((p) => (metric === "step_loss" ? p.step : p.epoch));
      chart.set(label(job), x, points.map((p) => p.value));
    }
  }

  async function load() {
    clear(error);
    try {
      const found = await Promise.all(ids.map((id) => api(`/v1/jobs/${id}`).catch(() => null)));
      if (!uploads.size) uploads = await uploadNames(api);
      jobs = found.filter(Boolean);
      const names = [...new Set(jobs.flatMap((j) => Object.keys(j.metrics)))].sort();
      if (jobs.length) names.push("step_loss");
      if (!metric || !names.includes(metric)) metric = (jobs.length && headline(jobs[0].metrics)?.name) || names[0] || null;
      clear(select, names.map((n) => h("option", { value: n, text: n, selected: n === metric })));
      if (!jobs.length) clear(table, h("p", { class: "muted", text: "Pick jobs on the left to compare them." }));
      else renderTable();
      remember();
      await plotMetric();
    } catch (err) {
      clear(error, errorBox(err));
    }
  }

  // Running jobs: their new points, from each one's cursor.
  async function follow() {
    const running = jobs.filter((j) => !TERMINAL.has(j.status));
    if (!running.length || !chart) return;
    try {
      for (const job of running) {
        const { points, next } = await allMetrics(job.id, metric, cursors.get(job.id) || 0);
        cursors.set(job.id, next);
        for (const p of points) chart.push(label(job), metric === "step_loss" ? p.step : p.epoch, p.value);
        Object.assign(job, await api(`/v1/jobs/${job.id}`));
      }
      renderTable();
    } catch {
      // the next round tries again
    }
  }

  select.addEventListener("change", () => { metric = select.value; remember(); plotMetric(); renderTable(); });
  let typing = null;
  filter.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(loadPicker, 250); });
  loadPicker();
  load();
  const timer = setInterval(follow, 3000);
  return { key: "compare", destroy() { clearInterval(timer); clearTimeout(typing); } };
}

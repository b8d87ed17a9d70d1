// One job: its state, progress and ETA, live curves from its event stream, the model, the spec,
// the checkpoints, cancel, and the try-the-model panel once it has succeeded.

import { api } from "../api.js";
import { LineChart } from "../charts.js";
import { TERMINAL, badge, clear, confirmDialog, datasetName, errorBox, fmtAgo, fmtDuration,
  fmtInt, fmtNum, h, progressBar, runtime } from "../dom.js";
import { followJob } from "../events.js";
import { SYSTEM, chartOf, chartTitle, eta, fraction, rank, styles, xOf } from "../metrics.js";
import { tryPanel } from "../try/panel.js";
import { checkpointsView, modelView, specView } from "./job_details.js";

const TABS = [["charts", "Charts"], ["model", "Model"], ["spec", "Spec"],
  ["checkpoints", "Checkpoints"], ["try", "Try the model"]];

export function mountJob(view, { id, tab }) {
  let job = null;
  let summary = null;
  let stream = null;
  let lastSeq = 0;
  let current = tab || "charts";
  let shownEpoch = -1;
  let tried = false;
  const epochSeconds = [];
  const charts = new Map();
  const head = h("section", { class: "job-head" });
  const state = h("section", { class: "job-state" });
  const grid = h("div", { class: "chart-grid" });
  const panes = Object.fromEntries(TABS.map(([key]) => [key, h("section", { class: "pane", dataset: { pane: key } })]));
  const tabs = h("nav", { class: "tabs", "aria-label": "job sections" },
    TABS.map(([key, label]) => h("a", { href: `#/jobs/${id}/${key}`, dataset: { tab: key }, text: label })));
  const live = h("span", { class: "live", text: "connecting…" });
  panes.charts.append(grid);
  clear(view, head, state, tabs, ...Object.values(panes));
  setTab(current);
  const timer = setInterval(() => job && renderState(), 1000);

  function chartFor(key) {
    if (charts.has(key)) return charts.get(key);
    const slot = h("div", { class: "chart-slot", dataset: { rank: rank(key) } });
    const after = [...grid.children].find((c) => c.dataset.rank > slot.dataset.rank);
    grid.insertBefore(slot, after || null);
    const chart = new LineChart(slot, { id: key, title: chartTitle(key), xLabel: key === "loss" ? "step" : "epoch", styles: styles(key) });
    charts.set(key, chart);
    return chart;
  }

  function addPoint(p) {
    if (p.seq <= lastSeq) return; // a point is plotted once, in sequence order
    lastSeq = p.seq;
    if (p.name === "epoch_seconds") epochSeconds.push(p.value);
    const key = chartOf(p.name);
    chartFor(key).push(p.name, xOf(key, p), p.value);
  }

  function renderHead() {
    const cancellable = !TERMINAL.has(job.status) && !job.cancel_requested;
    const cancel = h("button", { class: "danger", text: job.cancel_requested && !TERMINAL.has(job.status) ? "Cancelling…" : "Cancel job", disabled: !cancellable, hidden: TERMINAL.has(job.status) });
    cancel.addEventListener("click", async () => {
      if (!(await confirmDialog(`Cancel the job “${job.name}”? A running job stops within a step.`, "Cancel job"))) return;
      try {
        job = { ...job, ...(await api(`/v1/jobs/${id}/cancel`, { method: "POST" })) };
        renderHead();
        renderState();
      } catch (err) {
        state.prepend(errorBox(err));
      }
    });
    clear(head,
      h("div", { class: "title-row" }, h("h1", { text: job.name }), badge(job.status), live),
      h("div", { class: "meta" },
        h("span", { class: "mono", text: job.id }),
        h("span", { text: job.spec.family || "supervised" }),
        h("span", { class: "dataset", text: `dataset ${summary && summary.input ? summary.input.dataset : datasetName(job.spec)}` }),
        h("span", { text: `${fmtInt(job.parameters)} parameters` }),
        job.device ? h("span", { text: `${job.device} · ${job.precision}` }) : null,
        h("span", { text: `created ${fmtAgo(job.created_at)}` })),
      h("div", { class: "row" }, cancel,
        h("a", { class: "button secondary", href: `#/compare?ids=${id}`, text: "Compare" }),
        h("a", { class: "button secondary", href: `#/new?from=${id}`, text: "Clone" })));
  }

  function renderState() {
    const p = job.progress;
    const left = eta(job, epochSeconds);
    const label = [
      p.epochs ? `epoch ${p.epoch} of ${p.epochs}` : null,
      p.steps ? `step ${p.step} of ${p.steps}` : null,
      left != null ? `${fmtDuration(left)} left` : null,
      runtime(job) != null ? `ran ${fmtDuration(runtime(job))}` : null,
    ].filter(Boolean).join(" · ");
    const latest = Object.entries(job.metrics || {}).filter(([k]) => !SYSTEM.includes(k));
    const tests = Object.entries(job.test_metrics || {});
    clear(state,
      h("div", { class: "reason" }, h("span", { class: "muted", text: "status: " }), badge(job.status),
        job.reason ? h("span", { class: "reason-text", text: job.reason }) : null,
        job.cancel_requested && !TERMINAL.has(job.status) ? h("span", { class: "muted", text: "cancel requested" }) : null,
        job.attempt > 1 ? h("span", { class: "muted", text: `attempt ${job.attempt}` }) : null),
      progressBar(fraction(job), label),
      h("div", { class: "cards" },
        latest.map(([k, v]) => h("div", { class: "card" }, h("div", { class: "k", text: k }), h("div", { class: "v", text: fmtNum(v) }))),
        tests.map(([k, v]) => h("div", { class: "card test" }, h("div", { class: "k", text: k }), h("div", { class: "v", text: fmtNum(v) })))));
  }

  async function showCheckpoints() {
    try {
      clear(panes.checkpoints, checkpointsView(await api(`/v1/jobs/${id}/checkpoints`)));
    } catch (err) {
      clear(panes.checkpoints, errorBox(err));
    }
  }

  function showTry() {
    if (tried || !summary || !job) return;
    if (job.status !== "succeeded") {
      clear(panes.try, h("p", { class: "muted", text: "The model can be tried once the job has succeeded." }));
      return;
    }
    tried = true;
    clear(panes.try, tryPanel(job, summary));
  }

  function setTab(next) {
    current = TABS.some(([k]) => k === next) ? next : "charts";
    for (const a of tabs.children) a.classList.toggle("active", a.dataset.tab === current);
    for (const [key, pane] of Object.entries(panes)) pane.hidden = key !== current;
    if (current === "checkpoints" && job) showCheckpoints();
    if (current === "try") showTry();
  }

  function onEvent(type, data) {
    if (type === "metric") {
      addPoint(data);
      return;
    }
    const wasTerminal = TERMINAL.has(job.status);
    if (type === "job") job = { ...job, ...data };
    if (type === "status") job = { ...job, status: data.status, reason: data.reason, attempt: data.attempt };
    renderHead();
    renderState();
    if (job.progress.epoch !== shownEpoch && current === "checkpoints") showCheckpoints();
    shownEpoch = job.progress.epoch;
    if (!wasTerminal && TERMINAL.has(job.status)) {
      api(`/v1/jobs/${id}`).then((fresh) => {
        job = fresh;
        renderHead();
        renderState();
        if (current === "checkpoints") showCheckpoints();
        if (current === "try") showTry();
      }).catch(() => {});
    }
  }

  function onConnection(s) {
    live.textContent = { live: "● live", reconnecting: "reconnecting…", ended: "", gone: "not found", unauthorized: "" }[s] ?? s;
    live.className = `live live-${s}`;
  }

  (async () => {
    try {
      job = await api(`/v1/jobs/${id}`);
    } catch (err) {
      clear(view, h("h1", { text: "Job" }), errorBox(err));
      return;
    }
    renderHead();
    renderState();
    clear(panes.spec, specView(job.spec, id));
    setTab(current);
    stream = followJob(id, { onEvent, onConnection });
    try {
      summary = await api(`/v1/jobs/${id}/summary`);
      clear(panes.model, modelView(summary));
      renderHead();
      if (current === "try") showTry();
    } catch (err) {
      clear(panes.model, errorBox(err));
    }
  })();

  return {
    key: `job:${id}`,
    setTab,
    destroy() {
      clearInterval(timer);
      if (stream) stream.close();
    },
  };
}

// The tenant's jobs, live: polled every 2 s, filtered by status and name, paged; pick several to
// compare.

import { api, query } from "../api.js";
import { STATUSES, badge, clear, datasetName, errorBox, fmtAgo, fmtDuration, fmtInt, fmtNum,
  h, headline, progressBar, runtime, uploadNames } from "../dom.js";
import { fraction } from "../metrics.js";

const PAGE = 25;

export function mountJobs(view, params) {
  const selected = new Set();
  let offset = Number(params.get("offset")) || 0;
  let generation = 0;
  let uploads = new Map();
  const status = h("select", { name: "status", "aria-label": "status" },
    h("option", { value: "", text: "every status" }), STATUSES.map((s) => h("option", { value: s, text: s })));
  status.value = params.get("status") || "";
  const name = h("input", { type: "search", name: "name", placeholder: "filter by name", maxLength: 100, value: params.get("name") || "", "aria-label": "name" });
  const compare = h("a", { class: "button secondary", href: "#/compare", text: "Compare selected" });
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const error = h("div");
  const table = h("table", { class: "table jobs" },
    h("thead", {}, h("tr", {}, h("th", { class: "check" }), ["name", "status", "progress", "headline metric", "dataset", "parameters", "created", "ran"].map((t) => h("th", { text: t })))),
    body);
  clear(view,
    h("div", { class: "page-head" }, h("h1", { text: "Jobs" }), h("a", { class: "button primary", href: "#/new", text: "New job" })),
    h("div", { class: "toolbar" }, status, name, compare),
    error, h("div", { class: "table-wrap" }, table), pager);

  function remember() {
    const q = query({ status: status.value, name: name.value.trim(), offset: offset || null });
    history.replaceState(null, "", `#/jobs${q}`);
  }

  function updateCompare() {
    compare.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
    compare.href = `#/compare${query({ ids: [...selected].join(",") })}`;
    compare.classList.toggle("disabled", selected.size < 1);
  }

  function row(job) {
    const box = h("input", { type: "checkbox", checked: selected.has(job.id), "aria-label": `select ${job.name}` });
    box.addEventListener("change", () => {
      if (box.checked) selected.add(job.id);
      else selected.delete(job.id);
      updateCompare();
    });
    const top = headline(job.metrics);
    const p = job.progress;
    return h("tr", { dataset: { jobId: job.id } },
      h("td", { class: "check" }, box),
      h("td", {}, h("a", { class: "job-link", href: `#/jobs/${job.id}`, text: job.name }), h("div", { class: "muted mono small", text: job.id.slice(0, 12) })),
      h("td", {}, badge(job.status)),
      h("td", { class: "progress-cell" }, progressBar(fraction(job), p.epochs ? `${p.epoch}/${p.epochs}` : "")),
      h("td", {}, top ? [h("span", { class: "muted", text: `${top.name} ` }), h("strong", { text: fmtNum(top.value) })] : "—"),
      h("td", { class: "dataset-cell", text: datasetName(job.spec, uploads) }),
      h("td", { class: "num", text: fmtInt(job.parameters) }),
      h("td", { text: fmtAgo(job.created_at) }),
      h("td", { text: fmtDuration(runtime(job)) }));
  }

  async function refresh() {
    const mine = ++generation; // a newer request's answer wins over an older one's
    const q = query({ status: status.value, name: name.value.trim(), limit: PAGE, offset });
    try {
      const answer = await api(`/v1/jobs${q}`);
      if (mine !== generation) return;
      clear(error);
      clear(body, answer.data.length ? answer.data.map(row)
        : h("tr", {}, h("td", { colSpan: 9, class: "empty", text: "No jobs match." })));
      const prev = h("button", { class: "secondary small", text: "Newer", disabled: offset === 0 });
      const next = h("button", { class: "secondary small", text: "Older", disabled: offset + PAGE >= answer.count });
      prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); remember(); refresh(); });
      next.addEventListener("click", () => { offset += PAGE; remember(); refresh(); });
      const shown = answer.count ? `${offset + 1}–${Math.min(offset + PAGE, answer.count)} of ${answer.count}` : "0 jobs";
      clear(pager, prev, h("span", { class: "muted", text: shown }), next);
    } catch (err) {
      if (mine === generation) clear(error, errorBox(err));
    }
  }

  let typing = null;
  name.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { offset = 0; remember(); refresh(); }, 250);
  });
  status.addEventListener("change", () => { offset = 0; remember(); refresh(); });
  updateCompare();
  uploadNames(api).then((found) => {
    uploads = found;
    refresh();
  });
  const timer = setInterval(refresh, 2000);
  return { key: "jobs", destroy() { clearInterval(timer); clearTimeout(typing); } };
}

// A job page's quieter tabs: the model (the submit's dry run), the spec, the checkpoints.

import { fmtBytes, fmtInt, fmtNum, fmtTime, h } from "../dom.js";

function shape(s) {
  return s ? `(${s.join(", ")})` : "—";
}

function facts(rows) {
  return h("dl", { class: "facts" }, rows.filter(([, v]) => v != null).map(([k, v]) => [
    h("dt", { text: k }), h("dd", {}, v)]));
}

export function modelView(summary) {
  const input = summary.input;
  const parts = [
    facts([
      ["Family", summary.family],
      ["Parameters", fmtInt(summary.parameters)],
      ["Estimated training memory", fmtBytes(summary.estimated_memory_bytes)],
      ["Output shape", shape(summary.output_shape)],
      ["Operations", summary.operations.join(", ")],
      ["Dataset", input ? input.dataset : null],
      ["Input", input ? `${shape(input.input_shape)}, ${input.kind}` : null],
      ["Task", input ? input.task : null],
      ["Value range", input && input.value_range ? `${fmtNum(input.value_range[0])} to ${fmtNum(input.value_range[1])} (raw units)` : null],
      ["Classes", input && input.num_classes ? fmtInt(input.num_classes) : null],
    ]),
  ];
  if (input && input.class_names) {
    const names = input.class_names.slice(0, 100);
    parts.push(h("div", { class: "chips", "aria-label": "class names" },
      names.map((n) => h("span", { class: "chip", text: n })),
      input.class_names.length > names.length ? h("span", { class: "muted", text: `and ${input.class_names.length - names.length} more` }) : null));
  }
  if (!summary.layers.length) {
    parts.push(h("p", { class: "muted", text: "This job was submitted before dry runs were kept with jobs: no layer table." }));
    return h("div", {}, parts);
  }
  const networks = summary.layers.some((l) => l.network);
  const total = summary.layers.reduce((n, l) => n + l.parameters, 0);
  parts.push(h("div", { class: "table-wrap" }, h("table", { class: "table layers" },
    h("thead", {}, h("tr", {}, h("th", { text: "#" }), networks ? h("th", { text: "network" }) : null,
      h("th", { text: "layer" }), h("th", { text: "output shape" }), h("th", { class: "num", text: "parameters" }))),
    h("tbody", {}, summary.layers.map((l) => h("tr", {},
      h("td", { class: "num", text: String(l.index) }), networks ? h("td", { text: l.network || "" }) : null,
      h("td", { class: "mono", text: l.type }), h("td", { class: "mono", text: shape(l.output_shape) }),
      h("td", { class: "num", text: fmtInt(l.parameters) })))),
    h("tfoot", {}, h("tr", {}, h("td", { colSpan: networks ? 4 : 3, text: "total" }),
      h("td", { class: "num", text: fmtInt(total) }))))));
  return h("div", {}, parts);
}

export function specView(spec, jobId) {
  const text = JSON.stringify(spec, null, 2);
  const copy = h("button", { class: "secondary small", text: "Copy" });
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Copy failed";
    }
  });
  return h("div", {},
    h("div", { class: "row end" }, copy, h("a", { class: "button secondary small", href: `#/new?from=${jobId}`, text: "Clone into a new job" })),
    h("pre", { class: "code", text }));
}

export function checkpointsView(answer) {
  if (!answer.data.length) return h("p", { class: "muted", text: "No checkpoints yet: one is written at the end of each epoch." });
  return h("div", {},
    h("p", { class: "muted", text: `A resume would start from epoch ${answer.resume_from}. Older checkpoints are pruned (fit.keep_checkpoints).` }),
    h("div", { class: "table-wrap" }, h("table", { class: "table" },
      h("thead", {}, h("tr", {}, ["epoch", "attempt", "sha256", "metrics", "written"].map((t) => h("th", { text: t })))),
      h("tbody", {}, answer.data.map((c) => h("tr", {},
        h("td", { class: "num", text: String(c.epoch) }),
        h("td", { class: "num", text: String(c.attempt) }),
        h("td", { class: "mono", title: c.sha256, text: `${c.sha256.slice(0, 12)}…` }),
        h("td", {}, h("div", { class: "metrics-cell" }, Object.entries(c.metrics)
          .filter(([k]) => !["lr", "epoch_seconds", "samples_per_second"].includes(k))
          .map(([k, v]) => h("span", { class: "kv" }, h("span", { class: "k", text: k }), h("span", { text: fmtNum(v) }))))),
        h("td", { text: fmtTime(c.created_at) })))))));
}

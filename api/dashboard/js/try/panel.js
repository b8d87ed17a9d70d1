// Try the model: draw for image models, a form for tabular ones, pictures for what generative
// models make, and any operation of the family as raw JSON.

import { api } from "../api.js";
import { clear, errorBox, fmtNum, h } from "../dom.js";
import { imageDims, imageGrid } from "./images.js";
import { Sketch } from "./sketch.js";

const MAX_FORM_FIELDS = 64;

function predict(jobId, body) {
  return api(`/v1/models/${jobId}/predict`, { method: "POST", json: body });
}

// A classifier's answer as one bar per class (the 20 likeliest of many classes).
export function probabilityBars(answer) {
  const probs = answer.probabilities[0];
  let order = probs.map((p, i) => i);
  if (order.length > 20) order = order.sort((a, b) => probs[b] - probs[a]).slice(0, 20);
  const top = answer.class_ids[0];
  return h("div", { class: "bars", "aria-label": "class probabilities" },
    h("div", { class: "verdict" }, h("span", { class: "muted", text: "prediction " }), h("strong", { class: "predicted", text: answer.predictions[0] })),
    order.map((i) => {
      const fill = h("div", { class: "fill" });
      fill.style.width = `${(probs[i] * 100).toFixed(1)}%`;
      return h("div", { class: `bar-row${i === top ? " best" : ""}`, dataset: { classId: String(i) } },
        h("span", { class: "bar-label", text: answer.classes[i] }),
        h("div", { class: "bar-track" }, fill),
        h("span", { class: "bar-value", text: `${(probs[i] * 100).toFixed(1)}%` }));
    }));
}

function valuesView(answer) {
  const values = [answer.predictions[0]].flat(Infinity);
  return h("div", { class: "values" }, h("span", { class: "muted", text: "prediction " }),
    values.slice(0, 64).map((v, i) => h("span", { class: "kv" }, values.length > 1 ? h("span", { class: "k", text: String(i) }) : null, h("span", { text: fmtNum(v) }))));
}

function answerView(answer, dims, range) {
  if (answer.probabilities) return probabilityBars(answer);
  if (dims && answer.operation !== "predict") return imageGrid(answer.predictions, dims, range);
  return valuesView(answer);
}

// Generated rows of a table: one line each, a column per feature.
function rowsTable(rows, input) {
  const width = [rows[0]].flat(Infinity).length;
  const names = input.feature_names || Array.from({ length: width }, (_, i) => `x[${i}]`);
  return h("div", { class: "table-wrap" }, h("table", { class: "table compact" },
    h("thead", {}, h("tr", {}, h("th", { text: "#" }), names.map((n) => h("th", { class: "num", text: n })))),
    h("tbody", {}, rows.map((r, i) => h("tr", {}, h("td", { class: "num", text: String(i) }),
      [r].flat(Infinity).map((v) => h("td", { class: "num", text: fmtNum(v) })))))));
}

function card(title, ...body) {
  return h("section", { class: "try-card" }, h("h3", { text: title }), ...body);
}

function drawCard(job, input, dims, operation) {
  const out = h("div", { class: "try-output" });
  const run = async () => {
    const values = sketch.values();
    try {
      const answer = await predict(job.id, { operation, instances: [values] });
      clear(out, operation === "reconstruct"
        ? h("div", { class: "row" }, imageGrid([values], dims, input.value_range, ["input"]),
          imageGrid(answer.predictions, dims, input.value_range, ["reconstruction"]))
        : answerView(answer, dims, input.value_range));
    } catch (err) {
      clear(out, errorBox(err));
    }
  };
  const sketch = new Sketch(dims, input.value_range, run);
  const buttons = h("div", { class: "row" },
    h("button", { class: "secondary", text: "Clear", onclick: () => { sketch.clear(); clear(out); } }),
    h("button", { class: "primary", text: operation === "reconstruct" ? "Reconstruct" : "Predict", onclick: run }));
  const title = operation === "reconstruct" ? "Draw, and see it reconstructed" : "Draw a sample";
  return card(title, h("div", { class: "try-split" }, h("div", {}, sketch.el, buttons), out));
}

function formCard(job, input) {
  const n = input.input_shape.reduce((a, b) => a * b, 1);
  const out = h("div", { class: "try-output" });
  const fields = Array.from({ length: n }, (_, i) => h("input", {
    type: "number", step: "any", required: true, name: `f${i}`,
    value: String(input.feature_means ? input.feature_means[i] : 0),
  }));
  const form = h("form", { class: "feature-form" },
    h("div", { class: "fields" }, fields.map((f, i) => h("label", {},
      h("span", { text: input.feature_names ? input.feature_names[i] : `x[${i}]` }), f))),
    h("div", { class: "row" }, h("button", { class: "primary", type: "submit", text: "Predict" })));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      clear(out, answerView(await predict(job.id, { operation: "predict", instances: [fields.map((f) => Number(f.value))] })));
    } catch (err) {
      clear(out, errorBox(err));
    }
  });
  const note = input.feature_means ? "Starting values are the training data's column means." : null;
  return card("Enter one row", note ? h("p", { class: "muted small", text: note }) : null, form, out);
}

function makeCard(job, input, dims, operation) {
  const out = h("div", { class: "try-output" });
  const count = h("input", { type: "number", min: "1", max: "64", value: "16", name: "count" });
  const seed = h("input", { type: "number", min: "0", value: "0", name: "seed" });
  const conditional = operation === "generate" && job.spec.gan && job.spec.gan.variant === "cgan";
  const run = async (e) => {
    e.preventDefault();
    const k = Math.max(1, Math.min(64, Number(count.value) || 16));
    const body = { operation, seed: Number(seed.value) || 0 };
    const labels = conditional ? Array.from({ length: k }, (_, i) => i % (input.num_classes || 1)) : null;
    if (labels) body.labels = labels;
    else body.count = k;
    try {
      const answer = await predict(job.id, body);
      const names = labels && input.class_names ? labels.map((l) => input.class_names[l]) : [];
      clear(out, dims ? imageGrid(answer.predictions, dims, input.value_range, names) : rowsTable(answer.predictions, input));
    } catch (err) {
      clear(out, errorBox(err));
    }
  };
  const form = h("form", { class: "row bottom" }, h("label", {}, h("span", { text: conditional ? "samples (one class each, in turn)" : "samples" }), count),
    h("label", {}, h("span", { text: "seed" }), seed), h("button", { class: "primary", type: "submit", text: operation === "sample" ? "Sample" : "Generate" }));
  form.addEventListener("submit", run);
  return card(operation === "sample" ? "Sample from the latent space" : "Generate", form, out);
}

function rawCard(job, summary, dims) {
  const ops = summary.operations;
  const select = h("select", { name: "operation" }, ops.map((o) => h("option", { value: o, text: o })));
  const n = summary.input ? summary.input.input_shape.reduce((a, b) => a * b, 1) : 1;
  const body = h("textarea", { class: "code", rows: 6, spellcheck: "false", name: "body" });
  const example = (op) => JSON.stringify(["sample", "generate"].includes(op)
    ? { operation: op, count: 4, seed: 0 } : { operation: op, instances: [new Array(Math.min(n, 4096)).fill(0)] });
  body.value = example(ops[0]);
  select.addEventListener("change", () => { body.value = example(select.value); });
  const out = h("div", { class: "try-output" });
  const form = h("form", {}, h("div", { class: "row" }, h("label", {}, h("span", { text: "operation" }), select)), body,
    h("div", { class: "row" }, h("button", { class: "primary", type: "submit", text: "Run" })));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const answer = await predict(job.id, JSON.parse(body.value));
      const text = JSON.stringify(answer, null, 1);
      clear(out, dims && ["reconstruct", "decode", "sample", "generate"].includes(answer.operation)
        ? imageGrid(answer.predictions, dims, summary.input.value_range) : null,
      h("pre", { class: "code", text: text.length > 20000 ? `${text.slice(0, 20000)}…` : text }));
    } catch (err) {
      clear(out, errorBox(err));
    }
  });
  return h("details", { class: "try-card raw" }, h("summary", { text: "Any operation, as JSON" }), form, out);
}

export function tryPanel(job, summary) {
  const input = summary.input;
  const ops = summary.operations;
  const dims = input && input.kind === "image" ? imageDims(input.input_shape) : null;
  const cards = [];
  if (input && ops.includes("predict") && summary.family !== "seq2seq") {
    if (dims) cards.push(drawCard(job, input, dims, "predict"));
    else if (input.input_shape.length === 1 && input.input_shape[0] <= MAX_FORM_FIELDS) cards.push(formCard(job, input));
  }
  if (input && dims && ops.includes("reconstruct")) cards.push(drawCard(job, input, dims, "reconstruct"));
  for (const op of ["generate", "sample"]) if (input && ops.includes(op)) cards.push(makeCard(job, input, dims, op));
  cards.push(rawCard(job, summary, dims));
  return h("div", { class: "try" }, cards);
}

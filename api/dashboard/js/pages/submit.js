// A new job: a spec as JSON (from a template, a job to clone, or a dataset to train on), posted to
// POST /v1/jobs; a refusal shows each field the API names.

import { api } from "../api.js";
import { clear, errorBox, h } from "../dom.js";

const TEMPLATES = {
  "digits MLP": {
    name: "digits-mlp", dataset: { name: "digits" },
    model: { layers: [{ type: "flatten" }, { type: "dense", units: 512, activation: "relu" }, { type: "dense", units: 10, activation: "softmax" }] },
    compile: { optimizer: "adam", loss: "sparse_categorical_crossentropy", metrics: ["accuracy"] },
    fit: { epochs: 5, batch_size: 32, validation_split: 0.2, seed: 42 },
  },
  "iris MLP": {
    name: "iris-mlp", dataset: { name: "iris", test_split: 0.2 },
    model: { preset: { name: "mlp", hidden_units: [16], activation: "tanh" } },
    compile: { optimizer: { type: "adagrad", learning_rate: 0.1 }, loss: "categorical_crossentropy", metrics: ["accuracy"] },
    fit: { epochs: 50, batch_size: 16, validation_split: 0.2, seed: 3 },
  },
  "digits VAE": {
    name: "digits-vae", family: "vae", dataset: { name: "digits" },
    vae: {
      encoder: [{ type: "flatten" }, { type: "dense", units: 64, activation: "relu" }], latent_dim: 8, beta: 0.05,
      decoder: [{ type: "dense", units: 64, activation: "relu" }, { type: "dense", units: 64, activation: "sigmoid" }, { type: "reshape", target_shape: [1, 8, 8] }],
    },
    compile: { optimizer: { type: "adam", learning_rate: 0.01 }, loss: "mse" },
    fit: { epochs: 30, batch_size: 128, validation_split: 0.2, seed: 0 },
  },
};

async function fromDataset(ref) {
  const all = (await api("/v1/datasets")).data;
  const d = all.find((x) => x.id === ref || (!x.id && x.name === ref));
  if (!d) throw new Error(`no dataset ${ref}`);
  const classify = d.task === "classification";
  return {
    name: `${(d.name.match(/[A-Za-z0-9][A-Za-z0-9 ._-]*/) || ["job"])[0].slice(0, 60)}-mlp`,
    dataset: d.id ? { id: d.id } : { name: d.name },
    model: { preset: { name: "mlp", hidden_units: [64] } },
    compile: { optimizer: "adam", loss: classify ? "sparse_categorical_crossentropy" : "mse", metrics: [classify ? "accuracy" : "mae"] },
    fit: { epochs: 20, batch_size: 32, validation_split: 0.2 },
  };
}

export function mountSubmit(view, params) {
  const text = h("textarea", { class: "code spec", rows: 24, spellcheck: "false", name: "spec", "aria-label": "job spec" });
  const templates = h("select", { "aria-label": "template" }, h("option", { value: "", text: "start from a template…" }),
    Object.keys(TEMPLATES).map((t) => h("option", { value: t, text: t })));
  const error = h("div");
  const button = h("button", { class: "primary", type: "submit", text: "Submit job" });
  const form = h("form", { class: "new-job" }, h("div", { class: "toolbar" }, templates), text, error, h("div", { class: "row" }, button));
  clear(view, h("div", { class: "page-head" }, h("h1", { text: "New job" })),
    h("p", { class: "muted", text: "A job spec in Keras' vocabulary (layers, compile, fit): docs/spec.md describes every field." }), form);
  const show = (spec) => { text.value = JSON.stringify(spec, null, 2); };
  templates.addEventListener("change", () => templates.value && show(TEMPLATES[templates.value]));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(error);
    let spec;
    try {
      spec = JSON.parse(text.value);
    } catch (err) {
      clear(error, errorBox(`not valid JSON: ${err.message}`));
      return;
    }
    button.disabled = true;
    try {
      const job = await api("/v1/jobs", { method: "POST", json: spec });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      clear(error, errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
  (async () => {
    try {
      if (/^job_[0-9a-f]{32}$/.test(params.get("from") || "")) show((await api(`/v1/jobs/${params.get("from")}`)).spec);
      else if (params.get("dataset")) show(await fromDataset(params.get("dataset")));
      else show(TEMPLATES["digits MLP"]);
    } catch (err) {
      clear(error, errorBox(err));
    }
  })();
  return { key: "new", destroy() {} };
}

// Datasets: the built-in catalogue and the tenant's uploads; upload a CSV or NPZ, delete one.

import { api } from "../api.js";
import { clear, confirmDialog, errorBox, fmtAgo, fmtBytes, fmtInt, h } from "../dom.js";

function classes(d) {
  if (!d.num_classes) return "—";
  const names = (d.class_names || []).slice(0, 6).join(", ");
  return `${fmtInt(d.num_classes)}${names ? `: ${names}${d.class_names.length > 6 ? ", …" : ""}` : ""}`;
}

export function mountDatasets(view) {
  const body = h("tbody");
  const error = h("div");
  const status = h("p", { class: "muted", role: "status" });
  const file = h("input", { type: "file", name: "file", accept: ".csv,.npz", required: true });
  const name = h("input", { type: "text", name: "name", maxLength: 200, placeholder: "default: the file's name" });
  const target = h("input", { type: "text", name: "target", maxLength: 200, placeholder: "CSV: default the last column" });
  const task = h("select", { name: "task" }, ["", "classification", "regression"].map((t) => h("option", { value: t, text: t || "inferred" })));
  const submit = h("button", { class: "primary", type: "submit", text: "Upload" });
  const form = h("form", { class: "upload card-box" },
    h("h3", { text: "Upload a dataset" }),
    h("p", { class: "muted small", text: "A .csv with a header row (numeric features, one target column) or a .npz with arrays x and y (optional x_test, y_test)." }),
    h("div", { class: "fields" },
      h("label", {}, h("span", { text: "file" }), file), h("label", {}, h("span", { text: "name" }), name),
      h("label", {}, h("span", { text: "target column" }), target), h("label", {}, h("span", { text: "task" }), task)),
    h("div", { class: "row" }, submit, status));
  clear(view, h("div", { class: "page-head" }, h("h1", { text: "Datasets" })), form, error,
    h("div", { class: "table-wrap" }, h("table", { class: "table datasets" },
      h("thead", {}, h("tr", {}, ["name", "source", "task", "kind", "input", "classes", "samples", "size", "uploaded", ""].map((t) => h("th", { text: t })))),
      body)));

  async function remove(d) {
    if (!(await confirmDialog(`Delete the dataset “${d.name}”? Jobs that finished keep their models.`, "Delete"))) return;
    try {
      await api(`/v1/datasets/${d.id}`, { method: "DELETE" });
      await refresh();
    } catch (err) {
      clear(error, errorBox(err));
    }
  }

  async function refresh() {
    try {
      const answer = await api("/v1/datasets");
      const uploadsFirst = [...answer.data.filter((d) => d.id), ...answer.data.filter((d) => !d.id)];
      clear(body, uploadsFirst.map((d) => h("tr", { dataset: { datasetId: d.id || d.name } },
        h("td", {}, h("span", { class: "dataset-name", text: d.name }), d.id ? h("div", { class: "muted mono small", text: d.id }) : null),
        h("td", {}, h("span", { class: `badge badge-${d.source}`, text: d.source })),
        h("td", { text: d.task }),
        h("td", { text: d.kind }),
        h("td", { class: "mono", text: `(${d.input_shape.join(", ")})` }),
        h("td", { class: "classes", text: classes(d) }),
        h("td", { class: "num", text: fmtInt(d.samples) }),
        h("td", { class: "num", text: fmtBytes(d.size_bytes) }),
        h("td", { text: d.created_at ? fmtAgo(d.created_at) : "" }),
        h("td", {}, h("a", { class: "button secondary small", href: `#/new?dataset=${encodeURIComponent(d.id || d.name)}`, text: "Train" }),
          d.id ? h("button", { class: "danger small", text: "Delete", onclick: () => remove(d) }) : null))));
    } catch (err) {
      clear(error, errorBox(err));
    }
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!file.files.length) return;
    const data = new FormData();
    data.append("file", file.files[0]);
    for (const [k, el] of [["name", name], ["target", target], ["task", task]]) if (el.value.trim()) data.append(k, el.value.trim());
    submit.disabled = true;
    status.textContent = "Uploading…";
    clear(error);
    try {
      const d = await api("/v1/datasets", { method: "POST", form: data });
      status.textContent = `Uploaded: ${d.name} (${fmtInt(d.samples)} samples)`;
      form.reset();
      await refresh();
    } catch (err) {
      status.textContent = "";
      clear(error, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  refresh();
  return { key: "datasets", destroy() {} };
}

// Building the page: every string goes in as text (textContent or a Text node), never as HTML.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (typeof v !== "string" && k in el) el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  add(el, children);
  return el;
}

export function add(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return add(el, children);
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "pruned"]);
export const STATUSES = ["queued", "running", "preempted", "succeeded", "failed", "cancelled", "pruned"];

export function badge(status) {
  return h("span", { class: `badge badge-${status}`, text: status });
}

export function fmtNum(v) {
  if (v == null || Number.isNaN(v)) return "—";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 10000) return Math.round(v).toLocaleString("en-US");
  if (a >= 1) return String(Number(v.toPrecision(5)));
  if (a >= 1e-4) return String(Number(v.toPrecision(4)));
  return v.toExponential(2);
}

export function fmtInt(v) {
  return v == null ? "—" : Number(v).toLocaleString("en-US");
}

export function fmtBytes(v) {
  if (v == null) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let n = v;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function fmtAgo(iso) {
  if (!iso) return "—";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString("en-GB", { day: "numeric", month: "short", year: "numeric" });
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString("en-GB") : "—";
}

// How long a job ran (or has run so far).
export function runtime(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return (end - Date.parse(job.started_at)) / 1000;
}

// The metric a list shows for a job: the one a user most likely watches.
const HEADLINE = ["val_accuracy", "accuracy", "val_sequence_accuracy", "sequence_accuracy",
  "val_loss", "loss", "fd", "g_loss", "val_free_energy", "free_energy"];

export function headline(metrics) {
  const name = HEADLINE.find((n) => metrics && metrics[n] != null)
    || Object.keys(metrics || {}).find((n) => !["lr", "epoch_seconds", "samples_per_second"].includes(n));
  return name ? { name, value: metrics[name] } : null;
}

// A job's dataset: a built-in's name, an upload's name where `uploads` (id -> name) knows it.
export function datasetName(spec, uploads = new Map()) {
  return spec.dataset.name || uploads.get(spec.dataset.id) || spec.dataset.id || "—";
}

export async function uploadNames(api) {
  try {
    return new Map((await api("/v1/datasets")).data.filter((d) => d.id).map((d) => [d.id, d.name]));
  } catch {
    return new Map();
  }
}

export function progressBar(fraction, label) {
  const bar = h("div", { class: "bar" });
  bar.style.width = `${Math.round(Math.min(1, Math.max(0, fraction)) * 1000) / 10}%`;
  return h("div", { class: "progress", title: label || "" }, h("div", { class: "track" }, bar),
    label ? h("span", { class: "progress-label", text: label }) : null);
}

// A modal question in the page (an HTML <dialog>, not window.confirm): resolves true or false.
export function confirmDialog(question, yes = "Confirm", danger = true) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm" },
      h("p", { text: question }),
      h("form", { method: "dialog", class: "row end" },
        h("button", { value: "no", class: "secondary", text: "Keep" }),
        h("button", { value: "yes", class: danger ? "danger" : "primary", text: yes })));
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "yes");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function errorBox(err) {
  return h("pre", { class: "error", role: "alert", text: err instanceof Error ? err.message : String(err) });
}

// The dashboard: one page, routed by the URL's hash. Every page reads the public /v1 API with
// the key kept for this tab (api.js); without one, the sign-in page.

import { auth } from "./api.js";
import { forgetCharts } from "./charts.js";
import { clear, h } from "./dom.js";
import { mountCompare } from "./pages/compare.js";
import { mountDatasets } from "./pages/datasets.js";
import { mountJob } from "./pages/job.js";
import { mountJobs } from "./pages/jobs.js";
import { mountSignin } from "./pages/signin.js";
import { mountSubmit } from "./pages/submit.js";

const ROUTES = [
  [/^\/jobs\/(job_[0-9a-f]{32})(?:\/(\w+))?$/, (view, m) => mountJob(view, { id: m[1], tab: m[2] }), "jobs"],
  [/^\/jobs$/, (view, m, q) => mountJobs(view, q), "jobs"],
  [/^\/compare$/, (view, m, q) => mountCompare(view, q), "compare"],
  [/^\/datasets$/, (view) => mountDatasets(view), "datasets"],
  [/^\/new$/, (view, m, q) => mountSubmit(view, q), "new"],
];

const view = document.getElementById("view");
const nav = document.getElementById("nav");
let page = null;

function leave() {
  if (page) page.destroy();
  forgetCharts();
  page = null;
}

function route() {
  const [path, search] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(search || "");
  if (!auth.key) {
    nav.hidden = true;
    leave();
    const next = path === "/signin" ? params.get("next") : location.hash;
    page = mountSignin(view, { next });
    return;
  }
  nav.hidden = false;
  if (path === "/signin") {
    location.hash = "#/jobs";
    return;
  }
  const found = ROUTES.find(([re]) => re.test(path));
  if (!found) {
    location.hash = "#/jobs";
    return;
  }
  const [re, mount, section] = found;
  const match = path.match(re);
  for (const a of nav.querySelectorAll("a[data-section]")) a.classList.toggle("active", a.dataset.section === section);
  // Another tab of the job already shown: switch tabs, keep its stream and charts.
  if (page && page.setTab && page.key === `job:${match[1]}`) {
    page.setTab(match[2]);
    return;
  }
  leave();
  clear(view);
  page = mount(view, match, params);
}

function signOut() {
  auth.clear();
  leave();
  location.hash = "#/signin";
  route();
}

clear(nav,
  h("a", { href: "#/jobs", dataset: { section: "jobs" }, text: "Jobs" }),
  h("a", { href: "#/compare", dataset: { section: "compare" }, text: "Compare" }),
  h("a", { href: "#/datasets", dataset: { section: "datasets" }, text: "Datasets" }),
  h("a", { href: "#/new", dataset: { section: "new" }, text: "New job" }),
  h("button", { class: "link", id: "signout", text: "Sign out", onclick: signOut }));

window.addEventListener("hashchange", route);
window.addEventListener("fitserve:signedin", route);
window.addEventListener("fitserve:signedout", () => {
  leave();
  route();
});
route();

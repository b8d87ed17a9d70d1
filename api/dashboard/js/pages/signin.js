// Sign in with an API key: checked against the API, then kept for this tab (api.js).

import { ApiError, api, auth } from "../api.js";
import { clear, h } from "../dom.js";

export function mountSignin(view, { next }) {
  const key = h("input", { type: "password", name: "key", id: "key", autocomplete: "off", required: true, placeholder: "the key fitserve printed", spellcheck: "false" });
  const message = h("p", { class: "error-text", role: "alert" });
  const button = h("button", { class: "primary", type: "submit", text: "Sign in" });
  const form = h("form", { class: "signin card-box" },
    h("h1", { text: "Sign in to Fitserve" }),
    h("p", { class: "muted" }, "Use an API key: ", h("code", { text: "fitserve up" }),
      " prints one on first start and keeps it in ", h("code", { text: ".fitserve/api_key" }), "; ",
      h("code", { text: "fitserve keys create --tenant NAME" }), " makes another. ",
      "The key stays in this browser tab only, and is forgotten when the tab closes."),
    h("label", { for: "key", text: "API key" }), key, message, button);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    button.disabled = true;
    message.textContent = "";
    const given = key.value.trim();
    try {
      await api("/v1/jobs?limit=1", { key: given });
      auth.set(given);
      key.value = "";
      const target = next && next.startsWith("#/") && !next.startsWith("#/signin") ? next : "#/jobs";
      if (location.hash === target) window.dispatchEvent(new Event("fitserve:signedin"));
      else location.hash = target;
    } catch (err) {
      message.textContent = err instanceof ApiError && err.status === 401 ? "That key is not valid." : err.message;
    } finally {
      button.disabled = false;
    }
  });
  clear(view, form);
  key.focus();
  return { key: "signin", destroy() {} };
}

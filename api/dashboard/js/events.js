// A job's live events: GET /v1/jobs/{id}/events read with fetch() (EventSource cannot send the
// Authorization header), parsed by the WHATWG rules, and resumed with Last-Event-ID after a
// dropped connection, so no event is missed or seen twice.

import { auth, headers } from "./api.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "pruned"]);

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}

// Calls onEvent(type, data, id) for each `job`, `metric` and `status` event until the job's
// final status (or close()). onConnection(state) hears "live", "reconnecting" and "ended".
export function followJob(jobId, { onEvent, onConnection = () => {} }) {
  const controller = new AbortController();
  const { signal } = controller;
  let lastId = null;
  let retry = 2000;
  let ended = false;

  async function read(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let type = "";
    let data = [];
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (id !== null) lastId = id;
          if (data.length) {
            const kind = type || "message";
            const parsed = JSON.parse(data.join("\n"));
            onEvent(kind, parsed, lastId);
            if (kind === "status" && TERMINAL.has(parsed.status)) ended = true;
          }
          type = "";
          data = [];
          id = null;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") type = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
        else if (field === "retry" && /^\d+$/.test(val)) retry = Number(val);
      }
    }
  }

  (async () => {
    while (!signal.aborted && !ended) {
      try {
        const extra = lastId === null ? {} : { "Last-Event-ID": lastId };
        const response = await fetch(`/v1/jobs/${jobId}/events`, {
          headers: headers(extra, auth.key), signal, cache: "no-store",
        });
        if (response.status === 204) break;
        if (response.status === 401 || response.status === 404) {
          onConnection(response.status === 404 ? "gone" : "unauthorized");
          return;
        }
        if (!response.ok) {
          const wait = Number(response.headers.get("Retry-After")) * 1000 || retry;
          onConnection("reconnecting");
          await sleep(wait, signal);
          continue;
        }
        onConnection("live");
        await read(response);
      } catch (err) {
        if (signal.aborted) return;
      }
      if (!ended && !signal.aborted) {
        onConnection("reconnecting");
        await sleep(retry, signal);
      }
    }
    if (!signal.aborted) onConnection("ended");
  })();

  return { close: () => controller.abort() };
}

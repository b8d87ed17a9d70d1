// How a job's metric points become charts, and how long it has left.

export const SYSTEM = ["lr", "epoch_seconds", "samples_per_second"];

// The chart a point belongs to: step_loss with loss (one chart, x = step), val_x with x.
export function chartOf(name) {
  if (name === "step_loss") return "loss";
  return name.startsWith("val_") ? name.slice(4) : name;
}

export function rank(chart) {
  if (chart === "loss") return "0";
  return SYSTEM.includes(chart) ? `2${SYSTEM.indexOf(chart)}` : `1${chart}`;
}

const TITLES = {
  loss: "Loss (per step and per epoch)",
  lr: "Learning rate",
  epoch_seconds: "Seconds per epoch",
  samples_per_second: "Samples per second",
};

export function chartTitle(chart) {
  return TITLES[chart] || chart;
}

// The loss chart is drawn against the step, so its step losses and epoch points share an axis;
// every other chart against the epoch.
export function xOf(chart, point) {
  return chart === "loss" ? point.step : point.epoch;
}

export function styles(chart) {
  if (chart === "loss") {
    return {
      step_loss: { color: "#93c5fd", width: 1, points: false },
      loss: { color: "#1d4ed8" },
      val_loss: { color: "#ea580c" },
    };
  }
  return { [chart]: { color: "#1d4ed8" }, [`val_${chart}`]: { color: "#ea580c" } };
}

function stepsDone(p) {
  return p.steps && p.epoch >= 1 ? (p.epoch - 1) * p.steps + p.step : 0;
}

export function fraction(job) {
  if (job.status === "succeeded") return 1;
  const p = job.progress;
  if (!p.epochs) return 0;
  if (p.steps) return Math.min(1, stepsDone(p) / (p.epochs * p.steps));
  return Math.min(1, p.epoch / p.epochs);
}

// Seconds left: the mean of the last epochs' seconds times the epochs left; before the first
// epoch ends, the time so far scaled by the steps left.
export function eta(job, epochSeconds) {
  if (job.status !== "running") return null;
  const p = job.progress;
  const left = 1 - fraction(job);
  const recent = epochSeconds.slice(-3);
  if (recent.length) return (left * p.epochs * recent.reduce((a, b) => a + b, 0)) / recent.length;
  const done = stepsDone(p);
  if (!done || !job.started_at) return null;
  const elapsed = (Date.now() - Date.parse(job.started_at)) / 1000;
  return (elapsed * (p.epochs * p.steps - done)) / done;
}

// A canvas to draw on, read as one input of the model's image shape: the drawing is cropped to
// its ink, scaled to fit (MNIST-style: 20 of 28 pixels; small inputs such as digits' 8x8 whole)
// and centred, averaged into the model's pixels and mapped to the dataset's raw range.

import { h } from "../dom.js";

const SIZE = 280;

export class Sketch {
  constructor(dims, range, onDone) {
    this.dims = dims;
    this.range = range || [0, 1];
    this.onDone = onDone;
    this.canvas = h("canvas", { class: "sketch", width: SIZE, height: SIZE, "aria-label": "draw here" });
    this.preview = h("canvas", { class: "pixelated preview", width: dims.wid, height: dims.hgt, title: "what the model sees" });
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.clear();
    let drawing = false;
    const at = (e) => {
      const r = this.canvas.getBoundingClientRect();
      return [((e.clientX - r.left) * SIZE) / r.width, ((e.clientY - r.top) * SIZE) / r.height];
    };
    this.canvas.addEventListener("pointerdown", (e) => {
      drawing = true;
      this.canvas.setPointerCapture(e.pointerId);
      const [x, y] = at(e);
      this.ctx.beginPath();
      this.ctx.moveTo(x, y);
      this.ctx.lineTo(x + 0.1, y + 0.1);
      this.ctx.stroke();
    });
    this.canvas.addEventListener("pointermove", (e) => {
      if (!drawing) return;
      const [x, y] = at(e);
      this.ctx.lineTo(x, y);
      this.ctx.stroke();
    });
    const end = () => {
      if (!drawing) return;
      drawing = false;
      this.showPreview();
      this.onDone();
    };
    this.canvas.addEventListener("pointerup", end);
    this.canvas.addEventListener("pointercancel", end);
    this.el = h("div", { class: "sketch-box" }, this.canvas,
      h("div", { class: "sketch-side" }, h("div", { class: "muted small", text: `model input ${dims.hgt}×${dims.wid}` }), this.preview));
  }

  clear() {
    const c = this.ctx;
    c.fillStyle = "#000";
    c.fillRect(0, 0, SIZE, SIZE);
    c.strokeStyle = "#fff";
    c.lineCap = "round";
    c.lineJoin = "round";
    c.lineWidth = this.dims.hgt < 16 ? 30 : 22;
    if (this.preview) this.showPreview();
  }

  // The drawing as the model's input: C*H*W raw values, channel-major.
  values() {
    const { c, hgt, wid } = this.dims;
    const pixels = this.ctx.getImageData(0, 0, SIZE, SIZE).data;
    const ink = (x, y) => pixels[(y * SIZE + x) * 4] / 255;
    let [x0, y0, x1, y1] = [SIZE, SIZE, -1, -1];
    for (let y = 0; y < SIZE; y += 1) {
      for (let x = 0; x < SIZE; x += 1) {
        if (ink(x, y) > 0.05) {
          x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
        }
      }
    }
    const [lo, hi] = this.range;
    const plane = new Array(hgt * wid).fill(lo);
    if (x1 >= 0) {
      const content = hgt < 16 ? Math.min(hgt, wid) : Math.round((Math.min(hgt, wid) * 20) / 28);
      const scale = content / Math.max(x1 - x0 + 1, y1 - y0 + 1); // model pixels per canvas pixel
      const cx = (x0 + x1 + 1) / 2;
      const cy = (y0 + y1 + 1) / 2;
      const k = 6;
      for (let ty = 0; ty < hgt; ty += 1) {
        for (let tx = 0; tx < wid; tx += 1) {
          let sum = 0;
          for (let j = 0; j < k; j += 1) {
            for (let i = 0; i < k; i += 1) {
              const sx = Math.floor(cx + (tx + (i + 0.5) / k - wid / 2) / scale);
              const sy = Math.floor(cy + (ty + (j + 0.5) / k - hgt / 2) / scale);
              if (sx >= 0 && sy >= 0 && sx < SIZE && sy < SIZE) sum += ink(sx, sy);
            }
          }
          const v = Math.min(1, (1.3 * sum) / (k * k));
          plane[ty * wid + tx] = lo + v * (hi - lo);
        }
      }
    }
    return Array.from({ length: c }, () => plane).flat();
  }

  showPreview() {
    const { hgt, wid } = this.dims;
    const values = this.values();
    const [lo, hi] = this.range;
    const ctx = this.preview.getContext("2d");
    const image = ctx.createImageData(wid, hgt);
    for (let i = 0; i < hgt * wid; i += 1) {
      const g = Math.round((255 * (values[i] - lo)) / (hi - lo || 1));
      image.data.set([g, g, g, 255], i * 4);
    }
    ctx.putImageData(image, 0, 0);
  }
}

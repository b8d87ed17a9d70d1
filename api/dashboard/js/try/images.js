// Model outputs shown as pictures: samples shaped (C, H, W) or (H, W), in raw units.

import { h } from "../dom.js";

// (channels, height, width) of an image input shape, or null for anything else.
export function imageDims(shape) {
  if (shape.length === 3 && (shape[0] === 1 || shape[0] === 3)) return { c: shape[0], hgt: shape[1], wid: shape[2] };
  if (shape.length === 2) return { c: 1, hgt: shape[0], wid: shape[1] };
  return null;
}

// One sample as a canvas: values mapped from `range` (else the sample's own span) to 0-255.
export function sampleCanvas(sample, dims, range, label) {
  const flat = [sample].flat(Infinity).map(Number);
  let [lo, hi] = range || [Math.min(...flat), Math.max(...flat)];
  if (!(hi > lo)) hi = lo + 1;
  const canvas = h("canvas", { class: "pixelated sample", width: dims.wid, height: dims.hgt });
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(dims.wid, dims.hgt);
  const plane = dims.hgt * dims.wid;
  for (let i = 0; i < plane; i += 1) {
    for (let ch = 0; ch < 3; ch += 1) {
      const v = flat[(dims.c === 3 ? ch * plane : 0) + i];
      image.data[i * 4 + ch] = Math.round((255 * Math.min(hi, Math.max(lo, v)) - 255 * lo) / (hi - lo));
    }
    image.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  return h("figure", { class: "sample-cell" }, canvas, label != null ? h("figcaption", { text: String(label) }) : null);
}

export function imageGrid(samples, dims, range, labels = []) {
  return h("div", { class: "sample-grid" }, samples.map((s, i) => sampleCanvas(s, dims, range, labels[i])));
}

// Drawing: grey values through window/level, label maps in colour, contours, boxes, seeds.

// Labels 1..10: matplotlib's tab10, as segloc.viz.label_colors; then golden-ratio hues.
const TAB10 = [
  [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
  [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
];

function hsvToRgb(h, s, v) {
  const i = Math.floor(h * 6);
  const f = h * 6 - i;
  const p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
  const [r, g, b] = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
  return [Math.floor(r * 255), Math.floor(g * 255), Math.floor(b * 255)];
}

export const PALETTE = (() => {
  const colours = [[0, 0, 0]];
  for (let label = 1; label <= 255; label++) {
    if (label <= 10) colours.push(TAB10[label - 1]);
    else colours.push(hsvToRgb(((label - 11) * 0.618033988749895) % 1, 0.75, 0.95));
  }
  return colours;
})();

export function cssColour(label) {
  const [r, g, b] = PALETTE[label & 255];
  return `rgb(${r}, ${g}, ${b})`;
}

// Grey (or RGB) slice -> canvas pixels, through window (width) and level (centre).
export function drawImage(canvas, slice, windowWidth, level) {
  const { rows, cols, data, dtype } = slice;
  if (canvas.width !== cols || canvas.height !== rows) {
    canvas.width = cols;
    canvas.height = rows;
  }
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(cols, rows);
  const px = out.data;
  const n = rows * cols;
  if (dtype === "rgb8") {
    for (let i = 0, j = 0; i < n; i++, j += 3) {
      px[4 * i] = data[j];
      px[4 * i + 1] = data[j + 1];
      px[4 * i + 2] = data[j + 2];
      px[4 * i + 3] = 255;
    }
  } else {
    const low = level - windowWidth / 2;
    const scale = 255 / Math.max(windowWidth, 1e-12);
    for (let i = 0; i < n; i++) {
      let g = (data[i] - low) * scale;
      g = g < 0 ? 0 : g > 255 ? 255 : g;
      px[4 * i] = px[4 * i + 1] = px[4 * i + 2] = g;
      px[4 * i + 3] = 255;
    }
  }
  ctx.putImageData(out, 0, 0);
}

// Label map -> opaque label colours, transparent background (the canvas' CSS opacity blends
// it); opaque pixels read back exactly, so the page's mask can be checked against the server's.
export function drawLabels(canvas, rows, cols, labels) {
  if (canvas.width !== cols || canvas.height !== rows) {
    canvas.width = cols;
    canvas.height = rows;
  }
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(cols, rows);
  const px = out.data;
  for (let i = 0; i < rows * cols; i++) {
    const label = labels[i];
    if (label === 0) continue;
    const [r, g, b] = PALETTE[label];
    px[4 * i] = r;
    px[4 * i + 1] = g;
    px[4 * i + 2] = b;
    px[4 * i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

// Outlines: labelled pixels with a 4-neighbour of another label (or the border).
export function drawContours(canvas, rows, cols, labels) {
  if (canvas.width !== cols || canvas.height !== rows) {
    canvas.width = cols;
    canvas.height = rows;
  }
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(cols, rows);
  const px = out.data;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const label = labels[i];
      if (label === 0) continue;
      const edge =
        r === 0 || c === 0 || r === rows - 1 || c === cols - 1 ||
        labels[i - 1] !== label || labels[i + 1] !== label ||
        labels[i - cols] !== label || labels[i + cols] !== label;
      if (!edge) continue;
      const [red, green, blue] = PALETTE[label];
      // lighter than the fill, so the outline shows on top of it
      px[4 * i] = (red + 255) >> 1;
      px[4 * i + 1] = (green + 255) >> 1;
      px[4 * i + 2] = (blue + 255) >> 1;
      px[4 * i + 3] = 255;
    }
  }
  ctx.putImageData(out, 0, 0);
}

// A region's box on the shown slice, in slice pixels {top, left, bottom, right}, or null.
// Boxes are segloc's: [x0, y0, x1, y1] or [x0, y0, z0, x1, y1, z1], x = col, y = row, z = slice.
export function boxOnSlice(box, ndim, axis, index) {
  if (ndim === 2) return { top: box[1], left: box[0], bottom: box[3], right: box[2] };
  const [x0, y0, z0, x1, y1, z1] = box;
  if (axis === 2) {
    if (index < z0 || index >= z1) return null;
    return { top: y0, left: x0, bottom: y1, right: x1 };
  }
  if (axis === 0) {
    if (index < y0 || index >= y1) return null;
    return { top: x0, left: z0, bottom: x1, right: z1 }; // shown: rows = columns, cols = slices
  }
  if (index < x0 || index >= x1) return null;
  return { top: y0, left: z0, bottom: y1, right: z1 }; // shown: rows = rows, cols = slices
}

// Boxes with their numbers, seeds and the brush path, on the display-resolution canvas.
export function drawOverlay(canvas, view, things) {
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const sx = canvas.width / view.cols;
  const sy = canvas.height / view.rows;
  ctx.lineWidth = 1.5;
  ctx.font = "12px sans-serif";
  ctx.textBaseline = "bottom";
  for (const region of things.regions || []) {
    const b = boxOnSlice(region.box, view.ndim, view.axis, view.index);
    if (!b) continue;
    ctx.strokeStyle = cssColour(region.class);
    ctx.strokeRect(b.left * sx, b.top * sy, (b.right - b.left) * sx, (b.bottom - b.top) * sy);
    ctx.fillStyle = "#fff";
    ctx.fillText(String(region.id), b.left * sx + 2, b.top * sy);
  }
  for (const seed of things.seeds || []) {
    const p = seed.onSlice;
    if (!p) continue;
    ctx.beginPath();
    ctx.arc((p[1] + 0.5) * sx, (p[0] + 0.5) * sy, 4, 0, 2 * Math.PI);
    ctx.fillStyle = cssColour(seed.label);
    ctx.fill();
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  if (things.stroke && things.stroke.points.length) {
    ctx.strokeStyle = things.stroke.label ? cssColour(things.stroke.label) : "#fff";
    ctx.globalAlpha = 0.6;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = 2 * things.stroke.radius * sx;
    ctx.beginPath();
    const [r0, c0] = things.stroke.points[0];
    ctx.moveTo((c0 + 0.5) * sx, (r0 + 0.5) * sy);
    for (const [r, c] of things.stroke.points) ctx.lineTo((c + 0.5) * sx, (r + 0.5) * sy);
    if (things.stroke.points.length === 1) ctx.lineTo((c0 + 0.51) * sx, (r0 + 0.5) * sy);
    ctx.stroke();
    ctx.globalAlpha = 1;
  }
  if (things.flash) {
    const { rows, cols, data } = things.flash;
    ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        if (data[r * cols + c]) ctx.fillRect(c * sx, r * sy, Math.ceil(sx), Math.ceil(sy));
      }
    }
  }
}

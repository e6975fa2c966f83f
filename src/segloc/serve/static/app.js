// The page: state, controls and pointer handling. Drawing is in render.js, requests in api.js.
import { api } from "./api.js";
import { cssColour, drawContours, drawImage, drawLabels, drawOverlay } from "./render.js";

const $ = (id) => document.getElementById(id);
const MAX_SIDE = 720; // display size of the longer side, in CSS pixels
const PRESETS = {
  brain: [100, 50],
  abdomen: [350, 40],
  bone: [1000, 400],
  lung: [1400, -500],
};

const state = {
  session: null, // GET /api/sessions/{id}
  axis: 2,
  index: 0,
  image: null, // shown slice {data, rows, cols, dtype}
  mask: null, // shown mask slice {data, rows, cols, version}
  maskInfo: null, // last MaskInfo from the server
  win: 1,
  lev: 0,
  seeds: [], // {index: [row, col(, slice)], label}
  regions: [],
  preview: null, // threshold preview value, while the slider moves
  stroke: null, // {points, radius, label} while the brush is down
  flash: null,
  pending: 0, // requests in flight
};

// What the browser tests and benchmarks read: latencies in milliseconds.
const metrics = { clicks: [], strokes: [], frames: [] };
window.segloc = { state, metrics, showSlice, ready: false };

// ------------------------------------------------------------------ status and errors

function setStatus(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

async function busy(action) {
  state.pending++;
  try {
    return await action();
  } catch (err) {
    setStatus(err.message || String(err), true);
    return undefined;
  } finally {
    state.pending--;
  }
}

// ------------------------------------------------------------------ geometry

function sliceShape() {
  const shape = state.session.shape;
  if (state.session.ndim === 2) return [shape[0], shape[1]];
  return shape.filter((_, a) => a !== state.axis);
}

function sliceSpacing() {
  const sp = state.session.spacing;
  if (state.session.ndim === 2) return [sp[0], sp[1]];
  return sp.filter((_, a) => a !== state.axis);
}

function layout() {
  const [rows, cols] = sliceShape();
  const [sr, sc] = sliceSpacing();
  const scale = Math.min(MAX_SIDE / (cols * sc), MAX_SIDE / (rows * sr));
  const width = Math.round(cols * sc * scale);
  const height = Math.round(rows * sr * scale);
  for (const id of ["image", "mask", "contours", "overlay"]) {
    const canvas = $(id);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
  }
  const overlay = $("overlay");
  overlay.width = Math.round(width * devicePixelRatio);
  overlay.height = Math.round(height * devicePixelRatio);
}

// Pointer position -> slice coordinates (row, col) as floats, pixel centres on integers.
function slicePoint(event) {
  const canvas = $("overlay");
  const rect = canvas.getBoundingClientRect();
  const [rows, cols] = sliceShape();
  const row = ((event.clientY - rect.top) / rect.height) * rows - 0.5;
  const col = ((event.clientX - rect.left) / rect.width) * cols - 0.5;
  return [row, col];
}

function pixelOf([row, col]) {
  const [rows, cols] = sliceShape();
  const r = Math.min(rows - 1, Math.max(0, Math.round(row)));
  const c = Math.min(cols - 1, Math.max(0, Math.round(col)));
  return [r, c];
}

// Slice pixel -> array index of the image: (row, col) or (row, col, slice).
function arrayIndex([r, c]) {
  if (state.session.ndim === 2) return [r, c];
  if (state.axis === 2) return [r, c, state.index];
  if (state.axis === 1) return [r, state.index, c];
  return [state.index, r, c];
}

function onSlice(index) {
  if (state.session.ndim === 2) return index;
  if (index[state.axis] !== state.index) return null;
  return index.filter((_, a) => a !== state.axis);
}

// ------------------------------------------------------------------ drawing

function drawImageLayer() {
  if (state.image) drawImage($("image"), state.image, state.win, state.lev);
}

function drawMaskLayers() {
  if (!state.mask) return;
  const { rows, cols } = state.mask;
  let labels = state.mask.data;
  if (state.preview !== null && state.image && state.image.dtype !== "rgb8") {
    labels = new Uint8Array(rows * cols);
    const data = state.image.data;
    for (let i = 0; i < labels.length; i++) labels[i] = data[i] > state.preview ? 1 : 0;
  }
  drawLabels($("mask"), rows, cols, $("show-mask").checked ? labels : new Uint8Array(rows * cols));
  drawContours(
    $("contours"), rows, cols, $("show-contours").checked ? labels : new Uint8Array(rows * cols),
  );
}

function drawOverlayLayer() {
  if (!state.session) return;
  const [rows, cols] = sliceShape();
  drawOverlay(
    $("overlay"),
    { rows, cols, ndim: state.session.ndim, axis: state.axis, index: state.index },
    {
      regions: $("show-boxes").checked ? state.regions : [],
      seeds: state.seeds.map((s) => ({ label: s.label, onSlice: onSlice(s.index) })),
      stroke: state.stroke,
      flash: state.flash,
    },
  );
}

function drawAll() {
  drawImageLayer();
  drawMaskLayers();
  drawOverlayLayer();
  const n = state.session.ndim === 3 ? state.session.shape[state.axis] : 1;
  $("slice-label").textContent = `slice ${state.index} / ${n - 1}`;
}

// ------------------------------------------------------------------ slices

let wanted = null; // the slice to fetch next, if any
let target = null; // the last slice asked for: where the next wheel step starts
let loading = null;

// Show slice `index` of the current axis; resolves once the last wanted slice is drawn.
// While a slice is on its way, newer wishes replace older ones: only the latest travels.
function showSlice(index) {
  const n = state.session.ndim === 3 ? state.session.shape[state.axis] : 1;
  wanted = target = Math.min(n - 1, Math.max(0, index));
  $("slice").value = wanted;
  if (!loading) loading = pump().finally(() => (loading = null));
  return loading;
}

async function pump() {
  while (wanted !== null) {
    const index = wanted;
    const { axis } = state;
    const sid = state.session.id;
    wanted = null;
    const [image, mask] = await busy(() =>
      Promise.all([api.slice(sid, axis, index), api.maskSlice(sid, axis, index)]),
    ) ?? [null, null];
    if (!image || !state.session || state.session.id !== sid || state.axis !== axis) continue;
    state.index = index;
    state.image = image;
    state.mask = mask;
    state.flash = null;
    drawAll();
    metrics.frames.push(performance.now());
  }
}

// After the server changed the mask: fetch the shown slice of it and redraw.
async function refreshMask(info) {
  if (!info) return;
  state.maskInfo = info;
  $("undo").disabled = info.undo === 0;
  $("redo").disabled = info.redo === 0;
  const sid = state.session.id;
  const mask = await busy(() => api.maskSlice(sid, state.axis, state.index));
  if (!mask || state.session.id !== sid) return;
  if (state.mask && state.mask.version > mask.version) return; // a newer one is drawn
  state.mask = mask;
  state.preview = null;
  drawMaskLayers();
  drawOverlayLayer();
  const counts = Object.entries(info.labels).map(([l, n]) => `${l}: ${n}`).join(", ");
  setStatus(`mask v${info.version}${counts ? ` — ${counts} px` : " — empty"}`);
  refreshRegions();
  if (state.session.truth) refreshScores();
}

// ------------------------------------------------------------------ opening

async function openSession(info) {
  state.session = info;
  state.seeds = [];
  state.regions = [];
  state.preview = null;
  state.axis = 2;
  state.index = info.ndim === 3 ? Math.floor(info.shape[2] / 2) : 0;
  state.image = state.mask = null;
  $("axis").value = "2";
  $("axis").disabled = info.ndim !== 3;
  $("file-name").textContent = `${info.name} — ${info.shape.join("×")} ${info.dtype}`;
  $("slice").max = info.ndim === 3 ? info.shape[2] - 1 : 0;
  $("size-head").textContent = `size (${info.unit}${info.ndim === 2 ? "²" : "³"})`;
  $("scores").querySelector("tbody").innerHTML = "";
  $("panel").hidden = $("download-panel").hidden = true;
  setPreset(info.colour ? "full" : "auto");
  const span = info.max - info.min || 1;
  const threshold = $("threshold");
  threshold.min = info.min;
  threshold.max = info.max;
  threshold.step = info.dtype.includes("int") ? 1 : span / 1000;
  const tolerance = $("tolerance");
  tolerance.max = span / 2;
  tolerance.step = info.dtype.includes("int") ? 1 : span / 1000;
  tolerance.value = Math.max(Number(tolerance.step), (info.high - info.low) / 8);
  $("tolerance-value").textContent = Number(tolerance.value).toPrecision(4);
  updateSeedCount();
  updateDownloads();
  layout();
  await showSlice(state.index);
  refreshMask(info.mask);
  refreshThresholds();
  refreshModels();
}

async function openFile(file) {
  setStatus(`uploading ${file.name}…`);
  const info = await busy(() => api.upload(file));
  if (info) await openSession(info);
}

async function openData(name) {
  setStatus(`opening ${name}…`);
  const info = await busy(() => api.open(name));
  if (info) await openSession(info);
}

async function listData() {
  const listing = await busy(() => api.data());
  if (!listing) return;
  for (const select of [$("data-list"), $("truth-data")]) {
    for (const f of listing.files) {
      const option = document.createElement("option");
      option.value = option.textContent = f.name;
      select.append(option);
    }
  }
}

// ------------------------------------------------------------------ window / level

function setPreset(name) {
  const info = state.session;
  if (!info) return;
  if (PRESETS[name]) [state.win, state.lev] = PRESETS[name];
  else if (name === "full") [state.win, state.lev] = [info.max - info.min || 1, (info.max + info.min) / 2];
  else if (name === "slice" && state.image && state.image.dtype !== "rgb8") {
    const values = Float64Array.from(state.image.data).sort();
    const lo = values[Math.floor(0.005 * (values.length - 1))];
    const hi = values[Math.ceil(0.995 * (values.length - 1))];
    [state.win, state.lev] = [hi - lo || 1, (hi + lo) / 2];
  } else [state.win, state.lev] = [info.high - info.low || 1, (info.high + info.low) / 2];
  $("preset").value = name;
  showWindow();
}

function showWindow() {
  $("win").value = Number(state.win.toPrecision(5));
  $("lev").value = Number(state.lev.toPrecision(5));
  drawImageLayer();
}

// ------------------------------------------------------------------ methods

function method() {
  return $("method").value;
}

function updateSeedCount() {
  const n = state.seeds.length;
  $("seed-count").textContent = `${n} seed${n === 1 ? "" : "s"}`;
}

async function grow(t0) {
  if (!state.seeds.length) return;
  const body = {
    method: "region-grow",
    seeds: state.seeds.map((s) => ({ index: s.index, label: s.label })),
    tolerance: Number($("tolerance").value),
  };
  const info = await busy(() => api.segment(state.session.id, body));
  await refreshMask(info);
  if (info && t0 !== undefined) metrics.clicks.push(performance.now() - t0);
}

async function applyMethod(body) {
  setStatus(`${body.method}…`);
  const info = await busy(() => api.segment(state.session.id, body));
  await refreshMask(info);
}

async function refreshThresholds() {
  const sid = state.session.id;
  const t = await busy(() => api.thresholds(sid, Number($("classes").value)));
  if (!t || state.session.id !== sid) return;
  $("otsu-value").textContent = Number(t.otsu.toPrecision(6));
  $("otsu-value").dataset.value = t.otsu;
  $("multiotsu-value").textContent = t.multiotsu.map((v) => Number(v.toPrecision(5))).join(", ");
  if (!$("threshold").dataset.touched) {
    $("threshold").value = t.otsu;
    $("threshold-value").textContent = Number(t.otsu.toPrecision(6));
  }
}

async function refreshModels() {
  const listing = await busy(() => api.models());
  const select = $("model-list");
  select.innerHTML = "";
  for (const m of listing ? listing.models : []) {
    if (m.error || (m.dims && m.dims !== state.session.ndim)) continue;
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = `${m.name} (${m.model}, ${m.num_classes} classes)`;
    select.append(option);
  }
  $("model-run").disabled = select.options.length === 0;
}

async function runModel() {
  const name = $("model-list").value;
  if (!name) return;
  const progress = $("model-progress");
  progress.value = 0;
  setStatus(`predicting with ${name}…`);
  let job = await busy(() => api.predict(state.session.id, name));
  while (job && (job.state === "queued" || job.state === "running")) {
    progress.value = job.progress;
    await new Promise((resolve) => setTimeout(resolve, 150));
    job = await busy(() => api.job(job.id));
  }
  if (!job) return;
  if (job.state === "error") {
    setStatus(`prediction failed: ${job.error}`, true);
    return;
  }
  progress.value = 1;
  await refreshMask(job.mask);
}

// ------------------------------------------------------------------ objects and scores

async function refreshRegions() {
  const sid = state.session.id;
  const table = await busy(() => api.regions(sid));
  if (!table || state.session.id !== sid) return;
  if (state.maskInfo && table.version < state.maskInfo.version) return; // stale
  state.regions = table.regions;
  $("region-total").textContent = `(${table.total})`;
  const body = $("regions").querySelector("tbody");
  body.innerHTML = "";
  for (const region of table.regions.slice(0, 500)) {
    const row = document.createElement("tr");
    row.dataset.id = region.id;
    const cells = [
      region.id,
      region.class,
      region.pixels,
      region.size >= 1000 ? Math.round(region.size) : Number(region.size.toPrecision(4)),
      region.box.map((v) => Math.round(v)).join(","),
      Number(region.mean.toPrecision(4)),
    ];
    for (const value of cells) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.append(cell);
    }
    row.firstChild.style.color = cssColour(region.class);
    row.addEventListener("click", () => flashRegion(region, row));
    body.append(row);
  }
  drawOverlayLayer();
}

async function flashRegion(region, row) {
  for (const other of $("regions").querySelectorAll("tr.selected")) other.classList.remove("selected");
  row.classList.add("selected");
  if (state.session.ndim === 3) {
    const index = Math.round(region.centre[state.axis]);
    if (index !== state.index) await showSlice(index);
  }
  const sid = state.session.id;
  const piece = await busy(() => api.regionSlice(sid, region.id, state.axis, state.index));
  if (!piece) return;
  for (let k = 0; k < 6; k++) {
    state.flash = k % 2 === 0 ? piece : null;
    drawOverlayLayer();
    await new Promise((resolve) => setTimeout(resolve, 160));
  }
  state.flash = null;
  drawOverlayLayer();
}

function renderScores(scores) {
  const body = $("scores").querySelector("tbody");
  body.innerHTML = "";
  const fmt = (v) => (v === null ? "—" : v === "inf" ? "∞" : Number(v).toFixed(3));
  for (const row of scores.classes) {
    const tr = document.createElement("tr");
    for (const value of [row.class, fmt(row.dice), fmt(row.iou), fmt(row.hd95)]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    body.append(tr);
  }
  const url = api.panelUrl(state.session.id, state.axis);
  $("panel").src = url;
  $("panel").hidden = false;
  $("download-panel").href = url;
  $("download-panel").hidden = false;
}

let scoring = null;
async function refreshScores() {
  if (scoring) return;
  scoring = busy(() => api.scores(state.session.id));
  const scores = await scoring;
  scoring = null;
  if (scores) renderScores(scores);
}

async function setTruth(request) {
  setStatus("scoring…");
  const scores = await busy(request);
  if (!scores) return;
  state.session.truth = true;
  renderScores(scores);
  setStatus(`mean Dice ${scores.mean_dice === null ? "—" : scores.mean_dice.toFixed(4)}`);
}

function updateDownloads() {
  const sid = state.session.id;
  $("download-mask").href = api.maskUrl(sid, $("mask-format").value);
  $("download-boxes").href = api.boxesUrl(sid);
}

// ------------------------------------------------------------------ pointer

function tool() {
  return document.querySelector('input[name="tool"]:checked').value;
}

let leveling = null; // right-drag window/level

function onPointerDown(event) {
  if (!state.session || !state.image) return;
  const overlay = $("overlay");
  overlay.focus();
  if (event.button === 2 || (event.button === 0 && event.altKey)) {
    const span = (state.session.max - state.session.min || 1) / 512;
    leveling = { x: event.clientX, y: event.clientY, win: state.win, lev: state.lev, span };
    overlay.setPointerCapture(event.pointerId);
    return;
  }
  if (event.button !== 0) return;
  const point = slicePoint(event);
  const t0 = performance.now();
  const current = tool();
  if (current === "brush" || current === "eraser") {
    const label = current === "eraser" ? 0 : Number($("brush-label").value);
    state.stroke = { points: [point], radius: Number($("brush-size").value) / 2, label, t0 };
    overlay.setPointerCapture(event.pointerId);
    drawOverlayLayer();
  } else if (current === "fill") {
    const [r, c] = pixelOf(point);
    busy(() => api.fill(state.session.id, { axis: state.axis, index: state.index, point: [r, c] }))
      .then(refreshMask);
  } else {
    addSeed(arrayIndex(pixelOf(point)), event.shiftKey, t0);
  }
}

function addSeed(index, another, t0) {
  if (state.seeds.some((s) => s.index.every((v, a) => v === index[a]))) return;
  const top = Math.max(0, ...state.seeds.map((s) => s.label));
  const label = another ? Math.max(2, top + 1) : 1;
  state.seeds.push({ index, label });
  if (method() !== "region-grow") {
    $("method").value = "region-grow";
    showMethod();
  }
  updateSeedCount();
  drawOverlayLayer();
  grow(t0);
}

function onPointerMove(event) {
  if (!state.session || !state.image) return;
  const [r, c] = pixelOf(slicePoint(event));
  const index = arrayIndex([r, c]);
  const offset = state.image.dtype === "rgb8" ? 3 * (r * state.image.cols + c) : r * state.image.cols + c;
  $("cursor").textContent = `(${index.join(", ")}) = ${state.image.data[offset]}`;
  if (leveling) {
    state.win = Math.max(1e-6, leveling.win + (event.clientX - leveling.x) * leveling.span);
    state.lev = leveling.lev + (event.clientY - leveling.y) * leveling.span;
    showWindow();
  } else if (state.stroke) {
    const point = slicePoint(event);
    const last = state.stroke.points[state.stroke.points.length - 1];
    if (Math.hypot(point[0] - last[0], point[1] - last[1]) >= 0.5) {
      state.stroke.points.push(point);
      drawOverlayLayer();
    }
  }
}

async function onPointerUp() {
  if (leveling) {
    leveling = null;
    return;
  }
  if (!state.stroke) return;
  const stroke = state.stroke;
  const body = {
    axis: state.axis,
    index: state.index,
    points: stroke.points.map(([r, c]) => [Math.round(r * 100) / 100, Math.round(c * 100) / 100]),
    radius: stroke.radius,
    label: stroke.label,
  };
  const sent = performance.now();
  const info = await busy(() => api.stroke(state.session.id, body));
  const answered = performance.now();
  state.stroke = null;
  await refreshMask(info);
  if (info) {
    metrics.strokes.push({
      points: body.points.length,
      requestMs: answered - sent,
      totalMs: performance.now() - sent,
    });
  }
  drawOverlayLayer();
}

function onWheel(event) {
  if (!state.session || state.session.ndim !== 3) return;
  event.preventDefault();
  showSlice((target ?? state.index) + (event.deltaY > 0 ? 1 : -1));
}

// ------------------------------------------------------------------ wiring

function showMethod() {
  for (const el of document.querySelectorAll("[data-method]")) {
    el.hidden = el.dataset.method !== method();
  }
  if (method() !== "threshold" && state.preview !== null) {
    state.preview = null;
    drawMaskLayers();
  }
}

function wire() {
  $("file").addEventListener("change", (e) => e.target.files[0] && openFile(e.target.files[0]));
  $("data-open").addEventListener("click", () => $("data-list").value && openData($("data-list").value));
  $("axis").addEventListener("change", () => {
    state.axis = Number($("axis").value);
    const n = state.session.shape[state.axis];
    $("slice").max = n - 1;
    state.index = Math.floor(n / 2);
    layout();
    showSlice(state.index);
  });
  $("slice").addEventListener("input", () => state.session && showSlice(Number($("slice").value)));
  $("preset").addEventListener("change", () => setPreset($("preset").value));
  for (const id of ["win", "lev"]) {
    $(id).addEventListener("change", () => {
      state.win = Math.max(1e-6, Number($("win").value));
      state.lev = Number($("lev").value);
      drawImageLayer();
    });
  }
  for (const id of ["show-mask", "show-contours"]) $(id).addEventListener("change", drawMaskLayers);
  $("show-boxes").addEventListener("change", drawOverlayLayer);
  $("method").addEventListener("change", showMethod);
  $("tolerance").addEventListener("input", () => {
    $("tolerance-value").textContent = Number($("tolerance").value).toPrecision(4);
  });
  $("tolerance").addEventListener("change", () => grow());
  $("seeds-clear").addEventListener("click", () => {
    state.seeds = [];
    updateSeedCount();
    drawOverlayLayer();
  });
  $("threshold").addEventListener("input", () => {
    // preview on the shown slice only, in the browser: no request
    $("threshold").dataset.touched = "1";
    state.preview = Number($("threshold").value);
    $("threshold-value").textContent = Number(state.preview.toPrecision(6));
    drawMaskLayers();
  });
  $("use-otsu").addEventListener("click", () => {
    const t = Number($("otsu-value").dataset.value);
    $("threshold").value = t;
    state.preview = t;
    $("threshold-value").textContent = Number(t.toPrecision(6));
    drawMaskLayers();
  });
  $("threshold-apply").addEventListener("click", () =>
    applyMethod({ method: "threshold", value: Number($("threshold").value) }),
  );
  $("classes").addEventListener("change", refreshThresholds);
  $("multiotsu-apply").addEventListener("click", () =>
    applyMethod({ method: "multiotsu", classes: Number($("classes").value) }),
  );
  $("kmeans-apply").addEventListener("click", () =>
    applyMethod({ method: "kmeans", k: Number($("k").value) }),
  );
  $("model-run").addEventListener("click", runModel);
  $("brush-size").addEventListener("input", () => {
    $("brush-size-value").textContent = $("brush-size").value;
  });
  const change = (request) => () => state.session && busy(request).then(refreshMask);
  $("undo").addEventListener("click", change(() => api.undo(state.session.id)));
  $("redo").addEventListener("click", change(() => api.redo(state.session.id)));
  $("clear").addEventListener("click", change(() => api.clear(state.session.id)));
  document.addEventListener("keydown", (e) => {
    if (!(e.ctrlKey || e.metaKey) || !state.session) return;
    if (e.key === "z") $("undo").click();
    else if (e.key === "y") $("redo").click();
    else return;
    e.preventDefault();
  });
  $("truth-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file && state.session) setTruth(() => api.truth(state.session.id, file));
  });
  $("truth-data").addEventListener("change", () => {
    const name = $("truth-data").value;
    if (name && state.session) setTruth(() => api.truthFromData(state.session.id, name));
  });
  $("mask-format").addEventListener("change", () => state.session && updateDownloads());
  const overlay = $("overlay");
  overlay.addEventListener("pointerdown", onPointerDown);
  overlay.addEventListener("pointermove", onPointerMove);
  overlay.addEventListener("pointerup", onPointerUp);
  overlay.addEventListener("pointercancel", onPointerUp);
  overlay.addEventListener("contextmenu", (e) => e.preventDefault());
  overlay.addEventListener("wheel", onWheel, { passive: false });
}

wire();
showMethod();
listData().then(() => {
  window.segloc.ready = true;
  setStatus("open an image or a volume");
});

// The HTTP API, as the page uses it. Every call goes to the server that served the page.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function check(response) {
  if (response.ok) return response;
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.detail) detail = String(body.detail);
  } catch (_) {
    // not JSON: keep the status line
  }
  throw new ApiError(response.status, detail);
}

export async function getJson(url) {
  return (await check(await fetch(url))).json();
}

export async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  return (await check(response)).json();
}

export async function postFile(url, file) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: file,
  });
  return (await check(response)).json();
}

const TYPED = {
  uint8: Uint8Array,
  int8: Int8Array,
  uint16: Uint16Array,
  int16: Int16Array,
  uint32: Uint32Array,
  int32: Int32Array,
  float32: Float32Array,
  rgb8: Uint8Array,
};

// A slice as raw little-endian bytes: {data (typed array), rows, cols, dtype, version}.
export async function getRaw(url) {
  const response = await check(await fetch(url));
  const [rows, cols] = response.headers.get("X-Shape").split(",").map(Number);
  const dtype = response.headers.get("X-Dtype");
  const buffer = await response.arrayBuffer();
  const version = response.headers.get("X-Mask-Version");
  return {
    data: new TYPED[dtype](buffer),
    rows,
    cols,
    dtype,
    version: version === null ? null : Number(version),
  };
}

export const api = {
  health: () => getJson("/api/health"),
  data: () => getJson("/api/data"),
  models: () => getJson("/api/models"),
  upload: (file) => postFile(`/api/sessions?name=${encodeURIComponent(file.name || "upload")}`, file),
  open: (name) => postJson("/api/sessions/open", { name }),
  info: (sid) => getJson(`/api/sessions/${sid}`),
  slice: (sid, axis, index) => getRaw(`/api/sessions/${sid}/slice?axis=${axis}&index=${index}`),
  maskSlice: (sid, axis, index) =>
    getRaw(`/api/sessions/${sid}/mask/slice?axis=${axis}&index=${index}`),
  thresholds: (sid, classes) => getJson(`/api/sessions/${sid}/thresholds?classes=${classes}`),
  segment: (sid, body) => postJson(`/api/sessions/${sid}/segment`, body),
  stroke: (sid, body) => postJson(`/api/sessions/${sid}/strokes`, body),
  fill: (sid, body) => postJson(`/api/sessions/${sid}/fill`, body),
  undo: (sid) => postJson(`/api/sessions/${sid}/undo`),
  redo: (sid) => postJson(`/api/sessions/${sid}/redo`),
  clear: (sid) => postJson(`/api/sessions/${sid}/clear`),
  predict: (sid, model) => postJson(`/api/sessions/${sid}/predict`, { model }),
  job: (jid) => getJson(`/api/jobs/${jid}`),
  regions: (sid) => getJson(`/api/sessions/${sid}/regions`),
  regionSlice: (sid, rid, axis, index) =>
    getRaw(`/api/sessions/${sid}/regions/${rid}/slice?axis=${axis}&index=${index}`),
  truth: (sid, file) => postFile(`/api/sessions/${sid}/truth`, file),
  truthFromData: (sid, name) => postJson(`/api/sessions/${sid}/truth/open`, { name }),
  scores: (sid) => getJson(`/api/sessions/${sid}/scores`),
  panelUrl: (sid, axis) => `/api/sessions/${sid}/panel?axis=${axis}&t=${Date.now()}`,
  maskUrl: (sid, format) =>
    `/api/sessions/${sid}/download/mask${format ? `?format=${encodeURIComponent(format)}` : ""}`,
  boxesUrl: (sid) => `/api/sessions/${sid}/download/boxes`,
};

// ganserve web page: plain JavaScript over the public HTTP API (no build step, no dependencies).
// URLs are relative, so the page also works behind a reverse proxy under a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  models: {}, // name -> ModelInfo from GET /models
  model: null, // the selected model's name
  samples: [], // the grid: {seed, label, image, latent, el}
  selected: [], // selected samples, in click order
  latents: new Map(), // "model|seed" -> latent of the last grid that drew it (truncation included)
  busy: 0,
};

// --- API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body, text) {
    const detail = body && body.detail ? body.detail : text || "request failed";
    const code = body && body.error ? body.error : "http_error";
    super(`${status} ${code}: ${detail}`);
    this.status = status;
    this.body = body;
    this.requestId = body && body.request_id;
  }
}

async function api(path, { json, form, accept = "application/json", method } = {}) {
  const headers = { Accept: accept };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart boundary
  }
  let res;
  try {
    res = await fetch(path, { method: method || (body ? "POST" : "GET"), headers, body });
  } catch (err) {
    throw new ApiError(0, { error: "network_error", detail: `the service is unreachable (${err.message})` });
  }
  if (!res.ok) {
    const text = await res.text();
    let parsed = null;
    try {
      parsed = JSON.parse(text);
    } catch (_) {
      /* not JSON: keep the text */
    }
    if (res.status === 401) $("key-box").open = true;
    throw new ApiError(res.status, parsed, text.slice(0, 300));
  }
  if (accept.startsWith("image/")) return res.blob();
  if (accept.startsWith("text/")) return res.text();
  return res.json();
}

// Run an action with the error banner and busy state handled in one place.
async function run(button, fn) {
  hideError();
  state.busy++;
  document.body.classList.add("busy");
  if (button) button.disabled = true;
  try {
    await fn();
  } catch (err) {
    showError(err);
  } finally {
    if (button) button.disabled = false;
    if (--state.busy === 0) document.body.classList.remove("busy");
    refreshStatus();
  }
}

function showError(err) {
  const msg = err instanceof ApiError ? err.message : `error: ${err && err.message ? err.message : err}`;
  const rid = err && err.requestId ? ` (request ${err.requestId})` : "";
  $("error-text").textContent = msg + rid;
  $("error").hidden = false;
  if (!(err instanceof ApiError)) console.error(err);
}

function hideError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

// --- helpers --------------------------------------------------------------------------------

const png = (b64) => `data:image/png;base64,${b64}`;
const current = () => state.models[state.model] || null;
const conditional = () => {
  const m = current();
  return !!(m && m.kind === "conditional" && m.num_classes);
};
const labelName = (i) => {
  const m = current();
  return m && m.class_names && m.class_names[i] !== undefined ? m.class_names[i] : String(i);
};

// An <input type=number> as an integer, null when empty; a message naming the field otherwise.
function intField(id, name) {
  const raw = $(id).value.trim();
  if (raw === "") return null;
  if (!/^-?\d+$/.test(raw)) throw new Error(`${name}: "${raw}" is not a whole number`);
  return safe(raw, name);
}

// JavaScript numbers are exact only up to 2**53 - 1; the API's seeds go to 2**63 - 1.
function safe(raw, name) {
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) {
    throw new Error(`${name}: ${raw} is beyond what this page handles exactly (2^53 - 1); use the API or the SDK`);
  }
  return n;
}

function floatField(id) {
  const raw = $(id).value.trim();
  return raw === "" ? null : Number(raw);
}

function seedList(id, name) {
  const raw = $(id).value.trim();
  if (!raw) return [];
  return raw.split(/[\s,;]+/).filter(Boolean).map((s) => {
    if (!/^\d+$/.test(s)) throw new Error(`${name}: "${s}" is not a seed (a non-negative integer)`);
    return safe(s, name);
  });
}

function randomSeed() {
  const a = new Uint32Array(1);
  crypto.getRandomValues(a);
  return a[0];
}

function img(src, alt, cls) {
  const el = document.createElement("img");
  el.src = src;
  el.alt = alt;
  if (cls) el.className = cls;
  return el;
}

// --- models and status ----------------------------------------------------------------------

async function loadModels() {
  const list = await api("models");
  state.models = {};
  const sel = $("model");
  sel.replaceChildren();
  for (const m of list.models) {
    state.models[m.name] = m;
    const opt = new Option(m.status === "ready" ? m.name : `${m.name} (failed)`, m.name);
    opt.disabled = m.status !== "ready";
    sel.add(opt);
  }
  const ready = list.models.filter((m) => m.status === "ready").map((m) => m.name);
  state.model = ready.includes(list.default) ? list.default : ready[0] || null;
  if (state.model) sel.value = state.model;
  if (!state.model) throw new ApiError(503, { error: "no_models", detail: "no model is ready" });
  onModelChange();
}

function onModelChange() {
  state.model = $("model").value;
  const m = current();
  const cond = conditional();
  document.body.classList.toggle("conditional", cond);
  // Label pickers: "mixed" for the grid, a label per walk end and for the arithmetic output.
  const fill = (sel, withMixed) => {
    sel.replaceChildren();
    if (withMixed) sel.add(new Option("mixed", ""));
    if (cond) m.class_names.slice(0, m.num_classes).forEach((n, i) => sel.add(new Option(n, String(i))));
    sel.disabled = !cond;
  };
  fill($("label"), true);
  for (const id of ["walk-label-a", "walk-label-b", "arith-label"]) fill($(id), false);
  if (cond && m.num_classes > 8) {
    $("walk-label-a").value = "3";
    $("walk-label-b").value = "8";
  } else if (cond) {
    $("walk-label-b").value = String(m.num_classes - 1);
  }
  clearGrid();
  refreshStatus();
}

// Prometheus text -> {metric: [{labels, value}]} (only what the status strip needs).
function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const kv of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2];
    (out[m[1]] ||= []).push({ labels, value: Number(m[3]) });
  }
  return out;
}

function metricFor(metrics, name, model) {
  const rows = metrics[name] || [];
  const row = rows.find((r) => r.labels.model === model);
  return row ? row.value : null;
}

let statusTimer = null;
async function refreshStatus() {
  clearTimeout(statusTimer);
  statusTimer = setTimeout(refreshStatus, 5000);
  const m = current();
  if (!m) return;
  $("st-model").textContent = m.name + (m.version ? ` ${m.version}` : "");
  $("st-kind").textContent = m.kind || "?";
  $("st-provider").textContent = (m.provider || "?").replace("ExecutionProvider", "");
  try {
    const [text, ready] = await Promise.all([
      api("metrics", { accept: "text/plain" }),
      fetch("readyz").then((r) => r.json()),
    ]);
    const metrics = parseMetrics(text);
    const depth = metricFor(metrics, "ganserve_queue_depth", m.name);
    const sum = metricFor(metrics, "ganserve_batch_size_sum", m.name);
    const count = metricFor(metrics, "ganserve_batch_size_count", m.name);
    const max = m.batcher ? m.batcher.max_batch_size : "?";
    $("st-queue").textContent = depth === null ? "0" : String(depth);
    $("st-batch").textContent = count ? `${(sum / count).toFixed(1)} avg / ${max} max` : `– / ${max} max`;
    $("st-batch").title = count ? `${count} inference calls, ${sum} rows` : "no inference calls yet";
    $("st-ready").textContent = ready.ready ? "yes" : "no";
  } catch (_) {
    $("st-ready").textContent = "unreachable";
  }
}

// --- generate -------------------------------------------------------------------------------

function clearGrid() {
  state.samples = [];
  state.selected = [];
  $("grid").replaceChildren();
  $("gen-info").textContent = "";
  updateSelection();
}

async function generate(newSeed) {
  if (newSeed) $("seed").value = String(randomSeed());
  const req = { model: state.model, return_latents: true };
  const n = intField("count", "count");
  req.n = n === null ? 16 : n;
  // The page picks random seeds itself: the service's own may exceed 2**53 (inexact here).
  const seed = intField("seed", "seed");
  req.seed = seed === null ? randomSeed() : seed;
  const trunc = floatField("truncation");
  if (trunc !== null) req.truncation = trunc;
  const label = $("label").value;
  if (conditional() && label !== "") req.labels = Number(label);
  const res = await api("generate", { json: req });
  $("seed").value = String(res.seed);
  clearGrid();
  const grid = $("grid");
  res.images.forEach((s, i) => {
    const text = s.label === null || s.label === undefined ? `seed ${s.seed}` : `seed ${s.seed} · label ${labelName(s.label)}`;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "sample";
    b.title = text;
    b.setAttribute("aria-pressed", "false");
    b.setAttribute("aria-label", `sample ${i + 1}: ${text}`);
    b.dataset.seed = String(s.seed);
    if (s.label !== null && s.label !== undefined) b.dataset.label = String(s.label);
    const cap = document.createElement("span");
    cap.className = "caption";
    cap.textContent = text;
    b.append(img(png(s.image), "", "px"), cap);
    const sample = { seed: s.seed, label: s.label, image: s.image, el: b };
    b.addEventListener("click", () => toggleSelect(sample));
    state.samples.push(sample);
    if (s.latent) state.latents.set(`${state.model}|${s.seed}`, s.latent);
    grid.append(b);
  });
  $("gen-info").textContent = `${res.images.length} samples from ${res.model}, seeds ${res.seed}–${res.seed + res.images.length - 1}${trunc !== null ? `, truncation ${trunc}` : ""}.`;
}

function toggleSelect(sample) {
  const i = state.selected.indexOf(sample);
  if (i >= 0) state.selected.splice(i, 1);
  else state.selected.push(sample);
  updateSelection();
}

function updateSelection() {
  for (const s of state.samples) {
    const k = state.selected.indexOf(s);
    s.el.setAttribute("aria-pressed", k >= 0 ? "true" : "false");
    s.el.dataset.order = k >= 0 ? String(k + 1) : "";
  }
  const n = state.selected.length;
  $("sel-count").textContent = `${n} selected${n ? `: seeds ${state.selected.map((s) => s.seed).join(", ")}` : ""}.`;
}

// --- walk -----------------------------------------------------------------------------------

function useSelectedForWalk() {
  const [a, b] = state.selected;
  if (!a || !b) throw new Error("select two samples in the grid first (click them, or Enter/Space)");
  $("walk-seed-a").value = String(a.seed);
  $("walk-seed-b").value = String(b.seed);
  if (conditional()) {
    if (a.label !== null && a.label !== undefined) $("walk-label-a").value = String(a.label);
    if (b.label !== null && b.label !== undefined) $("walk-label-b").value = String(b.label);
  }
}

async function walk() {
  const keyframes = ["a", "b"].map((end) => {
    const seed = intField(`walk-seed-${end}`, end === "a" ? "from seed" : "to seed");
    if (seed === null) throw new Error(`${end === "a" ? "from" : "to"} seed: required`);
    const kf = { seed };
    if (conditional()) kf.label = Number($(`walk-label-${end}`).value);
    return kf;
  });
  const steps = intField("walk-steps", "steps");
  const req = {
    model: state.model,
    keyframes,
    steps: steps === null ? 10 : steps,
    method: document.querySelector('input[name="method"]:checked').value,
  };
  const trunc = floatField("truncation");
  if (trunc !== null) req.truncation = trunc;
  const [res, gif] = await Promise.all([
    api("interpolate", { json: req }),
    api("interpolate", { json: { ...req, duration_ms: 90 }, accept: "image/gif" }),
  ]);
  const strip = $("walk-strip");
  strip.replaceChildren();
  for (const f of res.frames) {
    const fig = document.createElement("figure");
    fig.className = "frame";
    let lab = "";
    if (f.label) {
      const k = f.label.indexOf(Math.max(...f.label));
      lab = ` · ${labelName(k)}`;
    }
    const text = `t=${f.t.toFixed(2)}${lab}`;
    fig.title = text;
    const cap = document.createElement("figcaption");
    cap.textContent = text;
    fig.append(img(png(f.image), `frame ${f.index}, ${text}`, "px"), cap);
    strip.append(fig);
  }
  const el = $("walk-gif");
  if (el.src.startsWith("blob:")) URL.revokeObjectURL(el.src);
  el.src = URL.createObjectURL(gif);
  el.alt = `Animated ${res.method} walk from seed ${keyframes[0].seed} to seed ${keyframes[1].seed}`;
  $("walk-gif-fig").hidden = false;
}

// --- arithmetic -----------------------------------------------------------------------------

function term(id, name, weight) {
  const seeds = seedList(id, name);
  if (!seeds.length) return null;
  // Grid samples carry their exact latents (truncation included); typed seeds go as seeds.
  const latents = seeds.map((s) => state.latents.get(`${state.model}|${s}`));
  return latents.every(Boolean) ? { weight, latents } : { weight, seeds };
}

async function arithmetic() {
  const terms = [term("arith-a", "A", 1), term("arith-b", "B", -1), term("arith-c", "C", 1)].filter(Boolean);
  if (!terms.length) throw new Error("arithmetic: give at least one seed in A, B or C");
  const neighbors = intField("arith-n", "neighbours");
  const req = { model: state.model, terms, neighbors: neighbors === null ? 0 : neighbors };
  if (conditional()) req.label = Number($("arith-label").value);
  const res = await api("arithmetic", { json: req });
  const out = $("arith-out");
  out.replaceChildren();
  const expr = document.createElement("p");
  expr.className = "expr";
  const g = (id) => $(id).value.trim() || "∅";
  expr.textContent = `[${g("arith-a")}] − [${g("arith-b")}] + [${g("arith-c")}]${res.label !== null && res.label !== undefined ? ` with label ${labelName(res.label)}` : ""} =`;
  const result = document.createElement("figure");
  result.className = "result";
  const cap = document.createElement("figcaption");
  cap.textContent = "result";
  result.append(img(png(res.result.image), "arithmetic result", "px big"), cap);
  const nb = document.createElement("div");
  nb.className = "neighbours";
  nb.setAttribute("aria-label", "neighbours of the result");
  res.neighbors.forEach((x, i) => nb.append(img(png(x.image), `neighbour ${i + 1}`, "px")));
  out.append(expr, result);
  if (res.neighbors.length) {
    const h = document.createElement("p");
    h.className = "info";
    h.textContent = `${res.neighbors.length} neighbours (result + uniform noise, seed ${res.seed}):`;
    out.append(h, nb);
  }
}

function addSelectedTo(id) {
  if (!state.selected.length) throw new Error("select samples in the grid first (click them, or Enter/Space)");
  const have = seedList(id, id);
  const add = state.selected.map((s) => s.seed).filter((s) => !have.includes(s));
  $(id).value = [...have, ...add].join(", ");
  if (conditional() && id === "arith-a" && state.selected[0].label !== undefined) {
    $("arith-label").value = String(state.selected[0].label);
  }
}

// --- score ----------------------------------------------------------------------------------

// The file as PNG bytes, redrawn at the model's size (grey for one channel) when asked to.
async function preparedImage(file) {
  const m = current();
  if (!$("score-resize").checked || !m || !m.image_shape) return file;
  const [c, h, w] = m.image_shape;
  const bitmap = await createImageBitmap(file);
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, w, h);
  ctx.drawImage(bitmap, 0, 0, w, h);
  if (c === 1) {
    const data = ctx.getImageData(0, 0, w, h);
    const p = data.data;
    for (let i = 0; i < p.length; i += 4) {
      const y = Math.round(0.299 * p[i] + 0.587 * p[i + 1] + 0.114 * p[i + 2]);
      p[i] = p[i + 1] = p[i + 2] = y;
    }
    ctx.putImageData(data, 0, 0);
  }
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

function scoreRow(previewSrc, s, name) {
  const row = document.createElement("div");
  row.className = "score-row";
  row.append(img(previewSrc, `scored image ${name}`, "px"));
  const dl = document.createElement("dl");
  const add = (k, v) => {
    const d = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v;
    d.append(dt, dd);
    dl.append(d);
  };
  add("image", name);
  add("realness", s.realness === null ? "n/a" : s.realness.toFixed(3));
  add(
    "classifier",
    s.label === null ? "n/a" : `${s.label_name ?? s.label} (${(100 * s.confidence).toFixed(1)}%)`,
  );
  row.append(dl);
  return row;
}

async function scoreFile(file) {
  if (!file) return;
  const blob = await preparedImage(file);
  const form = new FormData();
  form.append("model", state.model);
  form.append("images", blob, file.name || "image.png");
  const res = await api("score", { form });
  const out = $("score-out");
  out.replaceChildren(scoreRow(URL.createObjectURL(blob), res.scores[0], file.name || "image"));
  if (res.set && res.set.warning) out.append(note(res.set.warning));
}

async function scoreGrid() {
  if (!state.samples.length) throw new Error("generate a grid first");
  const req = { model: state.model, images: state.samples.map((s) => s.image) };
  const labels = state.samples.map((s) => s.label);
  if (conditional() && labels.every((l) => l !== null && l !== undefined)) req.labels = labels;
  const res = await api("score", { json: req });
  res.scores.forEach((s, i) => {
    const el = state.samples[i].el;
    const cap = el.querySelector(".caption");
    const extra = [];
    if (s.realness !== null) extra.push(`real ${s.realness.toFixed(2)}`);
    if (s.label !== null) extra.push(`looks like ${s.label_name ?? s.label} (${(100 * s.confidence).toFixed(0)}%)`);
    const text = `${el.title.split(" | ")[0]} | ${extra.join(", ")}`;
    el.title = text;
    cap.textContent = text;
  });
  const st = res.set;
  const parts = [`${st.n} images`];
  if (st.inception_score != null) parts.push(`IS ${st.inception_score.toFixed(2)}`);
  if (st.fid != null) parts.push(`FID ${st.fid.toFixed(1)} (vs ${st.reference_n} real)`);
  if (st.label_accuracy != null) parts.push(`label accuracy ${(100 * st.label_accuracy).toFixed(0)}%`);
  const mean = res.scores.filter((s) => s.realness !== null).map((s) => s.realness);
  if (mean.length) parts.push(`mean realness ${(mean.reduce((a, b) => a + b, 0) / mean.length).toFixed(3)}`);
  const out = $("score-out");
  out.replaceChildren(note(`Grid: ${parts.join(" · ")}. Per-image scores are in the grid's captions.`));
  if (st.warning) out.append(note(st.warning));
}

function note(text) {
  const p = document.createElement("p");
  p.className = "info";
  p.textContent = text;
  return p;
}

// --- wiring ---------------------------------------------------------------------------------

function init() {
  const key = $("api-key");
  key.value = sessionStorage.getItem("ganserve-api-key") || "";
  key.addEventListener("change", () => {
    sessionStorage.setItem("ganserve-api-key", key.value.trim());
    run(null, start);
  });
  $("error-close").addEventListener("click", hideError);
  $("model").addEventListener("change", () => {
    onModelChange();
    run($("gen-btn"), () => generate(false));
  });
  $("gen-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("gen-btn"), () => generate(false));
  });
  $("again-btn").addEventListener("click", () => run($("again-btn"), () => generate(true)));
  $("sel-clear").addEventListener("click", () => {
    state.selected = [];
    updateSelection();
  });
  $("walk-use").addEventListener("click", () => run(null, async () => useSelectedForWalk()));
  $("walk-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("walk-btn"), walk);
  });
  for (const b of document.querySelectorAll(".add-sel")) {
    b.addEventListener("click", () => run(null, async () => addSelectedTo(b.dataset.target)));
  }
  $("arith-clear").addEventListener("click", () => {
    for (const id of ["arith-a", "arith-b", "arith-c"]) $(id).value = "";
    $("arith-out").replaceChildren();
  });
  $("arith-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("arith-btn"), arithmetic);
  });
  $("score-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    run(null, () => scoreFile(file));
    e.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    run(null, () => scoreFile(file));
  });
  $("score-grid").addEventListener("click", () => run($("score-grid"), scoreGrid));
  run(null, start);
}

async function start() {
  await loadModels();
  await generate(false);
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", init);

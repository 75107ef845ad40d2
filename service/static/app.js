// ganserve's page: uses only the public HTTP API (/models, /generate, /interpolate, /arithmetic,
// /score, /metrics). No build step, no external resources.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], picked: { from: null, to: null, A: [], B: [], C: [] }, lastSeed: null };

function model() {
  return state.models.find((m) => m.name === $("model").value) || null;
}

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

// One place that calls the API: errors from the service are shown, never swallowed.
async function api(path, body, accept = "application/json") {
  const init = body === undefined
    ? { headers: headers({ Accept: accept }) }
    : { method: "POST", headers: headers({ "Content-Type": "application/json", Accept: accept }), body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    showError(`cannot reach the service: ${err.message}`);
    throw err;
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const data = await response.json();
      detail = data.detail || JSON.stringify(data);
    } catch (_) { /* not JSON */ }
    const rid = response.headers.get("X-Request-ID");
    showError(`${response.status}: ${detail}${rid ? ` (request ${rid})` : ""}`);
    throw new Error(detail);
  }
  clearError();
  return accept === "application/json" ? response.json() : response.blob();
}

const png = (b64) => `data:image/png;base64,${b64}`;
const intOrNull = (v) => (v === "" || v === null ? null : Number(v));
const randomSeed = () => Math.floor(Math.random() * 2 ** 31);
const seedsOf = (text) => text.split(",").map((s) => s.trim()).filter(Boolean).map(Number);

function fillLabels(select, withMixed) {
  const m = model();
  select.innerHTML = "";
  if (withMixed) select.add(new Option("mixed", "mixed"));
  (m && m.num_classes ? m.class_names : []).forEach((name, i) => select.add(new Option(name, String(i))));
}

function onModelChange() {
  const m = model();
  const conditional = !!(m && m.num_classes);
  fillLabels($("gen-label"), true);
  $("gen-label").disabled = !conditional;
  for (const id of ["walk-from-label", "walk-to-label", "arith-label"]) fillLabels($(id), false);
  document.querySelectorAll(".cond").forEach((el) => { el.hidden = !conditional; });
  if (conditional) { $("walk-from-label").value = "3"; $("walk-to-label").value = "8"; }
  $("st-provider").textContent = m ? (m.provider || "–").replace("ExecutionProvider", "") : "–";
  refreshStatus();
}

async function loadModels() {
  const data = await api("/models");
  state.models = data.models.filter((m) => m.status === "ready");
  $("model").innerHTML = "";
  state.models.forEach((m) => $("model").add(new Option(`${m.name} (${m.kind})`, m.name)));
  if (data.default) $("model").value = data.default;
  onModelChange();
}

// Status strip: queue depth and mean batch size of the chosen model, from the Prometheus text.
async function refreshStatus() {
  const m = model();
  try {
    const ready = await api("/readyz").catch(() => null);
    $("st-ready").textContent = ready && ready.ready ? "ready" : "not ready";
    const text = await (await fetch("/metrics", { headers: headers() })).text();
    const value = (name) => {
      const re = new RegExp(`^${name}\\{[^}]*model="${m ? m.name : ""}"[^}]*\\} ([0-9.eE+-]+)$`, "m");
      const hit = text.match(re);
      return hit ? Number(hit[1]) : null;
    };
    const queue = value("ganserve_queue_depth");
    const sum = value("ganserve_batch_size_sum");
    const count = value("ganserve_batch_size_count");
    $("st-queue").textContent = queue === null ? "–" : String(queue);
    $("st-batch").textContent = count ? (sum / count).toFixed(1) : "–";
  } catch (_) { /* the status strip is best effort */ }
}

function tile(img, { seed, label, result }) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tile" + (result ? " result" : "");
  const labelName = label === null || label === undefined ? "" : `, label ${label}`;
  button.title = `seed ${seed ?? "–"}${labelName}`;
  button.dataset.seed = seed ?? "";
  const image = document.createElement("img");
  image.src = img;
  image.alt = button.title;
  const cap = document.createElement("span");
  cap.className = "cap";
  cap.textContent = button.title;
  button.append(image, cap);
  return button;
}

async function generate(event, newSeed = false) {
  if (event) event.preventDefault();
  const m = model();
  if (newSeed || $("gen-seed").value === "") $("gen-seed").value = randomSeed();
  const body = { model: m.name, n: Number($("gen-n").value), seed: Number($("gen-seed").value) };
  if (m.num_classes && $("gen-label").value !== "mixed") body.labels = Number($("gen-label").value);
  const trunc = intOrNull($("gen-trunc").value);
  if (trunc !== null) body.truncation = trunc;
  const data = await api("/generate", body);
  const grid = $("grid");
  grid.innerHTML = "";
  data.images.forEach((im) => {
    const t = tile(png(im.image), { seed: im.seed, label: im.label });
    t.addEventListener("click", () => pick(im.seed, im.label, t));
    grid.append(t);
  });
  refreshStatus();
}

function pick(seed, label, element) {
  const target = document.querySelector("input[name=pick]:checked").value;
  if (target === "from" || target === "to") {
    $(`walk-${target}`).value = seed;
    if (label !== null && label !== undefined) $(`walk-${target}-label`).value = String(label);
  } else {
    const field = $(`grp-${target}`);
    const seeds = seedsOf(field.value);
    if (!seeds.includes(seed)) seeds.push(seed);
    field.value = seeds.join(",");
  }
  element.dataset.picked = target;
}

async function walk(event) {
  event.preventDefault();
  const m = model();
  const key = (which) => {
    const frame = { seed: Number($(`walk-${which}`).value) };
    if (m.num_classes) frame.label = Number($(`walk-${which}-label`).value);
    return frame;
  };
  const body = { model: m.name, keyframes: [key("from"), key("to")], steps: Number($("walk-steps").value), method: $("walk-method").value };
  const [strip, gif] = await Promise.all([api("/interpolate", body, "image/png"), api("/interpolate", body, "image/gif")]);
  for (const [id, blob] of [["walk-strip", strip], ["walk-gif", gif]]) {
    const img = $(id);
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
    img.hidden = false;
  }
  $("walk-caption").textContent = `${body.method} from seed ${body.keyframes[0].seed} to ${body.keyframes[1].seed}, ${body.steps} steps`;
}

async function arithmetic(event) {
  event.preventDefault();
  const m = model();
  const terms = [];
  for (const [group, weight] of [["A", 1], ["B", -1], ["C", 1]]) {
    const seeds = seedsOf($(`grp-${group}`).value);
    if (seeds.length) terms.push({ weight, seeds });
  }
  const body = { model: m.name, terms, neighbors: Number($("arith-nb").value), seed: 0 };
  if (m.num_classes) body.label = Number($("arith-label").value);
  const data = await api("/arithmetic", body);
  const out = $("arith-out");
  out.innerHTML = "";
  out.append(tile(png(data.result.image), { seed: "A−B+C", label: data.label, result: true }));
  data.neighbors.forEach((n, i) => out.append(tile(png(n.image), { seed: `neighbour ${i + 1}`, label: data.label })));
}

// Any picture is fitted to the model's size on a canvas and sent as PNG.
async function score(file) {
  const m = model();
  const [c, h, w] = m.image_shape;
  const bitmap = await createImageBitmap(file).catch(() => null);
  if (!bitmap) { showError(`${file.name}: not an image the browser can read`); return; }
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, w, h);
  ctx.drawImage(bitmap, 0, 0, w, h);
  const dataUrl = canvas.toDataURL("image/png");
  const data = await api("/score", { model: m.name, images: [dataUrl.split(",")[1]] });
  const s = data.scores[0];
  const out = $("score-out");
  out.innerHTML = "";
  const img = document.createElement("img");
  img.src = dataUrl; img.alt = `${file.name} as the model sees it (${w}x${h}${c === 1 ? ", grey" : ""})`;
  const text = document.createElement("div");
  const realness = s.realness === null ? "n/a" : s.realness.toFixed(3);
  const confidence = s.confidence === null ? "" : ` (${(100 * s.confidence).toFixed(1)}%)`;
  text.innerHTML = `<div>realness <b class="realness"></b></div><div>label <b class="label"></b></div>`;
  text.querySelector(".realness").textContent = realness;
  text.querySelector(".label").textContent = `${s.label_name ?? s.label ?? "n/a"}${confidence}`;
  out.append(img, text);
}

function wire() {
  $("error-close").addEventListener("click", clearError);
  $("model").addEventListener("change", onModelChange);
  $("gen-form").addEventListener("submit", (e) => generate(e).catch(() => {}));
  $("gen-again").addEventListener("click", () => generate(null, true).catch(() => {}));
  $("walk-form").addEventListener("submit", (e) => walk(e).catch(() => {}));
  $("arith-form").addEventListener("submit", (e) => arithmetic(e).catch(() => {}));
  $("score-file").addEventListener("change", (e) => { if (e.target.files[0]) score(e.target.files[0]).catch(() => {}); });
  const drop = $("drop");
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("score-file").click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) score(e.dataTransfer.files[0]).catch(() => {});
  });
  $("api-key").value = localStorage.getItem("ganserve-key") || "";
  $("api-key").addEventListener("change", () => { localStorage.setItem("ganserve-key", $("api-key").value); loadModels().catch(() => {}); });
  setInterval(refreshStatus, 3000);
}

wire();
loadModels().then(() => generate(null)).catch(() => {});

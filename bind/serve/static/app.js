// The page of `bindspace serve`: plain DOM, no build step. Talks to the JSON API documented in bind/serve/app.py.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, parts: [] };  // parts: {kind: "upload"|"item", label, token|item, weight}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body;
  try { body = await response.json(); } catch { body = { error: `${response.status} ${response.statusText}` }; }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

async function init() {
  try {
    state.info = await api("/api/info");
  } catch (e) { showError(`cannot reach the server: ${e.message}`); return; }
  const m = state.info.model;
  $("model").textContent = `model ${m.name} · weights ${m.fingerprint} · dim ${m.embed_dim}`;
  $("indexes").textContent = state.info.indexes.map((x) => `${x.name}: ${x.size} items (` +
    Object.entries(x.modalities).map(([k, v]) => `${k} ${v}`).join(", ") + ")").join(" · ");
  for (const mod of state.info.gallery_modalities) {
    const box = el("input", { type: "checkbox", value: mod, name: "gallery" });
    box.checked = true;
    $("gallery").append(el("label", {}, box, ` ${mod}`));
  }
  for (const mod of state.info.query_modalities) $("upload-modality").append(el("option", { value: mod, text: mod }));
  document.body.dataset.ready = "1";
}

function renderParts() {
  const list = $("parts");
  list.replaceChildren();
  state.parts.forEach((p, i) => {
    const weight = el("input", { type: "number", step: "0.1", value: String(p.weight), "aria-label": "weight" });
    weight.addEventListener("change", () => { p.weight = Number(weight.value); });
    const remove = el("button", { type: "button", title: "remove", text: "✕" });
    remove.addEventListener("click", () => { state.parts.splice(i, 1); renderParts(); });
    list.append(el("li", { class: "part" }, `${p.label} `, weight, remove));
  });
}

async function uploadFiles(files) {
  showError("");
  const modality = $("upload-modality").value;
  const errors = [];
  for (const file of files) {
    if (file.size > state.info.max_upload_bytes) {
      errors.push(`${file.name}: ${file.size} bytes is over the upload limit of ${state.info.max_upload_bytes}`);
      continue;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const r = await api("/api/uploads" + (modality ? `?modality=${encodeURIComponent(modality)}` : ""),
                          { method: "POST", body: form });
      state.parts.push({ kind: "upload", token: r.upload, weight: 1, label: `${r.modality}: ${r.name}` });
    } catch (e) { errors.push(e.message); }
  }
  renderParts();
  showError(errors.join("\n"));
  $("files").value = "";
}

function queries() {
  const q = [];
  const text = $("text").value.trim();
  if (text) q.push({ text, weight: Number($("text-weight").value) });
  for (const p of state.parts) {
    q.push(p.kind === "upload" ? { upload: p.token, weight: p.weight } : { item: p.item, weight: p.weight });
  }
  return q;
}

async function search() {
  showError("");
  const q = queries();
  if (!q.length) { showError("type a text query or add a query file"); return; }
  const modalities = [...document.querySelectorAll("input[name=gallery]:checked")].map((b) => b.value);
  $("status").textContent = "searching…";
  const started = performance.now();
  try {
    const r = await api("/api/search", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ queries: q, k: Number($("k").value), modalities }) });
    render(r, performance.now() - started);
  } catch (e) {
    $("status").textContent = "";
    showError(e.message);
  }
}

function render(r, pageMs) {
  const total = state.info.indexes.reduce((n, x) => n + x.size, 0);
  $("status").textContent = `${r.hits.length} results from ${total} items · query ${r.query_ms} ms on the server ` +
    `(embedding ${r.embed_ms} ms, search ${r.search_ms} ms) · ${Math.round(pageMs)} ms in the page`;
  const results = $("results");
  results.replaceChildren();
  for (const h of r.hits) results.append(card(h));
}

function card(h) {
  const preview = el("div", { class: "preview" });
  const more = el("button", { type: "button", class: "more", text: "more like this" });
  more.addEventListener("click", () => {
    $("text").value = "";
    state.parts = [{ kind: "item", item: { index: h.index, row: h.row }, weight: 1,
                     label: `like ${h.modality} ${h.id}` }];
    renderParts();
    search();
  });
  const c = el("article", { class: "card", "data-modality": h.modality, "data-row": String(h.row) },
    el("div", { class: "head" }, el("span", { class: "rank", text: `#${h.rank}` }),
       el("span", { class: "badge", text: h.modality }), el("span", { class: "score", text: h.score.toFixed(4) })),
    el("div", { class: "id", text: h.file ? `${h.id} · ${h.file}` : h.id }),
    h.caption ? el("div", { class: "caption", text: h.caption }) : null,
    preview, more);
  if (state.info.indexes.length > 1) c.append(el("div", { class: "muted", text: state.info.indexes[h.index].name }));
  fillPreview(h, preview, c);
  return c;
}

async function fillPreview(h, box, c) {
  let p;
  try { p = (await api(`/api/items/${h.index}/${h.row}`)).preview; } catch (e) { p = { error: e.message }; }
  if (p.play === "video") {
    box.append(el("video", { controls: "", preload: "metadata", src: p.media, ...(p.picture ? { poster: p.picture } : {}) }));
  } else if (p.picture) {
    box.append(el("img", { src: p.picture, alt: `${h.modality} ${h.id}` }));
  }
  if (p.play === "audio") box.append(el("audio", { controls: "", preload: "metadata", src: p.media }));
  if (p.text) box.append(el("blockquote", { text: p.text }));
  if (p.error) box.append(el("div", { class: "perr", text: p.error }));
  if (!p.picture && !p.play && !p.text && !p.error) box.append(el("div", { class: "generic", text: h.modality }));
  c.dataset.preview = p.error ? "error" : "ready";
}

$("query").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("files").addEventListener("change", () => uploadFiles([...$("files").files]));
init();

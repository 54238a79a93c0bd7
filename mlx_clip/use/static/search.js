// The search page: plain DOM, no framework. Every record value reaches the page through
// textContent or an attribute set by the DOM (never parsed as HTML), so a field holding <script> is text.
"use strict";

const state = { collections: [], shown: [], filters: {}, lastQuery: null, map: null, mapMode: "pca", place: null };
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", "#393b79", "#ad494a", "#637939"];
const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function safeURL(url) {
  try { const parsed = new URL(url); return ["http:", "https:"].includes(parsed.protocol) ? parsed.href : null; }
  catch (e) { return null; }
}

function params(extra) {
  const p = new URLSearchParams(extra);
  for (const [field, value] of Object.entries(state.filters)) if (value !== "") p.set(field, value);
  if (state.place) { p.set("near", state.place.near.join(",")); p.set("km", String(state.place.km)); }
  return p;
}

function showLine(...parts) { $("query-line").replaceChildren(...parts); }
function showError(message) { showLine(el("span", { class: "error", text: message })); }

// ----- search -----
async function runSearch(kind, value) {
  const k = $("k").value;
  state.lastQuery = { kind, value };
  const label = kind === "text" ? el("span", { text: `Words: “${value}”` })
    : kind === "like" ? el("span", { text: `More like record ${value}` })
    : el("span", {}, el("img", { src: URL.createObjectURL(value), alt: "your image" }), " Your image");
  showLine(label);
  const requests = state.shown.map((name) => {
    const base = { k, collection: name };
    if (kind === "text") return getJSON("/api/search?" + params({ ...base, q: value }));
    if (kind === "like") return getJSON("/api/search?" + params({ ...base, like: value }), { method: "POST" });
    return getJSON("/api/search?" + params(base), { method: "POST", body: value,
                                                    headers: { "Content-Type": value.type || "application/octet-stream" } });
  });
  try {
    const answers = await Promise.all(requests);
    renderColumns(answers, kind === "like" ? value : null);
  } catch (err) { showError(err.message); }
}

function renderColumns(answers, likeId) {
  const columns = $("columns");
  columns.style.setProperty("--cols", String(Math.max(answers.length, 1)));
  columns.replaceChildren(...answers.map((answer) => renderColumn(answer, likeId)));
}

function renderColumn(answer, likeId) {
  const info = state.collections.find((c) => c.name === answer.collection) || {};
  const filtered = Object.keys(answer.query.filters || {}).length;
  const parts = (info.model || "").split(/[\\/]/).filter(Boolean);  // a run's model/ goes by its run: tour/model
  const model = parts.length > 1 && parts[parts.length - 1] === "model" ? parts.slice(-2).join("/") : parts.pop() || "";
  const head = el("div", { class: "column-head" },
    el("b", { text: answer.collection }),
    el("span", { class: "muted", title: info.model || "",
                 text: `model ${model} · ${filtered ? `${answer.matched} of ` : ""}${answer.records} records` }));
  const grid = el("div", { class: "grid" }, ...answer.results.map((r, i) => renderCard(answer.collection, r, i, likeId)));
  const warning = info.warning ? [el("p", { class: "warning", text: info.warning })] : [];
  return el("section", { class: "column", "data-collection": answer.collection }, head, ...warning,
            answer.results.length ? grid : el("p", { class: "empty", text: "No record passes these filters." }));
}

// A field as words: null says nothing, a list its items, an object "key value" pairs, nested or in a
// list too (findspot: name Knossos, lat 35.3, lon 25.16; media: url ..., role primary).
function fieldText(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map(fieldText).filter(t => t !== "").join("; ");
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) => [k, fieldText(v)]).filter(([, t]) => t !== "")
      .map(([k, t]) => `${k} ${t}`).join(", ");
  }
  return String(value);
}

function renderCard(collection, record, index, likeId) {
  const thumb = el("img", { src: `/thumb?${new URLSearchParams({ collection, id: record.record_id })}`,
                            alt: record.title });
  const url = safeURL(record.record_url);
  const title = url ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: record.title })
                    : el("span", { text: record.title });
  const fields = el("dl");
  let shown = 0;
  for (const [name, value] of Object.entries(record.fields)) {
    const text = fieldText(value);
    if (text === "" || text === record.title || text === record.record_id) continue;
    if (++shown > 5) break;
    fields.append(el("dt", { text: name }), el("dd", { text: text.length > 80 ? text.slice(0, 79) + "…" : text }));
  }
  const card = el("article", { class: "card", "data-record-id": record.record_id },
    el("div", { class: "thumb" }, thumb),
    el("div", { class: "body" },
      el("div", { class: "title" }, title),
      el("div", { class: "score" }, el("span", { class: "rank", text: `${index + 1}.` }), ` score ${record.score.toFixed(3)}`),
      fields,
      el("button", { class: "more", type: "button", text: "more like this",
                     onclick: () => runSearch("like", record.record_id) })));
  if (likeId !== null && record.record_id === likeId) card.classList.add("same");
  return card;
}

// ----- filters and collections -----
async function loadFacets() {
  const { facets } = await getJSON("/api/facets?" + new URLSearchParams({ collection: state.shown[0] }));
  const list = $("facet-list");
  list.replaceChildren();
  for (const [field, values] of Object.entries(facets)) {
    const select = el("select", { "data-field": field, "aria-label": field,
                                  onchange: (e) => { state.filters[field] = e.target.value; rerun(); } },
                      el("option", { value: "", text: "any" }));
    for (const { value, count } of values) select.append(el("option", { value, text: `${value} (${count})` }));
    list.append(el("label", { text: field }), select);
  }
  if (!Object.keys(facets).length) list.append(el("p", { class: "muted small", text: "No field with few values." }));
  const info = state.collections.find((c) => c.name === state.shown[0]) || {}, places = info.coordinates;
  $("place-box").hidden = !places;
  if (places) {
    $("place-note").textContent = `${places.with} of ${info.records} records have coordinates (${places.lat_field}, ` +
      `${places.lon_field}); the ${info.records - places.with} without them never pass a place filter. ` +
      "Or click a point on the map's findspot layout.";
  }
}

function setPlace(near, km) {
  state.place = near ? { near: near.map((v) => +v.toFixed(5)), km } : null;
  $("near").value = state.place ? state.place.near.join(", ") : "";
  if (state.map) drawMap();
  rerun();
}

function applyPlaceInputs() {
  const text = $("near").value.trim(), km = Number($("km").value);
  if (!text) { setPlace(null); return; }
  const near = Places.parseNear(text);
  if (!near) { showError("near: give a latitude and a longitude in decimal degrees, e.g. 37.9715, 23.7257"); return; }
  if (!(km > 0)) { showError("within km: give a distance above 0"); return; }
  setPlace(near, km);
}

function rerun() { if (state.lastQuery) runSearch(state.lastQuery.kind, state.lastQuery.value); }

function renderShownChoices() {
  const box = $("shown-collections");
  box.replaceChildren();
  if (state.collections.length < 2) return;
  box.append(el("h2", { text: "Side by side" }));
  for (const c of state.collections) {
    const input = el("input", { type: "checkbox", value: c.name });
    input.checked = state.shown.includes(c.name);
    input.addEventListener("change", () => {
      state.shown = state.collections.map((x) => x.name).filter((n) =>
        n === c.name ? input.checked : state.shown.includes(n));
      if (!state.shown.length) { state.shown = [c.name]; input.checked = true; }
      rerun();
    });
    box.append(el("label", {}, input, " " + c.name));
  }
}

// ----- wiring -----
function showTab(name) {
  for (const tab of ["search", "map"]) {
    $(`view-${tab}`).hidden = tab !== name;
    $(`tab-${tab}`).classList.toggle("active", tab === name);
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
  }
  if (name === "map" && !state.map) loadMap();
}

function searchImage(file) { if (file) runSearch("image", file); }

async function start() {
  const { collections } = await getJSON("/api/collections");
  state.collections = collections;
  state.shown = collections.slice(0, 2).map((c) => c.name);
  $("collections-line").textContent = collections.map((c) => `${c.name}: ${c.records} records`).join(" · ");
  $("map-collection").replaceChildren(...collections.map((c) => el("option", { value: c.name, text: c.name })));
  renderShownChoices();
  await loadFacets();
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("q").value.trim();
    if (q) runSearch("text", q);
  });
  $("k").addEventListener("change", rerun);
  $("file").addEventListener("change", (e) => searchImage(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); searchImage(e.dataTransfer.files[0]); });
  $("clear-filters").addEventListener("click", () => {
    state.filters = {};
    for (const s of document.querySelectorAll("#facet-list select")) s.value = "";
    setPlace(null);
  });
  $("tab-search").addEventListener("click", () => showTab("search"));
  $("tab-map").addEventListener("click", () => showTab("map"));
  $("map-collection").addEventListener("change", () => { $("map-field").replaceChildren(); loadMap(); });
  $("map-field").addEventListener("change", loadMap);
  $("map-flags").addEventListener("change", drawMap);
  const canvas = $("map-canvas");
  canvas.addEventListener("mousemove", hover);
  canvas.addEventListener("mouseleave", () => { $("map-tip").hidden = true; });
  canvas.addEventListener("click", (e) => {
    const i = nearestPoint(e);
    if (state.map && state.map.kind === "places") { placeClick(e, i); return; }
    if (i >= 0) { showTab("search"); runSearch("like", state.map.ids[i]); }
  });
  $("map-mode").addEventListener("change", () => { state.mapMode = $("map-mode").value; loadMap(); });
  $("place-apply").addEventListener("click", applyPlaceInputs);
  $("near").addEventListener("keydown", (e) => { if (e.key === "Enter") applyPlaceInputs(); });
  document.body.dataset.ready = "yes";
}

start().catch((err) => showError(err.message));

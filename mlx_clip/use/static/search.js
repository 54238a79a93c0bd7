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

function renderCard(collection, record, index, likeId) {
  const thumb = el("img", { src: `/thumb?${new URLSearchParams({ collection, id: record.record_id })}`,
                            alt: record.title });
  const url = safeURL(record.record_url);
  const title = url ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: record.title })
                    : el("span", { text: record.title });
  const fields = el("dl");
  let shown = 0;
  for (const [name, value] of Object.entries(record.fields)) {
    const text = Array.isArray(value) ? value.join(", ") : (typeof value === "object" && value !== null
      ? Object.entries(value).map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ")  // findspot: lat 37.97, lon 23.72
      : String(value));
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
      `${places.lon_field}); the ${info.records - places.with} without never pass a place filter. ` +
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

// ----- the map -----
async function loadMap() {
  const collection = $("map-collection").value, field = $("map-field").value;
  const info = state.collections.find((c) => c.name === collection) || {};
  $("map-mode").querySelector("option[value=places]").disabled = !info.coordinates;
  if (!info.coordinates) state.mapMode = $("map-mode").value = "pca";
  const places = state.mapMode === "places";
  $("map-method").textContent = "computing the map…";
  $("map-popup").hidden = true;
  const ticket = state.mapTicket = (state.mapTicket || 0) + 1;  // only the latest request draws
  let m;
  try {
    m = await getJSON((places ? "/api/places?" : "/api/map?") +
                      new URLSearchParams(field ? { collection, field } : { collection }));
  } catch (err) { if (ticket === state.mapTicket) $("map-method").textContent = err.message; return; }
  if (ticket !== state.mapTicket) return;
  state.map = m;
  m.kind = places ? "places" : "pca";
  m.worth_checking = m.worth_checking || [];
  $("map-flags-box").hidden = $("map-flags-label").hidden = places;
  $("places-help").hidden = !places;
  const fieldSelect = $("map-field");
  if (fieldSelect.options.length !== m.fields.length) {
    fieldSelect.replaceChildren(...m.fields.map((f) => el("option", { value: f, text: f })));
  }
  fieldSelect.value = m.field || "";
  $("map-method").textContent = places ? `Findspots: ${m.line}. Projection: ${m.projection}.`
    : `Layout: ${m.method}; the two axes hold ${(100 * m.explained[0]).toFixed(0)}% and ` +
      `${(100 * m.explained[1]).toFixed(0)}% of the variance. ${m.note}.`;
  $("map-legend").replaceChildren(...m.values.map((v, i) => el("li", {},
    swatch(PALETTE[i % PALETTE.length]), el("span", { text: `${v} (${m.counts[i]})` }))),
    el("li", {}, swatch("#b8bec4"), el("span", { class: "muted", text: "other / no value" })));
  $("flag-count").textContent = `(${m.worth_checking.length})`;
  $("map-flag-list").replaceChildren(...m.worth_checking.slice(0, 300).map((f) => el("li", {
    text: `${m.titles[f.row]}: “${f.label}”, neighbours say “${f.neighbours_say}”`,
    onclick: () => { $("q").value = ""; showTab("search"); runSearch("like", m.ids[f.row]); } })));
  drawMap();
}

function swatch(colour) { const s = el("span", { class: "swatch" }); s.style.background = colour; return s; }

function mapXY(point, canvas) {
  if (state.map && state.map.kind === "places") return Places.project(point, Places.frame(state.map.extent, canvas));
  const pad = 18;
  return [pad + (point[0] + 1) / 2 * (canvas.width - 2 * pad), pad + (1 - (point[1] + 1) / 2) * (canvas.height - 2 * pad)];
}

function drawMap() {
  const m = state.map, canvas = $("map-canvas"), ctx = canvas.getContext("2d");
  if (!m) return;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (m.kind === "places") Places.drawBackground(ctx, Places.frame(m.extent, canvas), canvas);
  const radius = m.points.length > 20000 ? 1.5 : m.points.length > 2000 ? 2.5 : 4;
  ctx.globalAlpha = 0.8;
  m.points.forEach((p, i) => {
    const [x, y] = mapXY(p, canvas);
    ctx.fillStyle = m.colour[i] >= 0 ? PALETTE[m.colour[i] % PALETTE.length] : "#b8bec4";
    ctx.beginPath(); ctx.arc(x, y, radius, 0, 2 * Math.PI); ctx.fill();
  });
  ctx.globalAlpha = 1;
  if (m.kind === "places" && state.place) Places.drawCircle(ctx, Places.frame(m.extent, canvas), state.place.near, state.place.km);
  if ($("map-flags").checked) {
    ctx.strokeStyle = "#c2410c"; ctx.lineWidth = 1.5;
    for (const f of m.worth_checking) {
      const [x, y] = mapXY(m.points[f.row], canvas);
      ctx.beginPath(); ctx.arc(x, y, radius + 3, 0, 2 * Math.PI); ctx.stroke();
    }
  }
}

function nearestPoint(event) {
  const m = state.map, canvas = $("map-canvas");
  if (!m) return -1;
  const box = canvas.getBoundingClientRect();
  const mx = (event.clientX - box.left) * canvas.width / box.width, my = (event.clientY - box.top) * canvas.height / box.height;
  let best = -1, bestDist = 100;
  m.points.forEach((p, i) => {
    const [x, y] = mapXY(p, canvas), d = (x - mx) ** 2 + (y - my) ** 2;
    if (d < bestDist) { best = i; bestDist = d; }
  });
  return best;
}

function hover(event) {
  const i = nearestPoint(event), tip = $("map-tip"), m = state.map;
  if (i < 0) { tip.hidden = true; return; }
  const flag = m.worth_checking.find((f) => f.row === i);
  const value = m.colour[i] >= 0 ? m.values[m.colour[i]] : (m.colour[i] === -1 ? "other" : "no value");
  tip.replaceChildren(
    el("img", { src: `/thumb?${new URLSearchParams({ collection: m.collection, id: m.ids[i] })}`, alt: "" }),
    el("b", { text: m.titles[i] }), el("div", { class: "muted", text: `${m.field}: ${value}` }),
    m.kind === "places" ? el("div", { class: "muted", text: `${m.points[i][1]}, ${m.points[i][0]}` }) : null,
    flag ? el("div", { class: "flagword", text: `label worth checking: neighbours say “${flag.neighbours_say}”` }) : null);
  const wrap = $("map-canvas").parentElement.getBoundingClientRect();
  tip.style.left = `${event.clientX - wrap.left + 14}px`;
  tip.style.top = `${event.clientY - wrap.top + 14}px`;
  tip.hidden = false;
}

// a click on the place map: on a find, its popup (linking its record); elsewhere, search near there
function placeClick(event, i) {
  const m = state.map, canvas = $("map-canvas"), popup = $("map-popup");
  const box = canvas.getBoundingClientRect(), wrap = canvas.parentElement.getBoundingClientRect();
  const x = (event.clientX - box.left) * canvas.width / box.width, y = (event.clientY - box.top) * canvas.height / box.height;
  if (i < 0) {
    popup.hidden = true;
    setPlace(Places.unproject(x, y, Places.frame(m.extent, canvas)), Number($("km").value) || 25);
    $("map-method").textContent = `Place filter: within ${state.place.km} km of ${state.place.near.join(", ")}` +
      " (the Search tab shows the finds there).";
    return;
  }
  const url = safeURL(m.links[i]), km = Number($("km").value) || 25;
  popup.replaceChildren(
    el("button", { class: "close", type: "button", text: "×", "aria-label": "close", onclick: () => { popup.hidden = true; } }),
    el("img", { src: `/thumb?${new URLSearchParams({ collection: m.collection, id: m.ids[i] })}`, alt: "" }),
    url ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: m.titles[i] }) : el("b", { text: m.titles[i] }),
    el("div", { class: "muted", text: `${m.points[i][1]}, ${m.points[i][0]}` }),
    el("button", { class: "small-button", type: "button", text: "more like this",
                   onclick: () => { showTab("search"); runSearch("like", m.ids[i]); } }),
    el("button", { class: "small-button", type: "button", text: `finds within ${km} km`,
                   onclick: () => {
                     setPlace([m.points[i][1], m.points[i][0]], km);
                     showTab("search");
                     if (!state.lastQuery) runSearch("like", m.ids[i]);  // the finds there, most like this one first
                   } }));
  popup.style.left = `${Math.min(event.clientX - wrap.left + 12, wrap.width - 210)}px`;
  popup.style.top = `${event.clientY - wrap.top + 12}px`;
  popup.hidden = false;
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

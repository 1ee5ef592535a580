// trait-pipeline dashboard: three views over the JSON API of trait_pipeline/serve.py.
// Every file location comes from the API (discovery lives in layout.py); this script only
// names things (experiment, variant, trait, prompt set, id) and plots what it gets back.
"use strict";

const $ = (id) => document.getElementById(id);
const VIEWS = ["extraction", "steering", "dynamics", "runs", "chat"];
const DEFAULTS = {
  view: "extraction", metric: "combined_score", smetric: "delta", coh: "75",
  smooth: "1", center: "1", cosine: "0", mode: "overlay", compare: "",
};
const PLOT_CONFIG = { displaylogo: false, responsive: true };
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

// ---- state: the URL's query string is the single source of truth --------------------
const state = Object.fromEntries(new URLSearchParams(location.search));
function get(key) { return state[key] !== undefined ? state[key] : DEFAULTS[key]; }
function set(patch, rerender = true) {
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined || v === null || v === "") delete state[k]; else state[k] = String(v);
  }
  const qs = new URLSearchParams(state).toString();
  history.replaceState(null, "", qs ? `?${qs}` : location.pathname);
  if (rerender) render();
}

async function api(path, params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  const url = `/api/${path.map(encodeURIComponent).join("/")}${q.toString() ? "?" + q : ""}`;
  const resp = await fetch(url);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.detail || `${resp.status} ${resp.statusText}`);
  return body;
}

function fillSelect(sel, options, value) {
  // options: [value] or [[value, label]]; returns the value actually selected
  const items = options.map((o) => (Array.isArray(o) ? o : [o, o]));
  sel.innerHTML = "";
  for (const [v, label] of items) {
    const opt = document.createElement("option");
    opt.value = v; opt.textContent = label; sel.appendChild(opt);
  }
  const values = items.map(([v]) => v);
  sel.value = values.includes(value) ? value : (values[0] ?? "");
  return sel.value;
}

function table(el, header, rows) {
  el.innerHTML = "";
  const tr = el.insertRow();
  for (const h of header) { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); }
  for (const row of rows) {
    const r = el.insertRow();
    for (const cell of row) {
      const td = r.insertCell();
      if (typeof cell === "number") { td.textContent = fmt(cell); td.className = "num"; }
      else td.textContent = cell ?? "";
    }
  }
}
const fmt = (x, d = 3) => (x === null || x === undefined ? "" : Number.isInteger(x) ? String(x) : x.toFixed(d));

function showError(msg) {
  $("error").hidden = !msg;
  $("error").textContent = msg || "";
  if (msg) document.body.dataset.error = msg; else delete document.body.dataset.error;
}

// ---- shell: experiment, view tabs, variant and trait pickers ------------------------
let overview = null;
let renderSeq = 0;

async function init() {
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => set({ view: b.dataset.view }));
  }
  $("exp").addEventListener("change", (e) => set({ exp: e.target.value, variant: "", trait: "" }));
  $("variant").addEventListener("change", (e) => set({ variant: e.target.value }));
  $("trait").addEventListener("change", (e) => set({ trait: e.target.value }));
  bindExtraction(); bindSteering(); bindDynamics(); bindRuns(); window.bindChat && window.bindChat();
  const { experiments } = await api(["experiments"]);
  if (!experiments.length) { showError("no experiments found under the served directory"); done(); return; }
  render();
}

async function render() {
  const seq = ++renderSeq;
  document.body.dataset.ready = "false";
  showError("");
  try {
    const { experiments } = await api(["experiments"]);
    const exp = fillSelect($("exp"), experiments, get("exp"));
    if (!overview || overview.experiment !== exp) overview = await api(["experiments", exp]);
    const view = VIEWS.includes(get("view")) ? get("view") : "extraction";
    for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === view);
    $("variant").disabled = false; $("trait").disabled = false;
    for (const id of ["variant", "trait"]) $(id).parentElement.hidden = view === "chat";
    if (view === "chat") { set({ exp, view }, false); await window.renderChat(seq); return; }
    if (view === "runs") {
      set({ exp, view }, false);
      await renderRuns(seq);
      return;
    }
    const area = overview[view === "dynamics" ? "inference" : view];
    const variant = fillSelect($("variant"), area.variants.map((v) => [v, variantLabel(v)]), get("variant"));
    const trait = fillSelect($("trait"), area.traits, get("trait"));
    set({ exp, view, variant, trait }, false);
    if (!variant || !trait) throw new Error(`no ${view} data in experiment ${exp}`);
    await ({ extraction: renderExtraction, steering: renderSteering, dynamics: renderDynamics })[view](seq);
  } catch (err) {
    if (seq === renderSeq) showError(err.message);
  } finally {
    if (seq === renderSeq) done();
  }
}
function done() { document.body.dataset.ready = "true"; }

// a variant as the pickers show it: its name and what it loads (from the runs' snapshots)
function variantLabel(v) {
  const info = (overview && overview.variant_info || {})[v];
  if (!info) return v;
  return `${v} — ${info.model}${info.lora ? " + " + info.lora : ""}`;
}

// a resolved config (or a diff) into a <pre>; diff lines are coloured by their sign
function showText(el, text) {
  el.innerHTML = "";
  for (const line of (text || "").split("\n")) {
    const span = document.createElement("span");
    span.textContent = line + "\n";
    if (/^-[^-]/.test(line)) span.className = "del";
    else if (/^\+[^+]/.test(line)) span.className = "add";
    else if (line.startsWith("@@")) span.className = "sec";
    el.appendChild(span);
  }
}

async function showConfig(preEl, labelEl, run) {
  labelEl.textContent = run || "(no snapshot recorded for this result)";
  if (!run) { showText(preEl, ""); return; }
  try {
    const c = await api(["experiments", get("exp"), "config"], { run });
    showText(preEl, c.text);
  } catch (err) { showText(preEl, err.message); }
}
const stale = (seq) => seq !== renderSeq;

// ---- extraction ---------------------------------------------------------------------
function bindExtraction() {
  $("ext-metric").addEventListener("change", (e) => set({ metric: e.target.value }));
  $("ext-site").addEventListener("change", (e) => set({ site: e.target.value }));
}

async function renderExtraction(seq) {
  const data = await api(["experiments", get("exp"), "extraction", get("variant")]);
  if (stale(seq)) return;
  const trait = get("trait");
  const metric = fillSelect($("ext-metric"), data.metrics, get("metric"));
  const grids = data.heatmaps[trait] || [];
  const site = fillSelect($("ext-site"), grids.map((g, i) => [String(i), `${g.position} / ${g.component}`]), get("site"));
  set({ metric, site }, false);
  $("ext-source").textContent = data.evaluation_file ? `from ${data.evaluation_file}` : "no evaluation file";
  const g = grids[Number(site)];
  if (g) {
    Plotly.react("ext-heatmap", [{
      type: "heatmap", x: g.layers, y: g.methods, z: g.metrics[metric], colorscale: "Viridis",
      hovertemplate: "layer %{x}<br>%{y}<br>" + metric + " %{z:.3f}<extra></extra>",
      colorbar: { title: { text: metric } },
    }], {
      title: { text: `${trait} on ${data.variant}: ${metric} (layer × method)` },
      xaxis: { title: { text: "layer (output of decoder block L)" }, dtick: 1 },
      yaxis: { title: { text: "method" }, type: "category" }, margin: { l: 110 },
    }, PLOT_CONFIG);
    nullPlot("ext-null", g, trait, data.variant, metric);
  } else {
    Plotly.purge("ext-heatmap"); $("ext-heatmap").textContent = `no evaluation rows for ${trait}`;
    Plotly.purge("ext-null"); $("ext-null").textContent = "";
  }
  const ci = (x) => (Array.isArray(x) ? `[${x.map((v) => v.toFixed(2)).join(", ")}]` : "");
  table($("ext-best"), ["trait", "method", "layer", "position", "component", "val acc", "95 % CI",
    "effect size", "95 % CI", "p vs null", "combined"],
    Object.entries(data.best).map(([t, b]) => [t, b.method, b.layer, b.position, b.component,
      b.val_accuracy, ci(b.val_accuracy_ci), b.val_effect_size, ci(b.val_effect_size_ci),
      b.p_value ?? "", b.combined_score]));
  // the logit lens of the vectors at the chosen site (position / component), else the first
  const lenses = data.logit_lens[trait] || [];
  const lens = lenses.find((l) => g && l.position === g.position && l.component === g.component) || lenses[0];
  const rows = [];
  for (const [method, depths] of Object.entries((lens && lens.methods) || {})) {
    for (const [depth, d] of Object.entries(depths)) {
      rows.push([method, `${depth} (L${d.layer})`,
        (d.toward || []).map((t) => t.token).join(" "), (d.away || []).map((t) => t.token).join(" ")]);
    }
  }
  table($("ext-lens"), ["method", "layer", "toward", "away"], rows);
  const cfgs = (data.config_runs || {})[trait] || [];
  const cfg = cfgs.find((c) => g && c.position === g.position && c.component === g.component) || cfgs[0];
  await showConfig($("ext-config-text"), $("ext-config-run"), cfg && cfg.run);
}

// Per layer: each method's value with its 95 % interval, over the band (2.5-97.5 %) of the
// null of random directions. Shown for the metrics that have both (val acc, effect size).
function nullPlot(div, g, trait, variant, metric) {
  const m = ["val_accuracy", "val_effect_size"].includes(metric) ? metric : "val_accuracy";
  const traces = [];
  const band = g.null_band || {};
  const layers = g.layers.filter((la) => band[String(la)] && band[String(la)][m]);
  if (layers.length) {
    const lo = layers.map((la) => band[String(la)][m][0]), hi = layers.map((la) => band[String(la)][m][2]);
    traces.push({ x: layers, y: lo, mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip" });
    traces.push({ x: layers, y: hi, mode: "lines", line: { width: 0 }, fill: "tonexty",
      fillcolor: "rgba(128,128,128,0.25)", name: `null band (${band[String(layers[0])].n} random directions, 95 %)` });
  }
  g.methods.forEach((method, i) => {
    const cis = (g.intervals && g.intervals[m] && g.intervals[m][i]) || [];
    const y = g.metrics[m][i];
    traces.push({
      x: g.layers, y, mode: "lines+markers", name: method,
      error_y: { type: "data", symmetric: false, visible: true,
        array: y.map((v, j) => (cis[j] && v !== null ? cis[j][1] - v : null)),
        arrayminus: y.map((v, j) => (cis[j] && v !== null ? v - cis[j][0] : null)) },
    });
  });
  Plotly.react(div, traces, {
    title: { text: `${trait} on ${variant}: ${m} with 95 % intervals, against the null` },
    xaxis: { title: { text: "layer (output of decoder block L)" }, dtick: 1 },
    yaxis: { title: { text: m } }, margin: { l: 60 },
  }, PLOT_CONFIG);
}

// ---- steering -----------------------------------------------------------------------
function bindSteering() {
  $("steer-file").addEventListener("change", (e) => set({ results: e.target.value, run: "" }));
  $("steer-group").addEventListener("change", (e) => set({ group: e.target.value }));
  $("steer-metric").addEventListener("change", (e) => set({ smetric: e.target.value }));
  $("steer-coh").addEventListener("input", (e) => { $("steer-coh-value").textContent = e.target.value; });
  $("steer-coh").addEventListener("change", (e) => set({ coh: e.target.value }));
  $("steer-compare").addEventListener("change", (e) => set({ compare: e.target.value }));
  $("steer-run").addEventListener("change", (e) => set({ run: e.target.value }));
}

function steeringHeatmap(div, res, group, metric, minCoh) {
  const z = group[metric];
  const text = group.coherence.map((row, i) => row.map((c, j) => {
    const v = z[i][j];
    if (v === null) return "";
    return (c !== null && c < minCoh ? "✗ " : "") + v.toFixed(0);
  }));
  Plotly.react(div, [{
    type: "heatmap", x: group.coefs.map(String), y: group.layers.map(String), z,
    text, texttemplate: "%{text}", customdata: group.runs,
    colorscale: metric === "delta" ? "RdBu" : "Viridis",
    zmid: metric === "delta" ? 0 : undefined,
    hovertemplate: "layer %{y}, coef %{x}<br>" + metric + " %{z:.1f}<br>run %{customdata}<extra></extra>",
  }], {
    title: { text: `${res.trait} on ${res.variant}: ${metric} (✗ = coherence < ${minCoh})` },
    xaxis: { title: { text: "coefficient" }, type: "category" },
    yaxis: { title: { text: "layer" }, type: "category" }, margin: { l: 60 },
  }, PLOT_CONFIG);
  $(div).removeAllListeners?.("plotly_click");
  $(div).on("plotly_click", (ev) => {
    const run = ev.points && ev.points[0] && ev.points[0].customdata;
    if (run) set({ run });
  });
}

async function renderSteering(seq) {
  const exp = get("exp"), variant = get("variant"), trait = get("trait");
  const index = await api(["experiments", exp, "steering", variant], { trait });
  if (stale(seq)) return;
  const fileKey = (f) => `${f.position_dir}|${f.prompt_set}`;
  const files = index.results.map((f) => [fileKey(f), `${f.position} / ${f.prompt_set}`]);
  const results = fillSelect($("steer-file"), files, get("results"));
  if (!results) throw new Error(`no steering results for ${trait} on ${variant}`);
  const [position, prompt_set] = results.split("|");
  const minCoh = Number(get("coh"));
  $("steer-coh").value = minCoh; $("steer-coh-value").textContent = minCoh;
  const others = overview.steering.variants.filter((v) => v !== variant);
  const compare = fillSelect($("steer-compare"), [["", "(none)"], ...others], get("compare"));
  const params = { trait, position, prompt_set, min_coherence: minCoh };
  const res = await api(["experiments", exp, "steering", variant, "results"], params);
  let resB = null;
  if (compare) {
    try { resB = await api(["experiments", exp, "steering", compare, "results"], params); }
    catch (err) { resB = { error: err.message }; }
  }
  if (stale(seq)) return;
  const groupKey = (g) => `${g.method}|${g.component}`;
  const group = fillSelect($("steer-group"), res.groups.map((g) => [groupKey(g), `${g.method} / ${g.component}`]), get("group"));
  const metric = $("steer-metric").value = ["delta", "coherence", "trait"].includes(get("smetric")) ? get("smetric") : "delta";
  set({ results, group, compare, smetric: metric }, false);
  const g = res.groups.find((x) => groupKey(x) === group);
  if (!g) throw new Error(`no single-layer runs in ${res.results_file}`);
  // unhide the second panel first so the first one is laid out at its final width
  const gB = resB && !resB.error ? resB.groups.find((x) => groupKey(x) === group) : null;
  $("steer-heatmap-b").hidden = !compare;
  steeringHeatmap("steer-heatmap", res, g, metric, minCoh);
  if (compare) {
    if (gB) steeringHeatmap("steer-heatmap-b", resB, gB, metric, minCoh);
    else { Plotly.purge("steer-heatmap-b"); $("steer-heatmap-b").textContent = resB.error || `no ${group} runs on ${compare}`; }
  }

  // best coherent run per layer, and the unsteered baseline, per variant
  const traces = [], shapes = [];
  [[res, g], [resB, gB]].forEach(([r, gg], i) => {
    if (!r || !gg) return;
    const best = gg.best_per_layer.filter((b) => b.best);
    traces.push({
      type: "scatter", mode: "lines+markers", name: `${r.variant}: best trait score (coherence ≥ ${minCoh})`,
      x: best.map((b) => b.layer), y: best.map((b) => b.best.trait_mean), customdata: best.map((b) => b.best.coef),
      hovertemplate: "layer %{x}: trait %{y:.1f} at coef %{customdata}<extra></extra>", line: { color: COLORS[i] },
    });
    if (r.baseline.trait_mean !== null) {
      traces.push({
        type: "scatter", mode: "lines", name: `${r.variant}: baseline ${r.baseline.trait_mean.toFixed(1)}`,
        x: [Math.min(...gg.layers), Math.max(...gg.layers)], y: [r.baseline.trait_mean, r.baseline.trait_mean],
        line: { color: COLORS[i], dash: "dash" }, hoverinfo: "name",
      });
    }
  });
  Plotly.react("steer-best", traces, {
    title: { text: `Best coefficient per layer under coherence ≥ ${minCoh}` },
    xaxis: { title: { text: "layer" }, dtick: 1 }, yaxis: { title: { text: "trait score" } },
  }, PLOT_CONFIG);

  // response browser: the baseline or any run with saved responses
  const runs = res.runs.filter((r) => r.has_responses).map((r) => [r.run,
    `L${r.layers.join("+")} c${r.coefs.join("/")} ${r.method || ""}: trait ${fmt(r.trait_mean, 1)}, coherence ${fmt(r.coherence_mean, 1)}`]);
  const run = fillSelect($("steer-run"), [["baseline", "baseline (no steering)"], ...runs], get("run") || "baseline");
  set({ run }, false);
  const chosen = res.runs.find((r) => r.run === run) || res.runs.find((r) => r.config_run);
  await showConfig($("steer-config-text"), $("steer-config-run"), chosen && chosen.config_run);
  if (stale(seq)) return;
  try {
    const resp = await api(["experiments", exp, "steering", variant, "responses"], { trait, position, prompt_set, run });
    if (stale(seq)) return;
    $("steer-run-file").textContent = resp.file;
    table($("steer-responses"), ["question", "response", "trait", "coherence"],
      resp.responses.map((x) => [x.question, x.response, x.trait_score, x.coherence_score]));
  } catch (err) {
    $("steer-run-file").textContent = err.message;
    table($("steer-responses"), ["question", "response", "trait", "coherence"], []);
  }
}

// ---- trait dynamics -------------------------------------------------------------------
function bindDynamics() {
  $("dyn-set").addEventListener("change", (e) => set({ set: e.target.value, id: "", token: "" }));
  $("dyn-id").addEventListener("change", (e) => set({ id: e.target.value, token: "" }));
  for (const k of ["smooth", "center", "cosine", "z", "clean"]) {
    $(`dyn-${k}`).addEventListener("change", (e) => set({ [k]: e.target.checked ? "1" : "0" }));
  }
  $("dyn-compare").addEventListener("change", (e) => set({ compare: e.target.value }));
  $("dyn-mode").addEventListener("change", (e) => set({ mode: e.target.value }));
  $("dyn-token").addEventListener("input", (e) => selectToken(Number(e.target.value)));
}

// centred moving average over `w` tokens, with a shorter window at the edges
function smooth(xs, w = 3) {
  const h = Math.floor(w / 2);
  return xs.map((_, i) => {
    const win = xs.slice(Math.max(0, i - h), i + h + 1);
    return win.reduce((a, b) => a + b, 0) / win.length;
  });
}

function massiveShift(trace) {
  // per token: [what the massive dims add to the projection, their squared norm] (prompt+response)
  const m = trace.massive;
  if (!m || !m.dims || !m.dims.length) return null;
  const ph = ["prompt", "response"];
  const n = ph.reduce((a, p) => a + ((trace.token_norms || {})[p] || []).length, 0);
  const proj = new Array(n).fill(0), sq = new Array(n).fill(0);
  for (const d of m.dims) {
    const vals = [...(m.values.prompt[d] || []), ...(m.values.response[d] || [])];
    vals.forEach((a, t) => { proj[t] += a * m.vec_components[d]; sq[t] += a * a; });
  }
  return { proj, sq };
}

function traceValues(trace, s, opts) {
  // one series of one variant: prompt + response, transformed as the toggles say
  let y = [...s.prompt, ...s.response];
  let norms = trace.token_norms ? [...(trace.token_norms.prompt || []), ...(trace.token_norms.response || [])] : null;
  const isClean = ((trace.metadata || {}).clean || "none") === "massive";
  const shift = opts.clean !== isClean ? massiveShift(trace) : null;
  if (shift && s === trace.series[0]) {  // the massive values are those of the file's vector
    const sign = opts.clean ? -1 : 1;   // drop them, or add back what the file dropped
    y = y.map((v, i) => v + sign * (shift.proj[i] || 0));
    if (norms) norms = norms.map((v, i) => Math.sqrt(Math.max(0, v * v + sign * (shift.sq[i] || 0))));
  }
  if (opts.cosine && norms && norms.length >= y.length) y = y.map((v, i) => v / (norms[i] || 1));
  if (opts.z) y = window.normalise(y, null, "z", y.slice(0, s.prompt.length));
  if (opts.center && y.length) { const y0 = y[0]; y = y.map((v) => v - y0); }
  if (opts.smooth) y = smooth(y);
  return y;
}

function velocity(s, opts) {
  // from the raw projection: smooth, first difference, smooth again; plotted between tokens
  let y = [...s.prompt, ...s.response];
  if (opts.smooth) y = smooth(y);
  let d = y.slice(1).map((v, i) => v - y[i]);
  if (opts.smooth) d = smooth(d);
  return { x: d.map((_, i) => i + 0.5), y: d };
}

let dyn = null; // the data currently plotted, for token selection without refetching

async function renderDynamics(seq) {
  const exp = get("exp"), variant = get("variant"), trait = get("trait");
  const index = await api(["experiments", exp, "inference", variant]);
  if (stale(seq)) return;
  const setName = fillSelect($("dyn-set"), Object.keys(index.prompt_sets), get("set"));
  if (!setName) throw new Error(`no projections on ${variant}`);
  const ps = index.prompt_sets[setName];
  const id = fillSelect($("dyn-id"), ps.ids.map((i) => [i, ps.notes[i] && ps.notes[i].note ? `${i}: ${ps.notes[i].note}` : i]), get("id"));
  const compare = fillSelect($("dyn-compare"), [["", "(none)"], ...index.other_variants], get("compare"));
  const mode = $("dyn-mode").value = get("mode") === "diff" ? "diff" : "overlay";
  const opts = { smooth: get("smooth") === "1", center: get("center") === "1", cosine: get("cosine") === "1",
                 z: get("z") === "1", clean: get("clean") === "1" };
  $("dyn-smooth").checked = opts.smooth; $("dyn-center").checked = opts.center; $("dyn-cosine").checked = opts.cosine;
  $("dyn-z").checked = opts.z; $("dyn-clean").checked = opts.clean;
  const overlay = (get("overlay") || "").split(",").filter((t) => t && t !== trait && overview.inference.traits.includes(t));
  const obox = $("dyn-overlay");
  obox.innerHTML = "";
  for (const t of overview.inference.traits.filter((x) => x !== trait)) {
    const lab = document.createElement("label"), cb = document.createElement("input");
    cb.type = "checkbox"; cb.value = t; cb.checked = overlay.includes(t);
    cb.addEventListener("change", () => set({ overlay: [...obox.querySelectorAll("input:checked")].map((x) => x.value).join(",") }));
    lab.append(cb, ` ${t}`); obox.appendChild(lab);
  }
  if (!obox.childNodes.length) obox.textContent = "(no other trait has projections)";
  $("dyn-mode").disabled = !compare;
  set({ set: setName, id, compare }, false);
  const data = await api(["experiments", exp, "inference", variant, "projection"],
    { trait, prompt_set: setName, id, compare });
  if (stale(seq)) return;

  const main = data.main, other = data.other;
  const tokens = [...main.tokens.prompt, ...main.tokens.response];
  const nPrompt = main.tokens.prompt.length;
  const traces = [];
  main.series.forEach((s, i) => {
    const y = traceValues(main, s, opts);
    if (other && mode === "diff") {
      const so = other.series.find((o) => o.label === s.label) || other.series[i] || other.series[0];
      const yo = traceValues(other, so, opts);
      const n = Math.min(y.length, yo.length);
      traces.push({ type: "scatter", mode: "lines", name: `${main.variant} − ${other.variant}: ${s.label}`,
        x: [...Array(n).keys()], y: y.slice(0, n).map((v, k) => v - yo[k]), line: { color: COLORS[i] },
        customdata: tokens.slice(0, n), hovertemplate: "%{x} %{customdata}: %{y:.3f}<extra></extra>" });
    } else {
      traces.push({ type: "scatter", mode: "lines", name: `${main.variant}: ${s.label}`,
        x: [...Array(y.length).keys()], y, line: { color: COLORS[i] },
        customdata: tokens, hovertemplate: "%{x} %{customdata}: %{y:.3f}<extra></extra>" });
    }
  });
  if (other && mode === "overlay") {
    const otherTokens = [...other.tokens.prompt, ...other.tokens.response];
    other.series.forEach((s, i) => {
      const y = traceValues(other, s, opts);
      const source = other.replayed_from ? ` (replaying ${other.replayed_from})` : "";
      traces.push({ type: "scatter", mode: "lines", name: `${other.variant}${source}: ${s.label}`,
        x: [...Array(y.length).keys()], y, line: { color: COLORS[(i + 1) % COLORS.length], dash: "dot" },
        customdata: otherTokens, hovertemplate: "%{x} %{customdata}: %{y:.3f}<extra></extra>" });
    });
  }
  // other traits on the same token axis (this variant, this prompt), each normalised alike
  const notes = [];
  for (const [k, t] of overlay.entries()) {
    let extra;
    try { extra = await api(["experiments", exp, "inference", variant, "projection"], { trait: t, prompt_set: setName, id }); }
    catch (err) { notes.push(`${t}: ${err.message}`); continue; }
    if (stale(seq)) return;
    extra.main.series.forEach((s) => {
      const y = traceValues(extra.main, s, opts);
      traces.push({ type: "scatter", mode: "lines", name: `${t}: ${s.label}`, x: [...Array(y.length).keys()], y,
        line: { color: COLORS[(k + 2) % COLORS.length], dash: "dash" },
        customdata: tokens, hovertemplate: "%{x} %{customdata}: %{y:.3f}<extra>" + t + "</extra>" });
    });
  }
  $("dyn-note").textContent = notes.join("; ") + (other ? (data.same_tokens
    ? `${other.variant} read the same tokens (${other.replayed_from ? "replay of " + other.replayed_from + "'s responses" : "identical generations"}).`
    : `${other.variant} generated its own response: tokens align by position only.`) : "");
  const vals = traces.flatMap((t) => t.y);
  const lim = Math.max(0.15, ...vals.map(Math.abs));
  const ylabel = (opts.cosine ? "cosine (proj / ‖h‖)" : "projection on unit vector") + (opts.z ? ", z-scored" : "")
    + (opts.center ? ", centred" : "") + (opts.clean ? ", massive dims dropped" : "");
  dyn = { tokens, nPrompt, main };
  Plotly.react("dyn-plot", traces, {
    title: { text: `${trait} on ${setName}/${id}` + (other ? (mode === "diff" ? ` — ${main.variant} − ${other.variant}` : ` — ${main.variant} vs ${other.variant}`) : "") },
    xaxis: { title: { text: "token (prompt | response)" } }, yaxis: { title: { text: ylabel }, range: vals.length && lim <= 0.15 ? [-0.15, 0.15] : undefined },
    shapes: dynShapes(0), legend: { orientation: "h", y: -0.3 }, margin: { b: 100 },
  }, PLOT_CONFIG);
  $("dyn-plot").removeAllListeners?.("plotly_click");
  $("dyn-plot").on("plotly_click", (ev) => ev.points && ev.points[0] && selectToken(ev.points[0].x));

  const vtraces = main.series.map((s, i) => ({ type: "scatter", mode: "lines", name: `${main.variant}: ${s.label}`,
    ...velocity(s, opts), line: { color: COLORS[i] } }));
  if (other) other.series.forEach((s, i) => vtraces.push({ type: "scatter", mode: "lines",
    name: `${other.variant}: ${s.label}`, ...velocity(s, opts), line: { color: COLORS[(i + 1) % COLORS.length], dash: "dot" } }));
  Plotly.react("dyn-velocity", vtraces, {
    title: { text: "Velocity (first difference of the projection)" },
    xaxis: { title: { text: "token" } }, shapes: [divider(nPrompt)], margin: { t: 40 },
  }, PLOT_CONFIG);

  renderMassive(exp, variant, seq);
  const box = $("dyn-tokens");
  box.innerHTML = "";
  tokens.forEach((t, i) => {
    if (i === nPrompt) { const d = document.createElement("span"); d.className = "divider"; d.title = "response starts"; box.appendChild(d); }
    const el = document.createElement("span");
    el.textContent = t; el.dataset.index = i; el.className = i < nPrompt ? "prompt" : "response";
    el.addEventListener("click", () => selectToken(i));
    box.appendChild(el);
  });
  $("dyn-token").max = Math.max(0, tokens.length - 1);
  const tok = Math.min(Number(get("token") || nPrompt), tokens.length - 1);
  selectToken(Math.max(0, tok));
}

async function renderMassive(exp, variant, seq) {
  // the variant's calibration: for each layer its largest dims (ratio to the layer's median)
  let m;
  try { m = await api(["experiments", exp, "inference", variant, "massive"]); }
  catch (err) { if (!stale(seq)) { Plotly.purge("dyn-massive"); $("dyn-massive-note").textContent = err.message; $("dyn-clean").disabled = true; } return; }
  if (stale(seq)) return;
  if (!m.calibrated) { Plotly.purge("dyn-massive"); $("dyn-massive-note").textContent = m.detail; $("dyn-clean").disabled = true; return; }
  $("dyn-clean").disabled = false;
  const layers = Object.keys(m.largest_by_layer).map(Number).sort((a, b) => a - b);
  const dims = [...new Set(layers.flatMap((l) => m.largest_by_layer[l].map((e) => e.dim)))].sort((a, b) => a - b);
  const z = dims.map((d) => layers.map((l) => { const e = m.largest_by_layer[l].find((x) => x.dim === d); return e ? e.ratio_to_median : null; }));
  Plotly.react("dyn-massive", [{ type: "heatmap", x: layers, y: dims.map((d) => `dim ${d}${m.dims.includes(d) ? " ★" : ""}`), z,
    colorscale: "YlOrRd", colorbar: { title: { text: "mean |h| / median" } },
    hovertemplate: "layer %{x}, %{y}: %{z:.1f}× the median<extra></extra>" }], {
    title: { text: `massive dims of ${variant}: ${m.dims.length ? m.dims.join(", ") : "none"} (★)` },
    xaxis: { title: { text: "layer" }, dtick: 1 }, yaxis: { type: "category" }, margin: { t: 40, l: 80 },
  }, PLOT_CONFIG);
  $("dyn-massive-note").textContent = `${m.criterion.description}; ${m.n_tokens} tokens of ${m.metadata.prompt_set} (${m.file})`;
}

function divider(nPrompt) {
  return { type: "line", xref: "x", yref: "paper", x0: nPrompt - 0.5, x1: nPrompt - 0.5, y0: 0, y1: 1,
    line: { color: "#c33", width: 2 }, name: "prompt | response" };
}
function dynShapes(token) {
  return [divider(dyn.nPrompt), { type: "line", xref: "x", yref: "paper", x0: token, x1: token, y0: 0, y1: 1,
    line: { color: "#c90", width: 1, dash: "dot" }, name: "current token" }];
}

function selectToken(i) {
  if (!dyn) return;
  $("dyn-token").value = i;
  $("dyn-token-label").textContent = `${i}: ${JSON.stringify(dyn.tokens[i] ?? "")}${i < dyn.nPrompt ? " (prompt)" : " (response)"}`;
  for (const el of $("dyn-tokens").querySelectorAll("span[data-index]")) {
    el.classList.toggle("current", Number(el.dataset.index) === i);
  }
  Plotly.relayout("dyn-plot", { shapes: dynShapes(i) });
  set({ token: i }, false);
}

// ---- runs: every run folder, its resolved config, and the diff of two ------------------
function bindRuns() {
  $("runs-all").addEventListener("change", (e) => set({ all: e.target.checked ? "1" : "" }));
}

async function renderRuns(seq) {
  $("variant").disabled = true; $("trait").disabled = true;
  const { runs } = await api(["experiments", get("exp"), "runs"]);
  if (stale(seq)) return;
  const el = $("runs-table");
  el.innerHTML = "";
  const head = el.insertRow();
  for (const h of ["A", "B", "started", "stage", "variant", "model", "trait", "status", "result", "overrides"]) {
    const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
  }
  const a = get("a"), b = get("b"), shown = get("sel") || a;
  for (const r of runs) {
    const tr = el.insertRow();
    tr.dataset.run = r.run;
    if (!r.is_data) tr.classList.add("nodata");
    if (r.run === shown) tr.classList.add("selected");
    for (const side of ["a", "b"]) {
      const td = tr.insertCell();
      const radio = document.createElement("input");
      radio.type = "radio"; radio.name = `runs-${side}`; radio.value = r.run; radio.checked = r.run === get(side);
      radio.disabled = !r.has_snapshot;
      radio.addEventListener("click", (e) => { e.stopPropagation(); set({ [side]: r.run, sel: r.run }); });
      td.appendChild(radio);
    }
    const trait = Array.isArray(r.trait) ? r.trait.join(",") : (r.trait || "");
    for (const cell of [(r.started || "").replace("T", " ").slice(0, 19), r.stage, r.model_variant,
      r.model ? r.model + (r.lora ? " + " + r.lora : "") : "", trait, r.status, r.result, (r.overrides || []).join(" ")]) {
      tr.insertCell().textContent = cell || "";
    }
    tr.addEventListener("click", () => set({ sel: r.run }));
  }
  $("runs-all").checked = get("all") === "1";
  await showConfig($("runs-config"), $("runs-config-run"), shown);
  if (stale(seq)) return;
  if (a && b) {
    try {
      const d = await api(["experiments", get("exp"), "diff"], { a, b, all: get("all") === "1" ? "true" : "" });
      if (stale(seq)) return;
      showText($("runs-diff"), d.text);
    } catch (err) { showText($("runs-diff"), err.message); }
  } else {
    showText($("runs-diff"), "pick a run as A and another as B");
  }
}

init().catch((err) => { showError(err.message); done(); });

// Live chat: a conversation with one model variant (or two, in compare mode), answered token by
// token over Server-Sent Events, with every watched trait's projection plotted as it streams.
// The server picks models and vectors from names (experiment, variant, trait); this script only
// keeps the conversation (a tree: editing a user turn makes a sibling branch) in localStorage,
// its settings in the URL, and plots what the stream sends. Uses app.js's $, get, set, api.
"use strict";

const NORMS = { raw: "raw projection", cosine: "cosine (proj / ‖h‖)", z: "z-score vs own prompt tokens" };
let chatOpts = null;          // GET /api/chat/{exp}
let chatDoc = null;           // the conversation being shown
let chatAbort = [];           // AbortControllers of running streams

// ---- normalisation shared with Trait dynamics -------------------------------------------
function normalise(values, norms, mode, baseline) {
  // baseline: the values z-scores are taken against (a trait's own prompt-token projections)
  if (mode === "cosine") return values.map((v, i) => v / ((norms && norms[i]) || 1));
  if (mode === "z") {
    const b = baseline && baseline.length > 1 ? baseline : values;
    const mu = b.reduce((a, x) => a + x, 0) / b.length;
    const sd = Math.sqrt(b.reduce((a, x) => a + (x - mu) ** 2, 0) / Math.max(1, b.length - 1)) || 1;
    return values.map((v) => (v - mu) / sd);
  }
  return values;
}
window.normalise = normalise;

// ---- the conversation tree --------------------------------------------------------------
function newChat(exp) {
  return { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`, exp,
           nodes: {}, roots: [], sel: {}, saved: null };
}
function storeKey(exp, id) { return `tp_chat:${exp}:${id}`; }
function persist() {
  if (!chatDoc) return;
  try { localStorage.setItem(storeKey(chatDoc.exp, chatDoc.id), JSON.stringify(chatDoc)); } catch (e) { /* full */ }
}
function children(parent) {
  return parent === null ? chatDoc.roots : (chatDoc.nodes[parent].children || []);
}
function path() {
  // user turns from the root down the selected branch
  const out = [];
  let parent = null;
  for (;;) {
    const kids = children(parent);
    if (!kids.length) return out;
    const key = parent === null ? "root" : parent;
    const id = kids[Math.min(chatDoc.sel[key] || 0, kids.length - 1)];
    out.push(chatDoc.nodes[id]);
    parent = id;
  }
}
function addTurn(parent, content) {
  const id = `n${Object.keys(chatDoc.nodes).length + 1}_${Math.random().toString(36).slice(2, 6)}`;
  chatDoc.nodes[id] = { id, parent, content, answers: {}, children: [] };
  const kids = children(parent);
  kids.push(id);
  chatDoc.sel[parent === null ? "root" : parent] = kids.length - 1;
  return chatDoc.nodes[id];
}
function messagesFor(turns, pane) {
  // history of one pane: its own answers (side by side), or pane a's (replay reads a's answer)
  const msgs = [];
  const mode = get("cmode") || "";
  turns.forEach((t, i) => {
    msgs.push({ role: "user", content: t.content });
    if (i < turns.length - 1) {
      const ans = t.answers[mode === "replay" ? "a" : pane] || t.answers.a;
      if (ans && ans.text !== undefined) msgs.push({ role: "assistant", content: ans.text });
    }
  });
  return msgs;
}

// ---- SSE over fetch (POST) --------------------------------------------------------------
async function streamEvents(url, body, onEvent, signal) {
  const resp = await fetch(url, { method: "POST", headers: { "content-type": "application/json" },
                                  body: JSON.stringify(body), signal });
  if (!resp.ok) {
    const err = await resp.json().catch(() => ({}));
    throw new Error(err.detail || `${resp.status} ${resp.statusText}`);
  }
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, cut); buf = buf.slice(cut + 2);
      const data = chunk.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}

// ---- view -------------------------------------------------------------------------------
function bindChat() {
  $("chat-form").addEventListener("submit", (e) => { e.preventDefault(); sendMessage(); });
  $("chat-stop").addEventListener("click", stopChat);
  $("chat-new").addEventListener("click", () => { chatDoc = newChat(get("exp")); persist(); set({ chat: chatDoc.id, saved: "" }); });
  $("chat-save").addEventListener("click", saveChat);
  $("chat-variant").addEventListener("change", (e) => set({ cvariant: e.target.value }));
  $("chat-variant-b").addEventListener("change", (e) => set({ cvariant_b: e.target.value }));
  $("chat-cmode").addEventListener("change", (e) => set({ cmode: e.target.value }));
  $("chat-layer").addEventListener("change", (e) => set({ clayer: e.target.value }));
  $("chat-norm").addEventListener("change", (e) => set({ norm: e.target.value }));
  $("chat-clean").addEventListener("change", (e) => set({ cclean: e.target.checked ? "1" : "" }));
  $("chat-max").addEventListener("change", (e) => set({ cmax: e.target.value }, false));
  $("chat-temp").addEventListener("change", (e) => set({ ctemp: e.target.value }, false));
}

async function renderChat(seq) {
  const exp = get("exp");
  if (!chatOpts || chatOpts.experiment !== exp) chatOpts = await api(["chat", exp]);
  if (stale(seq)) return;
  const names = chatOpts.variants.map((v) => v.name);
  const label = (v) => `${v.name} (${v.model}${v.lora ? " + " + v.lora : ""})`;
  const variant = fillSelect($("chat-variant"), chatOpts.variants.map((v) => [v.name, label(v)]),
    get("cvariant") || chatOpts.application_variant);
  const others = chatOpts.variants.filter((v) => v.name !== variant);
  const cmode = $("chat-cmode").value = ["", "side", "replay"].includes(get("cmode") || "") ? (get("cmode") || "") : "";
  const variantB = fillSelect($("chat-variant-b"), others.map((v) => [v.name, label(v)]),
    get("cvariant_b") || (names.includes("rm_lora") && variant !== "rm_lora" ? "rm_lora" : ""));
  $("chat-variant-b").disabled = !cmode;
  const layers = [...new Set(chatOpts.traits.flatMap((t) => t.layers))].sort((a, b) => a - b);
  const layer = fillSelect($("chat-layer"), [["best", "best vector"], ...layers.map((l) => [String(l), `layer ${l}`])],
    get("clayer") || (chatOpts.default_layer !== null ? String(chatOpts.default_layer) : "best"));
  const norm = fillSelect($("chat-norm"), Object.entries(NORMS), get("norm") || "raw");
  $("chat-clean").checked = get("cclean") === "1";
  $("chat-max").value = get("cmax") || chatOpts.settings.default_max_new_tokens;
  $("chat-max").max = chatOpts.settings.max_new_tokens;
  $("chat-temp").value = get("ctemp") || "0";
  // traits: checkboxes, all watched by default
  const chosen = get("ctraits") ? get("ctraits").split(",") : chatOpts.traits.map((t) => t.trait);
  const box = $("chat-traits");
  box.innerHTML = "";
  for (const t of chatOpts.traits) {
    const lab = document.createElement("label");
    const cb = document.createElement("input");
    cb.type = "checkbox"; cb.value = t.trait; cb.checked = chosen.includes(t.trait);
    cb.addEventListener("change", () => {
      const on = [...box.querySelectorAll("input:checked")].map((x) => x.value);
      set({ ctraits: on.join(",") || "-" });
    });
    lab.append(cb, ` ${t.trait}`); box.appendChild(lab);
  }
  if (!chatOpts.traits.length) box.textContent = `no trait vectors under ${chatOpts.extraction_variant}: run extract first`;
  set({ cvariant: variant, cvariant_b: cmode ? variantB : "", cmode, clayer: layer, norm }, false);
  memoryLine();

  // the conversation: a saved copy from the server (shared link), else localStorage, else new
  if (get("saved") && (!chatDoc || chatDoc.saved !== get("saved"))) {
    const rec = await api(["chat", exp, "saved", get("svariant") || variant, get("saved")]);
    chatDoc = { ...rec.chat, saved: get("saved"), exp };
    persist();
  } else if (!chatDoc || chatDoc.exp !== exp || (get("chat") && chatDoc.id !== get("chat"))) {
    const stored = get("chat") && localStorage.getItem(storeKey(exp, get("chat")));
    chatDoc = stored ? JSON.parse(stored) : newChat(exp);
  }
  set({ chat: chatDoc.id }, false);
  $("chat-pane-b").hidden = !cmode;
  drawChat();
}

function memoryLine() {
  api(["chat", "status"]).then((s) => {
    const res = s.pool.resident.map((r) => `${r.variant} ${(r.bytes / 2 ** 20).toFixed(1)} MiB${r.busy ? " (busy)" : ""}`);
    const est = chatOpts.variants.map((v) => `${v.name} ≈ ${v.estimate_bytes ? (v.estimate_bytes / 2 ** 20).toFixed(1) + " MiB" : "?"}`);
    $("chat-memory").textContent = `resident ${s.pool.resident.length}/${s.pool.max_resident}: ${res.join(", ") || "none"} · weights ${est.join(", ")} · max ${s.settings.max_new_tokens} tokens`;
  }).catch(() => {});
}

function watched() {
  const all = chatOpts.traits.map((t) => t.trait);
  const chosen = get("ctraits") === "-" ? [] : (get("ctraits") ? get("ctraits").split(",") : all);
  const layer = get("clayer");
  return chosen.filter((t) => all.includes(t)).map((trait) => (layer && layer !== "best" ? { trait, layer: Number(layer) } : { trait }));
}

function panes() {
  const a = { pane: "a", variant: get("cvariant") };
  const mode = get("cmode") || "";
  return mode ? [a, { pane: "b", variant: get("cvariant_b"), replay: mode === "replay" }] : [a];
}

function drawChat() {
  const turns = path();
  for (const p of ["a", "b"]) {
    const log = $(`chat-log-${p}`);
    log.innerHTML = "";
    const v = p === "a" ? get("cvariant") : get("cvariant_b");
    const head = document.createElement("div"); head.className = "chat-head";
    head.textContent = p === "a" ? v : `${v}${get("cmode") === "replay" ? ` (reading ${get("cvariant")}'s answers)` : ""}`;
    log.appendChild(head);
    turns.forEach((t) => {
      const u = document.createElement("div"); u.className = "msg user"; u.dataset.node = t.id;
      const kids = children(t.parent);
      if (kids.length > 1 && p === "a") {
        const i = kids.indexOf(t.id);
        const nav = document.createElement("span"); nav.className = "branch";
        const prev = document.createElement("button"); prev.textContent = "◀"; prev.type = "button";
        const next = document.createElement("button"); next.textContent = "▶"; next.type = "button";
        prev.onclick = () => { chatDoc.sel[t.parent === null ? "root" : t.parent] = (i + kids.length - 1) % kids.length; persist(); drawChat(); };
        next.onclick = () => { chatDoc.sel[t.parent === null ? "root" : t.parent] = (i + 1) % kids.length; persist(); drawChat(); };
        nav.append(prev, ` ${i + 1}/${kids.length} `, next); u.appendChild(nav);
      }
      const txt = document.createElement("span"); txt.textContent = t.content; u.appendChild(txt);
      if (p === "a") {
        const edit = document.createElement("button"); edit.type = "button"; edit.className = "edit"; edit.textContent = "edit";
        edit.onclick = () => editTurn(t);
        u.appendChild(edit);
      }
      log.appendChild(u);
      const ans = t.answers[p];
      if (ans) log.appendChild(answerEl(ans));
    });
  }
  plotPanes();
}

function answerEl(ans) {
  const el = document.createElement("div");
  el.className = "msg assistant" + (ans.done ? "" : " streaming");
  (ans.tokens || []).forEach((tok, i) => {
    const s = document.createElement("span"); s.className = "tok"; s.textContent = tok; s.dataset.index = i;
    el.appendChild(s);
  });
  if (ans.error) { const e = document.createElement("div"); e.className = "chat-error"; e.textContent = ans.error; el.appendChild(e); }
  if (ans.done) {
    const m = document.createElement("div"); m.className = "hint";
    m.textContent = `${ans.variant}${ans.replayed_from ? " reading " + ans.replayed_from + "'s tokens" : ""} · ${ans.tokens.length} tokens · ${ans.done.reason}`
      + (ans.done.tokens_per_s ? ` · ${ans.done.tokens_per_s} tokens/s` : "");
    el.appendChild(m);
  }
  return el;
}

// Plotly reads labels as HTML: a token like "</s>" must be escaped to be shown
const esc = (t) => String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function plotPanes() {
  const turns = path();
  const last = turns[turns.length - 1];
  const norm = get("norm") || "raw";
  for (const p of ["a", "b"]) {
    const div = `chat-plot-${p}`;
    const ans = last && last.answers[p];
    if (!ans || !ans.tokens || !ans.proj) { Plotly.purge(div); continue; }
    const traces = Object.keys(ans.proj).map((trait, i) => {
      const y = normalise(ans.proj[trait], ans.norms[trait], norm, (ans.prompt || {}).proj ? ans.prompt.proj[trait] : null);
      const w = (ans.watches || []).find((x) => x.key === trait);
      return { type: "scatter", mode: "lines+markers", name: w ? `${trait} L${w.layer} ${w.method}` : trait,
        x: y.map((_, k) => k), y, customdata: ans.tokens.map(esc), line: { color: COLORS[i % COLORS.length] },
        hovertemplate: "%{x} %{customdata}: %{y:.3f}<extra>" + trait + "</extra>" };
    });
    Plotly.react(div, traces, {
      title: { text: `${ans.variant}${ans.replayed_from ? " reading " + ans.replayed_from : ""}: ${NORMS[norm]} per response token` },
      xaxis: { title: { text: "response token" }, ...(ans.tokens.length <= 48
        ? { tickmode: "array", tickvals: ans.tokens.map((_, k) => k), ticktext: ans.tokens.map(esc), tickangle: -45 } : {}) },
      yaxis: { title: { text: NORMS[norm] } },
      legend: { orientation: "h", y: -0.25 }, margin: { t: 40, b: 80 },
    }, PLOT_CONFIG);
  }
}

function chatBusy(on) {
  document.body.dataset.chat = on ? "streaming" : "idle";
  $("chat-send").disabled = on; $("chat-stop").disabled = !on;
}

function editTurn(turn) {
  const text = prompt("Edit the message (a new branch keeps the old one):", turn.content);
  if (text === null || !text.trim() || text === turn.content) return;
  const node = addTurn(turn.parent, text.trim());
  persist();
  answerTurn(node);
}

function sendMessage() {
  const text = $("chat-input").value.trim();
  if (!text || document.body.dataset.chat === "streaming") return;
  const turns = path();
  const node = addTurn(turns.length ? turns[turns.length - 1].id : null, text);
  $("chat-input").value = "";
  persist();
  answerTurn(node);
}

function request(variant, turns, pane) {
  const max = Number(get("cmax") || chatOpts.settings.default_max_new_tokens);
  return { experiment: get("exp"), variant, traits: watched(), messages: messagesFor(turns, pane),
           max_new_tokens: max, temperature: Number(get("ctemp") || 0),
           clean: get("cclean") === "1" ? "massive" : "none" };
}

async function runStream(url, body, node, pane, variant, extra = {}) {
  const ans = node.answers[pane] = { variant, tokens: [], ids: [], proj: {}, norms: {}, text: "", ...extra };
  const ctl = new AbortController(); chatAbort.push(ctl);
  const status = (m) => { $("chat-status").textContent = `${variant}: ${m}`; };
  try {
    await streamEvents(url, body, (ev) => {
      if (ev.type === "status") status(ev.message + (ev.position > 0 ? ` (position ${ev.position})` : ""));
      else if (ev.type === "prompt") {
        ans.prompt = { tokens: ev.tokens, proj: Object.fromEntries(Object.entries(ev.projections)), norms: ev.token_norms };
        ans.watches = ev.watches;
        for (const t of Object.keys(ev.projections)) { ans.proj[t] = []; ans.norms[t] = []; }
      } else if (ev.type === "token") {
        ans.tokens.push(ev.text); ans.ids.push(ev.id);
        for (const [t, v] of Object.entries(ev.projections)) ans.proj[t].push(v);
        for (const [t, v] of Object.entries(ev.token_norms)) ans.norms[t].push(v);
        drawStreaming(node, pane);
      } else if (ev.type === "done") {
        ans.done = { reason: ev.reason, tokens_per_s: ev.tokens_per_s, seconds: ev.seconds };
        ans.text = ev.response_text !== undefined ? ev.response_text : ans.tokens.join("");
        ans.ids = ev.response_ids;
        status(`done (${ev.reason}${ev.tokens_per_s ? ", " + ev.tokens_per_s + " tokens/s" : ""})`);
      } else if (ev.type === "error") { ans.error = ev.message; status(`error: ${ev.message}`); }
    }, ctl.signal);
  } catch (err) {
    ans.error = err.name === "AbortError" ? "stopped" : err.message;
    if (err.name !== "AbortError") showError(err.message);
    ans.done = ans.done || { reason: err.name === "AbortError" ? "stopped" : "error" };
    ans.text = ans.tokens.join("");
  }
  ans.done = ans.done || { reason: ans.error ? "error" : "ended" };
  return ans;
}

let drawPending = false;
function drawStreaming() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; drawChat(); });
}

async function answerTurn(node) {
  chatBusy(true); showError("");
  const turns = path();
  const ps = panes();
  try {
    const a = ps[0];
    const first = runStream("/api/chat/stream", request(a.variant, turns, "a"), node, "a", a.variant);
    if (ps[1] && !ps[1].replay) {
      await Promise.all([first, runStream("/api/chat/stream", request(ps[1].variant, turns, "b"), node, "b", ps[1].variant)]);
    } else {
      const ans = await first;
      if (ps[1] && ans.ids && ans.ids.length && !ans.error) {
        const body = { ...request(ps[1].variant, turns, "b"), response_ids: ans.ids, response_text: ans.text, source_variant: a.variant };
        await runStream("/api/chat/replay", body, node, "b", ps[1].variant, { replayed_from: a.variant });
      }
    }
  } finally {
    chatAbort = [];
    persist(); drawChat(); chatBusy(false); memoryLine();
    document.body.dataset.answered = String(Number(document.body.dataset.answered || 0) + 1);
  }
}

function stopChat() { for (const c of chatAbort) c.abort(); }

async function saveChat() {
  const variant = get("cvariant");
  const resp = await fetch("/api/chat/save", { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ experiment: get("exp"), variant, chat: { ...chatDoc, saved: null }, id: chatDoc.id }) });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) { showError(body.detail || `${resp.status}`); return; }
  const url = new URL(location.href);
  url.searchParams.set("saved", body.id); url.searchParams.set("svariant", variant);
  $("chat-link").textContent = `saved to ${body.file}: `;
  const a = document.createElement("a"); a.href = url.toString(); a.textContent = "link"; $("chat-link").appendChild(a);
  document.body.dataset.saved = body.file;
}

window.renderChat = renderChat;
window.bindChat = bindChat;

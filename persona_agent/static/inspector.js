// Memory inspector: reads the caller's own memory through the server's /memory routes.
// The token comes from the form or a #token=... fragment (removed from the address bar at once).
// Every value from the server is written with textContent, never parsed as HTML.
"use strict";

const PAGE = 20;
const state = { token: "", offset: 0, history: [], currentVersion: null };
const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.token }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const type = response.headers.get("content-type") || "";
  const body = type.includes("application/json") ? await response.json() : await response.text();
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(response.status + " " + detail);
  }
  return body;
}

function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function fmtPct(value) {
  return value === null || value === undefined ? "–" : (100 * value).toFixed(0) + "%";
}

// --- persona and its history ---------------------------------------------------------------
function renderPersona(data) {
  state.history = data.history;
  state.currentVersion = data.current_version;
  $("whoami").textContent = "Signed in as " + data.user_id + " · " + data.pair_count + " pairs stored";
  const current = data.current;
  $("persona-empty").hidden = Boolean(current);
  $("persona-current").hidden = !current;
  if (current) {
    $("persona-text").textContent = current.text;
    $("persona-meta").textContent =
      "version " + current.version + " · written " + fmtTime(current.created_at) +
      " from " + current.pair_ids.length + " pairs · validation accuracy " + fmtPct(current.val_accuracy) +
      " (before: " + fmtPct(current.baseline_val_accuracy) + ") · " +
      current.verified_reasoning + " verified reasonings · " + current.demo_pair_ids.length + " demos";
  }
  const body = $("history-body");
  body.replaceChildren();
  for (const persona of [...data.history].reverse()) {
    const row = el("tr");
    row.dataset.version = persona.version;
    if (persona.version === data.current_version) row.className = "current";
    row.append(
      el("td", "v" + persona.version + (persona.version === data.current_version ? " (current)" : "")),
      el("td", fmtTime(persona.created_at)),
      el("td", persona.pair_ids.length),
      el("td", fmtPct(persona.val_accuracy)),
      el("td", fmtPct(persona.baseline_val_accuracy)),
      el("td", persona.model),
    );
    const cell = el("td");
    if (persona.version !== data.current_version) {
      const button = el("button", "make current");
      button.type = "button";
      button.addEventListener("click", () => rollback(persona.version));
      cell.append(button);
    }
    row.append(cell);
    body.append(row);
  }
  for (const id of ["diff-from", "diff-to"]) {
    const select = $(id);
    select.replaceChildren(...data.history.map((p) => el("option", "v" + p.version)));
    data.history.forEach((p, i) => { select.options[i].value = String(p.version); });
  }
  if (data.history.length >= 2) {
    $("diff-from").value = String(data.history[data.history.length - 2].version);
    $("diff-to").value = String(data.history[data.history.length - 1].version);
  }
  $("diff-controls").hidden = data.history.length < 2;
  $("diff").replaceChildren();
}

// Word-level diff by longest common subsequence; enough for persona paragraphs.
function diffWords(before, after) {
  const a = before.split(/(\s+)/), b = after.split(/(\s+)/);
  const n = a.length, m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const parts = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { parts.push(["same", a[i]]); i++; j++; }
    else if (j < m && (i >= n || lcs[i][j + 1] >= lcs[i + 1][j])) { parts.push(["ins", b[j]]); j++; }
    else { parts.push(["del", a[i]]); i++; }
  }
  return parts;
}

function showDiff() {
  const from = state.history.find((p) => String(p.version) === $("diff-from").value);
  const to = state.history.find((p) => String(p.version) === $("diff-to").value);
  const box = $("diff");
  box.replaceChildren();
  if (!from || !to) return;
  for (const [kind, text] of diffWords(from.text, to.text)) {
    box.append(kind === "same" ? document.createTextNode(text) : el(kind, text));
  }
}

async function rollback(version) {
  try {
    await api("/memory/persona/rollback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ version }),
    });
    await loadPersona();
  } catch (error) {
    showError("Rollback failed: " + error.message);
  }
}

// --- pairs ---------------------------------------------------------------------------------
function judgeBadges(pair) {
  const cell = el("td");
  if (pair.default_judge_correct === true) cell.append(el("span", "judged right", "badge good"));
  else if (pair.default_judge_correct === false) cell.append(el("span", "judged wrong · informative", "badge bad"));
  else cell.append(el("span", "not judged yet", "badge"));
  if (pair.has_verified_reasoning) {
    const badge = el("span", "verified reasoning", "badge info");
    if (pair.reasoning) badge.title = pair.reasoning;
    cell.append(badge);
  }
  return cell;
}

function renderPairs(data) {
  $("pair-count").textContent = "(" + data.total + ")";
  const body = $("pairs-body");
  body.replaceChildren();
  for (const pair of data.pairs) {
    const row = el("tr");
    row.dataset.pairId = pair.id;
    row.append(
      el("td", fmtTime(pair.created_at)),
      el("td", pair.source),
      el("td", pair.context[pair.context.length - 1].content, "text"),
      el("td", pair.chosen, "text"),
      el("td", pair.rejected, "text"),
      judgeBadges(pair),
    );
    body.append(row);
  }
  if (!data.pairs.length) {
    const row = el("tr");
    const cell = el("td", "No pairs on this page.", "muted");
    cell.colSpan = 6;
    row.append(cell);
    body.append(row);
  }
  $("page-label").textContent = data.pairs.length
    ? (data.offset + 1) + "–" + (data.offset + data.pairs.length)
    : "";
  $("prev").disabled = data.offset === 0;
  $("next").disabled = !data.has_more;
}

// --- demo retrieval ------------------------------------------------------------------------
function renderDemos(data) {
  const list = $("demo-results");
  list.replaceChildren();
  if (!data.demos.length) list.append(el("li", "Nothing stored to retrieve yet.", "muted"));
  for (const demo of data.demos) {
    const item = el("li");
    item.className = "demo";
    item.append(
      el("div", demo.pair.context[demo.pair.context.length - 1].content, "question"),
      el("div", "chosen: " + demo.pair.chosen),
      el("div", "rejected: " + demo.pair.rejected),
      el("div", "score " + demo.score.toFixed(3) + " · similarity " + demo.similarity.toFixed(3) +
        " · informativeness " + demo.informativeness.toFixed(2) + " — " + demo.why, "why"),
    );
    if (demo.reasoning) item.append(el("div", "reasoning: " + demo.reasoning, "why"));
    list.append(item);
  }
}

// --- loading -------------------------------------------------------------------------------
async function loadPersona() {
  renderPersona(await api("/memory/persona"));
}

async function loadPairs() {
  const params = new URLSearchParams({ offset: state.offset, limit: PAGE });
  if ($("source").value) params.set("source", $("source").value);
  renderPairs(await api("/memory/pairs?" + params));
}

async function open(token) {
  state.token = token.trim();
  state.offset = 0;
  showError("");
  // Nothing of the memory shown before stays on screen while another token's memory loads.
  document.body.dataset.loaded = "false";
  $("content").hidden = true;
  $("demo-results").replaceChildren();
  $("diff").replaceChildren();
  if (!state.token) return showError("Paste a token first.");
  try {
    await loadPersona();
    await loadPairs();
    $("content").hidden = false;
    document.body.dataset.loaded = "true";
  } catch (error) {
    $("content").hidden = true;
    showError("Could not open memory: " + error.message);
  }
}

function wire() {
  $("token-form").addEventListener("submit", (event) => { event.preventDefault(); open($("token").value); });
  $("diff-button").addEventListener("click", showDiff);
  $("source").addEventListener("change", () => { state.offset = 0; loadPairs().catch((e) => showError(e.message)); });
  $("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE);
    loadPairs().catch((e) => showError(e.message));
  });
  $("next").addEventListener("click", () => { state.offset += PAGE; loadPairs().catch((e) => showError(e.message)); });
  $("retrieval-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const params = new URLSearchParams({ q: $("query").value, k: $("k").value || "3" });
    try {
      showError("");
      renderDemos(await api("/memory/demos?" + params));
    } catch (error) {
      showError("Retrieval failed: " + error.message);
    }
  });
  $("export").addEventListener("click", async () => {
    try {
      const text = await api("/memory/export");
      const link = el("a");
      link.href = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
      link.download = "persona-agent-export.jsonl";
      link.click();
      URL.revokeObjectURL(link.href);
    } catch (error) {
      showError("Export failed: " + error.message);
    }
  });
  $("forget").addEventListener("click", async () => {
    if (!window.confirm("Delete every pair and persona stored about you? This cannot be undone.")) return;
    try {
      await api("/memory", { method: "DELETE" });
      await open(state.token);
    } catch (error) {
      showError("Delete failed: " + error.message);
    }
  });
  window.addEventListener("hashchange", openFromFragment);
  openFromFragment();
}

// A #token=... fragment opens that user's memory; the token is then removed from the address bar.
function openFromFragment() {
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  if (!token) return;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  $("token").value = token;
  open(token);
}

wire();

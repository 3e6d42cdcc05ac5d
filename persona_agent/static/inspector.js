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
      current.verified_reasoning + " verified reasonings · " + current.demo_pair_ids.length + " demos · " +
      (current.source === "offline" ? "written by the offline reward model"
        : current.source === "archetype" ? "a starting archetype you chose, until one is learnt from your pairs"
        : "written by " + (current.model || "an LLM"));
  }
  $("persona-start").hidden = !data.start;
  if (data.start) {
    $("persona-start").textContent = "Started from the archetype \u201c" + data.start.archetype + "\u201d (chosen " +
      fmtTime(data.start.chosen_at) + "): the offline judge starts from it and your picks move it.";
  }
  drawAccuracyChart(data.history, data.current_version);
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
      el("td", (persona.statement_edits || []).map((e) => e.kind + " “" + e.text + "”: " + e.effect).join("; "), "edits"),
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

// --- charts (plain SVG) ----------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clipText(text, max) {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

// One row per statement: its words, then a bar of the user's weight from a zero axis (green: likes
// it more than most people, orange: less), a black tick at most people's weight, the pairs behind it.
function drawStatementsChart(statements) {
  const svg = $("statements-chart");
  svg.replaceChildren();
  svg.hidden = !statements.length;
  $("statements-empty").hidden = statements.length > 0;
  if (!statements.length) return;
  const width = 820, left = 20, right = 110, row = 50, top = 28;
  const extent = Math.max(0.5, ...statements.flatMap((s) => [Math.abs(s.weight), Math.abs(s.population_weight)]));
  const zero = left + (width - left - right) / 2;
  const scale = (value) => zero + (value / extent) * ((width - left - right) / 2);
  const height = top + row * statements.length + 8;
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.append(
    svgEl("rect", { x: left, y: 6, width: 12, height: 12, class: "liked" }),
    svgEl("text", { x: left + 18, y: 16, class: "note" }, "likes it more than most people"),
    svgEl("rect", { x: left + 220, y: 6, width: 12, height: 12, class: "disliked" }),
    svgEl("text", { x: left + 238, y: 16, class: "note" }, "likes it less than most people"),
    svgEl("line", { x1: left + 440, y1: 6, x2: left + 440, y2: 18, class: "population" }),
    svgEl("text", { x: left + 448, y: 16, class: "note" }, "most people's weight"),
    svgEl("line", { x1: zero, y1: top, x2: zero, y2: height - 4, class: "axis" }),
  );
  statements.forEach((statement, index) => {
    const y = top + index * row;
    const liked = statement.direction === "more";
    const x0 = scale(Math.min(0, statement.weight)), x1 = scale(Math.max(0, statement.weight));
    const group = svgEl("g", { class: "statement", "data-feature": statement.feature, "data-direction": statement.direction });
    const label = svgEl("text", { x: left, y: y + 14, class: "label" }, clipText(statement.text, 110));
    group.append(svgEl("title", {}, statement.text));
    const bar = svgEl("rect", {
      x: x0, y: y + 22, width: Math.max(1, x1 - x0), height: 16, class: "bar " + (liked ? "liked" : "disliked"),
    });
    bar.append(svgEl("title", {}, "weight " + statement.weight.toFixed(2) + " (most people " +
      statement.population_weight.toFixed(2) + ")"));
    const population = scale(statement.population_weight);
    group.append(
      label,
      bar,
      svgEl("line", { x1: population, y1: y + 19, x2: population, y2: y + 41, class: "population" }),
      svgEl("text", { x: width - right + 10, y: y + 35, class: "note pairs" }, statement.n_pairs + " pairs"),
    );
    svg.append(group);
  });
}

// Validation accuracy of every persona version, oldest first; the current version is a ring.
function drawAccuracyChart(history, currentVersion) {
  const svg = $("accuracy-chart");
  svg.replaceChildren();
  svg.hidden = !history.length;
  if (!history.length) return;
  const width = 820, height = 200, left = 48, right = 80, top = 16, bottom = 36;
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  const x = (i) => history.length === 1 ? (left + width - right) / 2 : left + i * (width - left - right) / (history.length - 1);
  const y = (value) => top + (1 - value) * (height - top - bottom);
  for (const tick of [0, 0.5, 1]) {
    svg.append(
      svgEl("line", { x1: left, y1: y(tick), x2: width - right, y2: y(tick), class: tick === 0.5 ? "grid" : "axis" }),
      svgEl("text", { x: left - 8, y: y(tick) + 4, "text-anchor": "end", class: "note" }, (tick * 100) + "%"),
    );
  }
  const measured = history.map((p, i) => [p, i]).filter(([p]) => p.val_accuracy !== null && p.val_accuracy !== undefined);
  if (measured.length > 1) {
    const path = measured.map(([p, i], k) => (k ? "L" : "M") + x(i).toFixed(1) + " " + y(p.val_accuracy).toFixed(1)).join(" ");
    svg.append(svgEl("path", { d: path, class: "line" }));
  }
  history.forEach((persona, i) => {
    const current = persona.version === currentVersion;
    svg.append(svgEl("text", { x: x(i), y: height - 12, "text-anchor": "middle", class: "note" },
      "v" + persona.version + (current ? " (current)" : "")));
    if (persona.val_accuracy === null || persona.val_accuracy === undefined) {
      svg.append(svgEl("text", { x: x(i), y: y(0) - 6, "text-anchor": "middle", class: "note" }, "not measured"));
      return;
    }
    const point = svgEl("circle", {
      cx: x(i), cy: y(persona.val_accuracy), r: current ? 7 : 5, class: "point" + (current ? " current" : ""),
      "data-version": persona.version,
    });
    point.append(svgEl("title", {}, "v" + persona.version + ": " + fmtPct(persona.val_accuracy)));
    svg.append(point, svgEl("text", { x: x(i), y: y(persona.val_accuracy) - 12, "text-anchor": "middle", class: "label" },
      fmtPct(persona.val_accuracy)));
  });
}

// One dot per recent pick, oldest first: filled green when the judge had ranked the pick first.
function drawAgreement(agreement) {
  const text = $("agreement-text");
  const svg = $("agreement-chart");
  svg.replaceChildren();
  if (!agreement.picks) {
    text.textContent = "No picks yet: choose among the drafted replies in chat (/pick N) to measure it.";
    svg.hidden = true;
    return;
  }
  text.textContent = "Of your last " + agreement.picks + " picks, the judge had ranked your pick first " +
    agreement.agreed + " times (" + fmtPct(agreement.rate) + ").";
  svg.hidden = false;
  const step = 30, width = Math.max(220, 20 + step * agreement.recent.length + 120);
  svg.setAttribute("viewBox", "0 0 " + width + " 48");
  svg.style.maxWidth = width + "px";
  agreement.recent.forEach((agreed, i) => {
    const dot = svgEl("circle", { cx: 20 + i * step, cy: 18, r: 10, class: "pick " + (agreed ? "agreed" : "missed") });
    dot.append(svgEl("title", {}, agreed ? "the judge had ranked this pick first" : "the judge had ranked another reply first"));
    svg.append(dot);
  });
  svg.append(svgEl("text", { x: 8, y: 44, class: "note" }, "oldest → newest pick"));
}

function renderLearnt(data) {
  $("learnt-source").textContent = data.statements_from === "persona"
    ? "The current persona's statements, written by the offline reward model from " + data.n_pairs + " pairs."
    : "What the offline reward model measured on your " + data.n_pairs + " newest pairs (beside the persona above).";
  drawStatementsChart(data.statements);
  drawAgreement(data.judge_agreement);
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

// A pair's source and weight in every fit; a preference inferred from what the user did (an edit,
// a regenerate) counts less than a pick and is marked as such.
function sourceCell(pair) {
  const cell = el("td");
  cell.append(el("div", pair.source), el("div", "weight " + pair.weight, "muted"));
  if (pair.inferred) {
    const badge = el("span", "inferred", "badge inferred");
    badge.title = "Inferred from what you did, not a reply you picked: it counts less in every fit.";
    cell.append(badge);
  }
  return cell;
}

// The source filter offers every source the server knows.
function fillSources(sources) {
  const select = $("source");
  if (select.options.length > 1) return;
  for (const source of sources) select.append(el("option", source));
}

function renderPairs(data) {
  fillSources(data.sources);
  $("pair-count").textContent = "(" + data.total + ")";
  const body = $("pairs-body");
  body.replaceChildren();
  for (const pair of data.pairs) {
    const row = el("tr");
    row.dataset.pairId = pair.id;
    row.append(
      el("td", fmtTime(pair.created_at)),
      sourceCell(pair),
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

// --- the persona's statements: pin, unpin, remove, add -------------------------------------
function renderStatements(data) {
  const list = $("statements-list");
  list.replaceChildren();
  for (const item of data.statements) {
    const row = el("li");
    row.dataset.statementId = item.id;
    row.dataset.origin = item.origin;
    row.append(el("span", item.text, "text"));
    if (item.origin !== "synthesized") row.append(el("span", item.origin === "added" ? " yours" : " pinned", "badge"));
    const actions = item.origin === "synthesized" ? ["pin", "remove"] : item.origin === "pinned" ? ["unpin", "remove"] : ["remove"];
    for (const action of actions) {
      const button = el("button", action);
      button.type = "button";
      button.dataset.action = action;
      button.addEventListener("click", () => editStatement(action, item.id));
      row.append(button);
    }
    list.append(row);
  }
  if (!data.statements.length) list.append(el("li", "No statements yet.", "muted"));
}

async function editStatement(action, statement) {
  try {
    showError("");
    await api("/memory/persona/statements", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ action, statement }),
    });
    await loadPersona();
  } catch (error) {
    showError("Could not " + action + " the statement: " + error.message);
  }
}

// --- a new user's start: choose an archetype while the server still offers one --------------
function renderStart(data) {
  $("start-choice").hidden = !data.offered;
  const list = $("archetype-list");
  list.replaceChildren();
  if (!data.offered) return;
  const chosen = data.chosen ? data.chosen.archetype : null;
  for (const archetype of data.archetypes) {
    const item = el("li");
    item.dataset.archetype = archetype.key;
    item.append(
      el("strong", archetype.key),
      el("span", " \u2014 " + archetype.title + " "),
      el("span", "(" + archetype.users + (archetype.users === 1 ? " person" : " people") + ")", "muted"),
    );
    if (archetype.key === chosen) item.append(el("span", "your start", "badge info"));
    const button = el("button", archetype.key === chosen ? "chosen" : "start here");
    button.type = "button";
    button.disabled = archetype.key === chosen;
    button.addEventListener("click", () => chooseStart(archetype.key));
    item.append(button);
    list.append(item);
  }
}

async function chooseStart(key) {
  try {
    showError("");
    await api("/memory/start", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ archetype: key }),
    });
    await loadPersona();
  } catch (error) {
    showError("Could not start from the archetype \u201c" + key + "\u201d: " + error.message);
  }
}

// --- loading -------------------------------------------------------------------------------
async function loadPersona() {
  renderPersona(await api("/memory/persona"));
  renderStart(await api("/memory/start"));
  renderStatements(await api("/memory/persona/statements"));
  renderLearnt(await api("/memory/learnt"));
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
  $("add-statement-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    await editStatement("add", $("new-statement").value);
    if (!$("error").textContent) $("new-statement").value = "";
  });
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

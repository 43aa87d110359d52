/* The audit page: reads /v1/ui/* with the key the user typed (sessionStorage only, sent as a bearer header,
   never in a URL), draws with the DOM (text via textContent only) and uPlot, polls /v1/ui/overview for live
   updates, and calls the API's own write routes (promote, rollback, cancel, remove a document) behind a
   confirmation. */
(function () {
  "use strict";
  const KEY = "seal-ui-key";
  const $ = (id) => document.getElementById(id);
  const state = {
    key: sessionStorage.getItem(KEY), scope: null, overview: null, changed: null, tab: "matrix", timer: null,
    matrix: { view: "promoted", offset: null, docOffset: null, limit: 25, docLimit: 30, data: null, cells: new Map() },
    jobs: { state: "", offset: 0, limit: 50 }, versions: { status: "", offset: 0, limit: 50 },
    docs: { q: "", offset: 0, limit: 50 }, docLines: [], charts: [], timings: {},
  };
  window.sealTimings = state.timings;

  // -- small helpers ----------------------------------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  // replaceChildren() would write null as the text "null": drop empty parts first
  const fill = (el, ...kids) => el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));
  const fmt = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
  const kl = (x) => fmt(x, 4);
  const when = (t) => (t ? new Date(t * 1000).toLocaleString([], { hour12: false }) : "–");
  const secs = (s) => (s === undefined || s === null ? "–" : s < 90 ? s.toFixed(s < 10 ? 1 : 0) + " s" :
    s < 5400 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h");
  const badge = (s, cls) => h("span", { class: "badge " + (cls || s || ""), text: s || "–" });
  function toast(msg, bad) {
    const t = $("toast");
    t.className = "toast" + (bad ? " bad" : "");
    t.textContent = msg;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.textContent = ""; }, bad ? 12000 : 6000);
  }

  class ApiError extends Error {
    constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; this.detail = detail; }
  }
  async function api(path, opts = {}) {
    const headers = { Authorization: "Bearer " + state.key, Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method: opts.method || "GET", headers, cache: "no-store", credentials: "omit",
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      if (r.status === 401 && !opts.keepKey) signOut("The key was refused (401): " + (body && body.detail));
      throw new ApiError(r.status, (body && body.detail) || r.statusText);
    }
    return body;
  }
  const qs = (o) => new URLSearchParams(Object.entries(o).filter(([, v]) => v !== "" && v !== null && v !== undefined)).toString();

  // -- sign in / out ------------------------------------------------------------------------------------------
  function signOut(message) {
    sessionStorage.removeItem(KEY);
    state.key = null;
    clearInterval(state.timer);
    $("main").hidden = true; $("signout").hidden = true; $("login").hidden = false;
    document.querySelector(".skip").setAttribute("href", "#login");  // the skip link targets what is shown
    $("who").textContent = ""; $("live").textContent = "";
    $("login-error").textContent = message || "";
    $("key").value = "";
    $("key").focus();
  }
  async function signIn(key) {
    state.key = key;
    try {
      const who = await api("/v1/ui/whoami", { keepKey: true });
      state.scope = who.scope;
    } catch (e) {
      state.key = null;
      $("login-error").textContent = e.status === 401 ? "This key was not accepted (401)." : "Could not reach the API: " + e.message;
      return false;
    }
    sessionStorage.setItem(KEY, key);
    $("login").hidden = true; $("main").hidden = false; $("signout").hidden = false;
    document.querySelector(".skip").setAttribute("href", "#main");
    $("who").textContent = state.scope === "write" ? "Signed in with a write key: promote, rollback and removing a document are available (each asks first)."
      : "Signed in with a read key: the API will refuse promote, rollback, cancel and removing a document.";
    await start();
    return true;
  }

  // -- summary and live polling ---------------------------------------------------------------------------------
  function renderSummary(o) {
    const prod = o.aliases.prod, latest = o.aliases.latest;
    const running = ["writing_probes", "self_editing", "training", "evaluating"].reduce((a, s) => a + (o.jobs[s] || 0), 0);
    const items = [["prod", prod ? "student-v" + prod : "none"], ["latest", latest ? "student-v" + latest : "none"],
      ["versions", o.versions], ["documents learned", `${o.learned} of ${o.documents}`],
      ["jobs queued / running", `${o.jobs.queued} / ${running}`],
      ["promoted / rejected / failed / duplicate", `${o.jobs.promoted} / ${o.jobs.rejected} / ${o.jobs.failed} / ${o.jobs.duplicate}`],
      ["untouched canary", pct(o.canary_base)],
      ["gate", o.gate.enabled ? `gain ≥ ${o.gate.min_gain}, forgetting ≤ ${o.gate.max_forgetting}` +
        (o.gate.max_canary_drop !== null ? `, canary drop ≤ ${pct(o.gate.max_canary_drop)}` : "") : "off"]];
    fill($("summary"), ...items.map(([k, v]) => h("div", {}, h("span", { class: "k", text: k }), h("span", { class: "v", text: String(v) }))));
    const empty = o.documents === 0 && o.versions === 0;
    $("empty").hidden = !empty;
    $("empty-url").textContent = $("empty-url2").textContent = location.origin;
  }
  async function poll() {
    if (document.visibilityState !== "visible" || !state.key) return;
    let o;
    try { o = await api("/v1/ui/overview"); } catch (e) { $("live").textContent = "Live: cannot reach the API"; return; }
    const sig = JSON.stringify(o.changed);
    $("live").textContent = "Live: checked " + new Date().toLocaleTimeString([], { hour12: false });
    if (sig === state.changed) return;
    const before = state.overview;
    state.overview = o; state.changed = sig;
    renderSummary(o);
    if (before) {
      const newJobs = Object.values(o.jobs).reduce((a, b) => a + b, 0) - Object.values(before.jobs).reduce((a, b) => a + b, 0);
      const newVersions = o.versions - before.versions;
      const parts = [];
      if (newJobs > 0) parts.push(`${newJobs} new job${newJobs > 1 ? "s" : ""}`);
      if (newVersions > 0) parts.push(`${newVersions} new version${newVersions > 1 ? "s" : ""}`);
      $("live").textContent = "Live: updated " + new Date().toLocaleTimeString([], { hour12: false }) + (parts.length ? " (" + parts.join(", ") + ")" : "");
      await renderTab(state.tab, true);
    }
  }
  async function start() {
    const t0 = performance.now();
    const o = await api("/v1/ui/overview");
    state.overview = o; state.changed = JSON.stringify(o.changed);
    renderSummary(o);
    await renderTab(state.tab);
    state.timings.first_render_ms = performance.now() - t0;
    state.timings.since_navigation_ms = performance.now();
    document.body.dataset.loaded = "1";
    clearInterval(state.timer);
    state.timer = setInterval(poll, 1000 * (o.poll_seconds || 5));
  }

  // -- tabs (WAI-ARIA tabs: arrow keys move between tabs) ------------------------------------------------------------
  const TABS = ["matrix", "curves", "jobs", "versions", "documents"];
  function selectTab(name, focus) {
    state.tab = name;
    for (const t of TABS) {
      const tab = $("tab-" + t), on = t === name;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      $("panel-" + t).hidden = !on;
    }
    if (focus) $("tab-" + name).focus();
    return renderTab(name);
  }
  async function renderTab(name, live) {
    const t0 = performance.now();
    document.body.dataset.ready = "";
    try {
      if (name === "matrix") await renderMatrix();
      else if (name === "curves") await renderCurves();
      else if (name === "jobs") await renderJobs();
      else if (name === "versions") await renderVersions();
      else if (name === "documents") await renderDocuments();
    } catch (e) {
      if (e.status !== 401) toast("Could not load " + name + ": " + e.message, true);
    }
    state.timings[name + (live ? "_refresh_ms" : "_ms")] = performance.now() - t0;
    document.body.dataset.ready = name;
  }

  function pager(el, offset, limit, total, what, go) {
    const from = total ? offset + 1 : 0, to = Math.min(total, offset + limit);
    fill(el,
      h("button", { type: "button", disabled: offset <= 0, "aria-label": "Earlier " + what, onclick: () => go(Math.max(0, offset - limit)) }, "‹"),
      h("span", { text: `${what} ${from}–${to} of ${total}` }),
      h("button", { type: "button", disabled: to >= total, "aria-label": "Later " + what, onclick: () => go(offset + limit) }, "›"));
  }

  // -- 1. the forgetting matrix --------------------------------------------------------------------------------------
  // viridis, 9 stops: perceptually even and readable in greyscale
  const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];
  function heat(v) {
    const x = Math.max(0, Math.min(1, v)) * (VIRIDIS.length - 1), i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
    const a = hex(VIRIDIS[i]), b = hex(VIRIDIS[i + 1]);
    return a.map((c, k) => Math.round(c + f * (b[k] - c)));
  }
  const hex = (s) => [1, 3, 5].map((i) => parseInt(s.slice(i, i + 2), 16));
  function lum(rgb) {
    const [r, g, b] = rgb.map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }
  function cellColours(v) {
    const rgb = heat(v), L = lum(rgb);
    const black = (L + 0.05) / 0.05, white = 1.05 / (L + 0.05);
    return { background: `rgb(${rgb.join(",")})`, color: black >= white ? "#000" : "#fff" };
  }
  function renderLegend() {
    const stops = [0, 0.25, 0.5, 0.75, 1];
    fill($("legend"), h("span", { text: "accuracy" }),
      ...stops.map((s) => { const c = cellColours(s); const sw = h("span", { class: "sw" }); sw.style.background = c.background; return h("span", {}, sw, " " + s); }),
      h("span", { text: "· blank: not learned yet or not measured" }));
  }

  async function renderMatrix() {
    const m = state.matrix;
    const tail = m.offset === null;
    const d = await api("/v1/ui/matrix?" + qs({ view: m.view, limit: m.limit, doc_limit: m.docLimit,
      offset: tail ? 0 : m.offset, doc_offset: tail ? 0 : m.docOffset, tail: tail ? "true" : "" }));
    m.data = d;
    m.cells = new Map();  // cell details (the versions' replies) are fetched on hover, once per drawing
    if (tail) { m.offset = d.offset; m.docOffset = d.doc_offset; }
    renderLegend();
    pager($("pager-rows"), d.offset, d.limit, d.total_versions, "versions", (o) => { m.offset = o; renderTab("matrix"); });
    pager($("pager-cols"), d.doc_offset, d.doc_limit, d.total_documents, "documents", (o) => { m.docOffset = o; renderTab("matrix"); });
    const wrap = $("heat-wrap");
    if (!d.rows.length) {
      fill(wrap, h("p", { class: "hint", text: m.view === "promoted"
        ? "No promoted version has been measured yet. Rejected candidates show with the box above ticked."
        : "No version has been measured yet." }));
      return;
    }
    const head = h("tr", {}, h("th", { scope: "col", text: "version" }),
      ...d.documents.map((doc, j) => h("th", { scope: "col", "data-col": j },
        h("button", { type: "button", class: "link doc", title: `${doc.title} (learned in ${doc.learned_in ? "student-v" + doc.learned_in : "no version"}): plot its line in Curves`,
          onclick: () => addDocLine(doc.id, doc.title) }, doc.title))));
    const rows = [];
    if (d.base) rows.push(rowEl({ version: 0, name: "untouched model", status: "base", cells: d.base, aliases: [] }, d, -1));
    d.rows.forEach((r, i) => rows.push(rowEl(r, d, i)));
    const table = h("table", { class: "heat", id: "heatmap", "aria-label": "Probe accuracy per version (rows) and document (columns)",
      "aria-describedby": "matrix-hint" }, h("thead", {}, head), h("tbody", {}, rows));
    table.addEventListener("keydown", cellKeys);
    table.addEventListener("mouseover", (e) => { const td = e.target.closest("td"); if (td) showCell(td); });
    table.addEventListener("mouseleave", hideCell);
    table.addEventListener("focusin", (e) => { const td = e.target.closest("td"); if (td) showCell(td); });
    table.addEventListener("focusout", hideCell);
    fill(wrap, table);
    const first = table.querySelector("tbody td");
    if (first) first.tabIndex = 0;
  }
  function rowEl(r, d, i) {
    const label = h("th", { scope: "row" }, r.version ? r.name.replace("student-", "") : r.name, " ",
      r.status && r.status !== "promoted" && r.status !== "base" ? badge(r.status) : null,
      ...r.aliases.map((a) => [" ", badge(a, "alias")]));
    if (r.reason) label.title = r.reason;
    const cells = r.cells.map((c, j) => {
      const td = h("td", { tabindex: "-1", dataset: { row: String(i), col: String(j) } });
      if (c && c.value !== null) {
        const col = cellColours(c.value);
        td.style.background = col.background; td.style.color = col.color;
        td.textContent = fmt(c.value);
      } else td.className = "na";
      return td;
    });
    return h("tr", { class: r.status || "" }, label, cells);
  }
  function cellKeys(e) {
    const td = e.target.closest("td");
    if (!td) return;
    if (e.key === "Escape") { hideCell(); return; }
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    if (!(e.key in moves)) return;
    e.preventDefault();
    const tr = td.parentElement, rows = [...tr.parentElement.children];
    const ri = rows.indexOf(tr) + moves[e.key][0], ci = [...tr.children].indexOf(td) + moves[e.key][1];
    if (ri < 0 || ri >= rows.length || ci < 1 || ci >= tr.children.length) return;
    const next = rows[ri].children[ci];
    td.tabIndex = -1; next.tabIndex = 0; next.focus();
  }
  function showCell(td) {
    const d = state.matrix.data, i = Number(td.dataset.row), j = Number(td.dataset.col);
    const doc = d.documents[j], row = i < 0 ? { name: "untouched model", version: 0, status: "base", cells: d.base } : d.rows[i];
    const c = row.cells[j];
    const box = $("cell-info");
    const key = row.version + "/" + doc.id, known = state.matrix.cells.get(key);
    box.dataset.cell = key;
    drawCell(box, doc, row, c, known && known.probes ? known : null);
    box.hidden = false;
    placeCell(box, td);
    if (!c || c.value === null || known) return;
    // the version's own replies: one small read per cell, kept until the matrix is drawn again
    state.matrix.cells.set(key, {});
    api(`/v1/ui/cells/${row.version}/${encodeURIComponent(doc.id)}`).then((detail) => {
      state.matrix.cells.set(key, detail);
      if (box.dataset.cell === key && !box.hidden) { drawCell(box, doc, row, c, detail); placeCell(box, td); }
    }).catch(() => state.matrix.cells.delete(key));
  }
  function drawCell(box, doc, row, c, detail) {
    const probes = detail ? detail.probes : doc.probes.map((p) => Object.assign({ reply: undefined }, p));
    const replies = detail && detail.answers_recorded;
    const measured = c && c.value !== null;
    fill(box,
      h("h3", { text: doc.title }),
      h("p", {}, h("strong", { text: row.version ? row.name : "untouched model" }), row.status && row.status !== "base" ? [" ", badge(row.status)] : null,
        ": ", measured ? `${fmt(c.value)} (${c.correct} of ${c.total} probes right)` : "not learned yet or not measured"),
      row.reason ? h("p", { text: "Gate: " + row.reason }) : null,
      h("p", { text: doc.learned_in ? `Learned in student-v${doc.learned_in}.` : "Not learned by any promoted version." }),
      probes.length ? h("ol", { class: "probes" }, probes.map((p) => h("li", {},
        h("div", {}, p.question, " ", h("span", { class: "ref" }, "reference: ", h("em", { text: p.answer })), p.source === "teacher" ? " (teacher-written probe)" : ""),
        typeof p.reply === "string" ? h("div", { class: "reply" },
          h("span", { class: "mark " + (p.correct ? "right" : "wrong"), text: p.correct ? "✓ right" : "✗ wrong" }), " ",
          row.version ? "reply: " : "untouched model's reply: ", h("q", { text: p.reply.trim() || "(empty reply)" })) : null))) : h("p", { text: "No probes." }),
      !measured ? null : detail === null ? h("p", { class: "note", text: "Loading this version's replies…" })
        : replies ? h("p", { class: "note", text: "Replies as the monitor graded them when it measured this version (right: the reference answer is in the reply)." })
          : h("p", { class: "note", text: "This measurement kept the figure only (made before replies were recorded): the reference answers are shown." }));
  }
  function placeCell(box, td) {
    const rc = td.getBoundingClientRect();
    const x = Math.min(window.innerWidth - 470, rc.right + 8), y = Math.min(window.innerHeight - box.offsetHeight - 8, rc.top);
    box.style.left = Math.max(4, x) + "px"; box.style.top = Math.max(4, y) + "px";
  }
  function hideCell() { $("cell-info").hidden = true; }

  // -- 2. curves ------------------------------------------------------------------------------------------------------
  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
  function chart(target, title, xLabel, series, data, axes, scales) {
    const wrap = h("figure", {});
    const plotEl = h("div", { "aria-hidden": "true" });
    const table = h("details", {}, h("summary", { text: "Data table: " + title }));
    table.addEventListener("toggle", () => {
      if (!table.open || table.querySelector("table")) return;
      table.append(h("table", { class: "grid" }, h("thead", {}, h("tr", {}, h("th", { scope: "col", text: xLabel }), series.map((s) => h("th", { scope: "col", text: s.label })))),
        h("tbody", {}, data[0].map((x, k) => h("tr", {}, h("th", { scope: "row", text: String(x) }), series.map((s, j) => h("td", { class: "num", text: data[j + 1][k] === null ? "–" : s.fmt(data[j + 1][k]) })))))));
    });
    wrap.append(h("figcaption", { text: title }), plotEl, table);
    target.append(wrap);
    if (!window.uPlot || !data[0].length) {
      plotEl.append(h("p", { class: "hint", text: data[0].length ? "(chart library not loaded)" : "Nothing to plot yet." }));
      return;
    }
    const width = Math.max(420, Math.min(760, wrap.clientWidth || 560));
    const u = new uPlot({ width, height: 260, scales: Object.assign({ x: { time: false } }, scales || {}),
      series: [{ label: xLabel }, ...series.map((s, j) => ({ label: s.label, stroke: s.colour || COLOURS[j], width: 2, scale: s.scale || "y",
        dash: s.dash, spanGaps: true, points: { show: data[0].length < 60 }, value: (u, v) => (v === null ? "–" : s.fmt(v)) }))],
      axes: axes || [{ label: xLabel }, {}] }, data, plotEl);
    state.charts.push(u);
  }
  async function renderCurves() {
    const c = await api("/v1/ui/curves");
    state.charts.forEach((u) => u.destroy()); state.charts = [];
    fill($("charts"));
    const v = c.versions;
    const base = c.base_avg === null ? null : v.map(() => c.base_avg);
    chart($("charts"), "Average accuracy and backward transfer per promoted version", "version",
      [{ label: "average accuracy", fmt }, { label: "BWT", fmt }, ...(base ? [{ label: "untouched model", fmt, dash: [6, 4], colour: "#666" }] : [])],
      [v, c.avg_accuracy, c.bwt, ...(base ? [base] : [])], [{ label: "student version" }, { label: "accuracy / BWT" }]);
    const cb = c.canary_base === null ? null : v.map(() => 100 * c.canary_base);
    chart($("charts"), "General ability: canary accuracy and drift per promoted version", "version",
      [{ label: "canary (%)", fmt: (x) => x.toFixed(1) }, ...(cb ? [{ label: "untouched canary (%)", fmt: (x) => x.toFixed(1), dash: [6, 4], colour: "#666" }] : []),
        { label: "drift KL (nats/token)", fmt: kl, scale: "kl", colour: "#d62728" }],
      [v, c.canary.map((x) => (x === null ? null : 100 * x)), ...(cb ? [cb] : []), c.drift],
      [{ label: "student version" }, { label: "canary %" }, { scale: "kl", side: 1, label: "drift KL", grid: { show: false } }],
      { y: { range: [0, 105] }, kl: { range: (u, mn, mx) => [0, Math.max(mx || 0, 1e-4) * 1.1] } });
    const ages = Object.keys(c.retention_by_age).map(Number).sort((a, b) => a - b);
    chart($("charts"), "Retention by age (updates since a document was learned)", "age",
      [{ label: "mean probe accuracy", fmt }], [ages, ages.map((a) => c.retention_by_age[a])],
      [{ label: "updates since learned" }, { label: "accuracy" }], { y: { range: [0, 1] } });
    await renderDocLines();
  }
  function addDocLine(id, title) {
    if (!state.docLines.some((d) => d.id === id)) state.docLines.push({ id, title });
    if (state.docLines.length > COLOURS.length) state.docLines.shift();
    toast(`Added "${title}" to Curves`);
    return selectTab("curves");
  }
  async function renderDocLines() {
    const list = $("doc-lines-list"), el = $("doc-chart");
    fill(list, ...state.docLines.map((d, j) => {
      const sw = h("span", { class: "swatch" }); sw.style.background = COLOURS[j];
      return h("li", {}, sw, d.title, " ", h("button", { type: "button", class: "link", "aria-label": "Remove the line of " + d.title,
        onclick: () => { state.docLines = state.docLines.filter((x) => x.id !== d.id); renderDocLines(); } }, "×"));
    }));
    fill(el);
    if (!state.docLines.length) return;
    const docs = await Promise.all(state.docLines.map((d) => api("/v1/ui/documents/" + encodeURIComponent(d.id))));
    const versions = [...new Set(docs.flatMap((d) => d.accuracy.filter((a) => a.status === "promoted").map((a) => a.version)))].sort((a, b) => a - b);
    const data = [versions, ...docs.map((d) => { const m = new Map(d.accuracy.filter((a) => a.status === "promoted").map((a) => [a.version, a.value])); return versions.map((v) => (m.has(v) ? m.get(v) : null)); })];
    chart(el, "Accuracy of the chosen documents per promoted version", "version", docs.map((d) => ({ label: d.title, fmt })), data,
      [{ label: "student version" }, { label: "probe accuracy" }], { y: { range: [0, 1] } });
  }

  // -- 3. updates and jobs --------------------------------------------------------------------------------------------
  const STAGES = [["queued", "queued"], ["writing_probes", "probes"], ["self_editing", "self-edit"], ["training", "training"], ["evaluating", "evaluating"]];
  async function renderJobs() {
    const s = state.jobs;
    const d = await api("/v1/ui/jobs?" + qs({ state: s.state, limit: s.limit, offset: s.offset }));
    pager($("pager-jobs"), d.offset, d.limit, d.total, "jobs", (o) => { s.offset = o; renderTab("jobs"); });
    fill($("stage-legend"), ...STAGES.map(([k, label]) => h("span", {}, h("i", { class: "stage-" + k }), label)));
    if (!d.jobs.length) { fill($("jobs-wrap"), h("p", { class: "hint", text: s.state ? `No ${s.state} jobs.` : "No jobs yet: documents become jobs when they are posted." })); return; }
    const longest = Math.max(1, ...d.jobs.map((j) => Object.values(j.stages).reduce((a, b) => a + b, 0)));
    const rows = d.jobs.map((j) => {
      const r = j.result || {};
      const total = Object.values(j.stages).reduce((a, b) => a + b, 0);
      const bar = h("div", { class: "bar", role: "img", "aria-label": "stage durations: " + STAGES.filter(([k]) => j.stages[k]).map(([k, l]) => `${l} ${secs(j.stages[k])}`).join(", ") },
        STAGES.filter(([k]) => j.stages[k]).map(([k, l]) => { const sp = h("span", { class: "stage-" + k, title: `${l}: ${secs(j.stages[k])}` }); sp.style.width = (100 * j.stages[k] / longest) + "%"; return sp; }));
      const decision = j.state === "promoted" || j.state === "rejected"
        ? [badge(j.state), r.name ? " " + r.name : "", r.reason ? h("div", { class: "reason", text: r.reason }) : null,
          r.attempts && r.attempts.length ? h("div", { class: "stages-text", text: `${r.attempts.length + 1} tries` }) : null]
        : [badge(j.state), j.error ? h("div", { class: "reason", text: j.error }) : null];
      const running = !["promoted", "rejected", "failed", "cancelled"].includes(j.state);
      return h("tr", { "data-job": j.id },
        h("td", { class: "num", text: when(j.created_at) }),
        h("td", { text: j.title }),
        h("td", {}, bar, h("div", { class: "stages-text", text: `total ${secs(total)}` })),
        h("td", { class: "num", text: fmt(r.gain) }), h("td", { class: "num", text: fmt(r.forgetting) }),
        h("td", { class: "num", text: r.canary_drop === undefined || r.canary_drop === null ? "–" : (100 * r.canary_drop).toFixed(1) + " pts" }),
        h("td", { class: "reason" }, decision),
        h("td", {}, h("button", { type: "button", "aria-label": "Events of job " + j.title, onclick: () => showEvents(j.id) }, "Events"),
          running ? [" ", h("button", { type: "button", onclick: () => cancelJob(j) }, "Cancel…")] : null));
    });
    fill($("jobs-wrap"), h("table", { class: "grid", id: "jobs-table", "aria-label": "Jobs, newest first" },
      h("thead", {}, h("tr", {}, ["created", "document", "stages", "gain", "forgetting", "canary drop", "gate decision and reason", "actions"].map((c) => h("th", { scope: "col", text: c })))),
      h("tbody", {}, rows)));
  }
  async function showEvents(id) {
    const j = await api("/v1/jobs/" + encodeURIComponent(id));
    const box = $("job-events");
    box.hidden = false;
    fill(box, h("h3", { text: `Events of ${j.title} (${j.id})` }),
      h("ol", {}, j.events.map((e) => h("li", {}, h("span", { class: "stages-text", text: when(e.at) + " " }), badge(e.state), e.message ? " " + e.message : ""))),
      j.error ? h("p", { class: "error", text: j.error }) : null);
    box.focus && box.scrollIntoView({ block: "nearest" });
  }

  // -- 4. versions and lineage ------------------------------------------------------------------------------------------
  async function renderVersions() {
    const s = state.versions;
    const d = await api("/v1/ui/versions?" + qs({ status: s.status, limit: s.limit, offset: s.offset }));
    pager($("pager-versions"), d.offset, d.limit, d.total, "versions", (o) => { s.offset = o; renderTab("versions"); });
    fill($("aliases"), ...Object.entries(d.aliases).map(([a, v]) => h("span", {}, badge(a, "alias"), ` student-v${v} `)));
    $("rollback").disabled = !d.aliases.prod;
    if (!d.versions.length) { fill($("versions-wrap"), h("p", { class: "hint", text: "No versions yet." })); return; }
    const rows = d.versions.map((v) => h("tr", { "data-version": String(v.version) },
      h("th", { scope: "row" }, h("button", { type: "button", class: "link", onclick: () => showVersion(v.version) }, v.name)),
      h("td", {}, v.aliases.map((a) => [badge(a, "alias"), " "])),
      h("td", { text: v.kind }), h("td", {}, v.status ? badge(v.status) : "–"),
      h("td", {}, v.parent ? h("button", { type: "button", class: "link", onclick: () => showVersion(v.parent) }, "student-v" + v.parent) : "–"),
      h("td", { text: v.document ? v.document.title : v.note || "" }),
      h("td", { class: "num", text: v.documents === null ? "–" : String(v.documents) }),
      h("td", { class: "num", text: pct(v.canary) }), h("td", { class: "num", text: kl(v.drift) }),
      h("td", { class: "reason", text: v.reason || "" }),
      h("td", {}, v.missing ? "manifest missing" : h("button", { type: "button", disabled: v.aliases.includes("prod"),
        "aria-label": `Promote ${v.name} to prod`, onclick: () => promote(v) }, "Promote…"))));
    fill($("versions-wrap"), h("table", { class: "grid", id: "versions-table", "aria-label": "Versions, newest first" },
      h("thead", {}, h("tr", {}, ["version", "aliases", "made by", "status", "parent", "document or note", "documents", "canary", "drift", "gate reason", "actions"].map((c) => h("th", { scope: "col", text: c })))),
      h("tbody", {}, rows)));
  }
  async function showVersion(n) {
    const v = await api("/v1/ui/versions/" + n);
    const box = $("version-detail");
    box.hidden = false;
    const r = v.result || {};
    fill(box, h("h3", { text: `${v.name}: ${v.kind}${v.status ? ", " + v.status : ""}` }),
      h("p", { text: `${v.note || ""}${v.parent ? ` · parent student-v${v.parent}` : ""} · created ${when(v.created_at)}` }),
      v.reason ? h("p", { text: "Gate: " + v.reason }) : null,
      r.before !== undefined ? h("p", { text: `Probe accuracy ${fmt(r.before)} → ${fmt(r.after)}, forgetting ${fmt(r.forgetting)}, canary ${pct(r.canary)} (untouched ${pct(r.canary_base)}), drift ${kl(r.drift)}` }) : null,
      r.attempts ? h("p", { text: "Earlier tries: " + r.attempts.map((a) => `student-v${a.version}: ${a.reason}`).join("; ") }) : null,
      h("p", { text: `${v.documents} documents in ${v.adapters.length} adapters; ${v.measured_documents} measured here (mean ${fmt(v.measured_mean)}).` }),
      h("ul", {}, v.adapters.map((a) => h("li", {}, `${a.id} (${a.kind}, rank ${a.rank}${a.merged ? ", merged into the base" : ""}): `,
        a.documents.slice(0, 12).map((d) => d.title).join("; ") + (a.documents.length > 12 ? `; and ${a.documents.length - 12} more` : "")))),
      v.canary_misses.length ? [h("h4", { text: "Canary questions this version missed (its replies)" }),
        h("ul", {}, v.canary_misses.map((m) => h("li", {}, m.question, " → ", h("em", { text: m.reply }))))] : null);
  }

  // -- 5. documents and provenance -----------------------------------------------------------------------------------------
  async function renderDocuments() {
    const s = state.docs;
    const d = await api("/v1/ui/documents?" + qs({ q: s.q, limit: s.limit, offset: s.offset }));
    pager($("pager-docs"), d.offset, d.limit, d.total, "documents", (o) => { s.offset = o; renderTab("documents"); });
    if (!d.documents.length) { fill($("docs-wrap"), h("p", { class: "hint", text: s.q ? "No title matches." : "No documents yet." })); return; }
    const rows = d.documents.map((x) => h("tr", { "data-doc": x.id },
      h("th", { scope: "row" }, h("button", { type: "button", class: "link", onclick: () => showDocument(x.id) }, x.title)),
      h("td", { text: x.learned_in ? "student-v" + x.learned_in : "not learned" }),
      h("td", { text: x.in_prod ? "yes" : "no" }),
      h("td", { class: "num", text: x.current === null ? "–" : `${fmt(x.current)} (v${x.current_version})` }),
      h("td", { class: "num", text: fmt(x.base) }), h("td", { class: "num", text: String(x.jobs) }),
      h("td", {}, h("button", { type: "button", "aria-label": "Plot the accuracy of " + x.title, onclick: () => addDocLine(x.id, x.title) }, "Plot"),
        x.in_prod ? [" ", h("button", { type: "button", "aria-label": `Remove ${x.title} from the student`, onclick: () => removeDocument(x) }, "Remove…")] : null)));
    fill($("docs-wrap"), h("table", { class: "grid", id: "docs-table", "aria-label": "Documents and their provenance" },
      h("thead", {}, h("tr", {}, ["title", "learned in", "in prod", `accuracy now (prod student-v${d.prod || "–"})`, "untouched model", "jobs", "actions"].map((c) => h("th", { scope: "col", text: c })))),
      h("tbody", {}, rows)));
  }
  async function showDocument(id, removal) {
    const d = await api("/v1/ui/documents/" + encodeURIComponent(id));
    const box = $("doc-detail");
    box.hidden = false;
    const measured = d.accuracy.filter((a) => a.status !== "base");
    fill(box, h("h3", { text: d.title }),
      h("p", { text: `${d.id} · ${d.learned_in ? "learned in student-v" + d.learned_in : "not learned"} · ${d.in_prod ? "in prod" : "not in prod"}` }),
      h("h4", { text: "Probes (reference answers)" }),
      h("ol", {}, d.probes.map((p) => h("li", {}, p.question, " → ", h("em", { text: p.answer })))),
      h("h4", { text: `Measured on ${measured.length} versions` }),
      h("p", { text: measured.slice(-20).map((a) => `v${a.version}${a.status && a.status !== "promoted" ? " (" + a.status + ")" : ""}: ${fmt(a.value)}`).join(" · ") + (measured.length > 20 ? " (latest 20)" : "") }),
      h("p", { text: "Jobs: " + (d.jobs.map((j) => `${j.id} ${j.state}`).join(", ") || "none") }),
      h("div", { class: "buttons-row" }, h("button", { type: "button", onclick: () => addDocLine(d.id, d.title) }, "Plot its accuracy"),
        d.in_prod ? [" ", h("button", { type: "button", onclick: () => removeDocument(d) }, "Remove from the student…")] : null),
      removal ? [h("h4", { text: `Removed: prod ${removal.previous} → ${removal.name}; probe accuracy before → after` }),
        h("ul", { id: "removal" }, Object.values(removal.accuracy || {}).map((a) => h("li", {}, a.title + (a.removed ? " (removed)" : "") + `: ${fmt(a.before)} → ${fmt(a.after)}`)))] : null);
    if (removal) box.scrollIntoView({ block: "nearest" });
  }

  // -- 6. write actions: the API's own routes, each behind a confirmation --------------------------------------------------
  function confirmAction(title, text) {
    const dlg = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text + (state.scope !== "write" ? " Your key is a read key: the API will refuse this." : "");
    return new Promise((resolve) => {
      dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
      dlg.returnValue = "cancel";
      dlg.showModal();
      $("confirm-cancel").focus();
    });
  }
  async function write(path, body, done) {
    try {
      const r = await api(path, { method: "POST", body });
      toast(done(r));
      state.changed = null;
      await poll();
      await renderTab(state.tab, true);
      return r;
    } catch (e) {
      toast(`Refused (${e.status}): ${e.detail}`, true);
      return null;
    }
  }
  async function promote(v) {
    if (!(await confirmAction(`Promote ${v.name} to prod?`, `prod moves from student-v${state.overview.aliases.prod || "–"} to ${v.name}; queries for seal-student@prod are answered by it from the next request.`))) return;
    await write(`/v1/adapters/${encodeURIComponent(v.name)}/promote`, { alias: "prod" }, (r) => `prod → ${r.name} (${r.documents} documents)`);
  }
  async function rollback() {
    if (!(await confirmAction("Roll back prod?", `prod (student-v${state.overview.aliases.prod}) goes back to the previous promoted version that knows different documents.`))) return;
    await write("/v1/adapters/rollback", {}, (r) => `prod rolled back to ${r.name}`);
  }
  async function removeDocument(d) {
    if (!(await confirmAction(`Remove "${d.title}" from the student?`, "A new version without this document's adapter is committed and promoted to prod (status removed); "
      + "every learned document's probes are measured before and after, which can take a while. The document and its history stay on record; rollback brings it back."))) return;
    toast(`Removing "${d.title}": measuring the learned documents before and after…`);
    const r = await write(`/v1/documents/${encodeURIComponent(d.id)}/remove`, undefined, (r) => {
      const own = r.accuracy && r.accuracy[r.document];
      return `Removed "${r.title}": prod → ${r.name}` + (own ? ` (its probes ${fmt(own.before)} → ${fmt(own.after)})` : "");
    });
    if (r) await showDocument(d.id, r);  // the document as it is now, with what changed for every learned one
  }
  async function cancelJob(j) {
    if (!(await confirmAction(`Cancel the job for "${j.title}"?`, "A queued job is cancelled now; a running one stops at its next stage boundary."))) return;
    await write(`/v1/jobs/${encodeURIComponent(j.id)}/cancel`, undefined, (r) => `job ${r.id}: ${r.state}${r.cancel_requested ? " (cancel requested)" : ""}`);
  }

  // -- wiring ------------------------------------------------------------------------------------------------------------------
  function wire() {
    $("login-form").addEventListener("submit", (e) => { e.preventDefault(); const k = $("key").value.trim(); if (k) signIn(k); else $("login-error").textContent = "Type a key first."; });
    $("signout").addEventListener("click", () => signOut("Key forgotten."));
    for (const t of TABS) $("tab-" + t).addEventListener("click", () => selectTab(t));
    document.querySelector("[role=tablist]").addEventListener("keydown", (e) => {
      const i = TABS.indexOf(state.tab);
      const to = { ArrowRight: (i + 1) % TABS.length, ArrowLeft: (i + TABS.length - 1) % TABS.length, Home: 0, End: TABS.length - 1 }[e.key];
      if (to === undefined) return;
      e.preventDefault();
      selectTab(TABS[to], true);
    });
    $("show-all").addEventListener("change", (e) => { const m = state.matrix; m.view = e.target.checked ? "all" : "promoted"; m.offset = m.docOffset = null; renderTab("matrix"); });
    $("job-state").addEventListener("change", (e) => { state.jobs.state = e.target.value; state.jobs.offset = 0; renderTab("jobs"); });
    $("version-status").addEventListener("change", (e) => { state.versions.status = e.target.value; state.versions.offset = 0; renderTab("versions"); });
    let typing;
    $("doc-search").addEventListener("input", (e) => { clearTimeout(typing); typing = setTimeout(() => { state.docs.q = e.target.value.trim(); state.docs.offset = 0; renderTab("documents"); }, 250); });
    $("rollback").addEventListener("click", rollback);
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") hideCell(); });
    document.addEventListener("visibilitychange", poll);
  }

  wire();
  if (state.key) signIn(state.key).then((ok) => { if (!ok) signOut("The saved key was not accepted."); });
  else signOut("");
})();

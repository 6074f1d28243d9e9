/* vecshard dashboard: plain JavaScript, no build step. Every value from the server is put into the
   page as text (textContent), never as HTML. */
"use strict";

const state = { session: null, timer: null, charts: [] };

// -- helpers ------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, body) {
  const options = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.headers["X-Vecshard-UI"] = "1";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = { error: response.statusText };
  }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || response.statusText, data && data.code);
  return data;
}

function bytes(n) {
  n = Number(n || 0);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function num(n) { return Number(n || 0).toLocaleString("en-US"); }

function duration(s) {
  s = Math.floor(Number(s || 0));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function badge(text, kind) { return el("span", { class: "badge " + (kind || ""), text }); }

function table(id, headers, rows) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { class: h.endsWith("#") ? "num" : "", text: h.replace(/#$/, "") })))),
    el("tbody", {}, rows));
}

function json(value) { return value === null || value === undefined ? "" : JSON.stringify(value); }

function showError(target, err) {
  const message = err instanceof ApiError ? err.message : String(err && err.message || err);
  target.textContent = message;
}

function setMain(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
  return main;
}

function stopTimers() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  for (const c of state.charts) c.destroy();
  state.charts = [];
}

function every(seconds, fn) {
  state.timer = setInterval(() => { fn().catch(() => {}); }, seconds * 1000);
}

// -- session ------------------------------------------------------------------------------------

async function loadSession() {
  state.session = await api("/api/session");
  const who = document.getElementById("who");
  const logout = document.getElementById("logout");
  const nav = document.getElementById("nav");
  nav.hidden = !state.session.role;
  who.textContent = state.session.auth && state.session.role ? state.session.role + " key" : "";
  logout.hidden = !(state.session.auth && state.session.role);
}

function loginPage() {
  const key = el("input", { type: "password", id: "login-key", class: "wide", autocomplete: "off", placeholder: "API key" });
  const problem = el("div", { class: "error", id: "login-error" });
  const form = el("form", { id: "login-form", class: "panel login" },
    el("h1", { text: "Log in" }),
    el("p", { class: "muted", text: "This cluster requires an API key (admin or read-only), as its gRPC API does." }),
    el("div", { class: "row" }, key, el("button", { class: "primary", type: "submit", id: "login-submit", text: "Log in" })),
    problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.textContent = "";
    try {
      await api("/api/login", { key: key.value });
      key.value = "";
      await route();
    } catch (err) {
      showError(problem, err);
    }
  });
  setMain(form);
  key.focus();
}

// -- cluster ------------------------------------------------------------------------------------

async function clusterPage() {
  const main = setMain(el("h1", { text: "Cluster" }), el("div", { id: "cluster" }, el("p", { class: "muted", text: "Loading…" })));
  const draw = async () => {
    const c = await api("/api/cluster");
    const healthy = c.groups.every((g) => g.replicas.some((r) => r.healthy));
    const down = c.groups.reduce((a, g) => a + g.replicas.filter((r) => !r.healthy).length, 0);
    const health = !healthy ? badge("a group is down", "bad")
      : down ? badge("serving, " + down + " replica" + (down > 1 ? "s" : "") + " down", "warn") : badge("all replicas serving", "ok");
    const replicas = [];
    for (const g of c.groups) {
      for (const r of g.replicas) {
        replicas.push(el("tr", { dataset: { group: g.index } },
          el("td", { text: "shard-" + g.index }),
          el("td", {}, el("code", { text: r.address })),
          el("td", {}, r.healthy ? badge("healthy", "ok") : badge("down", "bad"), r.error ? el("div", { class: "error", text: r.error }) : null),
          el("td", { class: "num", text: r.healthy ? num(r.collections) : "" }),
          el("td", { class: "num", text: r.healthy ? num(r.points) : "" }),
          el("td", { class: "num", text: r.healthy ? bytes(r.rss_bytes) : "" })));
      }
    }
    const placements = c.collections.map((p) => el("tr", { dataset: { name: p.name } },
      el("td", {}, el("a", { href: "/collections/" + encodeURIComponent(p.name), text: p.name })),
      el("td", { class: "num", text: p.shards }),
      el("td", { class: "num", text: p.epoch }),
      el("td", { class: "num count", text: num(p.count) }),
      el("td", { class: "mono", text: p.shard_counts.map(num).join(" · ") })));
    const jobs = c.jobs.map((j) => {
      const pct = j.total ? Math.min(100, (100 * j.done) / j.total) : 0;
      const bar = el("span", {});
      bar.style.width = pct.toFixed(1) + "%";
      return el("tr", {},
        el("td", { text: j.kind }),
        el("td", { text: j.collection || j.id }),
        el("td", {}, badge(j.phase, j.error ? "bad" : j.phase === "DONE" ? "ok" : "warn")),
        el("td", {}, el("span", { class: "bar" }, bar), " ", j.total ? num(j.done) + " / " + num(j.total) : num(j.done)),
        el("td", { text: j.started_unix ? new Date(j.started_unix * 1000).toLocaleTimeString() : "" }),
        el("td", { class: "error", text: j.error }));
    });
    document.getElementById("cluster").replaceChildren(
      el("div", { class: "cards" },
        card("Health", health),
        card("Shard mode", c.shard_mode),
        card("Shard groups", c.groups.length),
        card("Collections", c.collections.length),
        card("Points", num(c.collections.reduce((a, p) => a + Number(p.count), 0))),
        card("Coordinator memory", bytes(c.rss_bytes)),
        card("Uptime", duration(c.uptime_s)),
        card("Version", c.version)),
      el("h2", { text: "Shard groups and replicas" }),
      table("replicas-table", ["group", "address", "health", "collections#", "points#", "memory#"], replicas),
      el("h2", { text: "Placement" }),
      c.collections.length
        ? table("placement-table", ["collection", "shards#", "epoch#", "points#", "points per shard"], placements)
        : el("p", { class: "muted", text: "No collections yet." }),
      el("h2", { text: "Jobs" }),
      c.jobs.length
        ? table("jobs-table", ["kind", "collection", "phase", "progress", "started", "error"], jobs)
        : el("p", { class: "muted", id: "no-jobs", text: "No reshard, training or backup is running." }));
  };
  await draw();
  every(5, draw);
  return main;
}

function card(label, value) {
  return el("div", { class: "card" }, el("div", { class: "label", text: label }), el("div", { class: "value" }, value));
}

// -- collections --------------------------------------------------------------------------------

function indexes(c, text) {
  return c.payload_indexes.filter((x) => (x.type === "TEXT") === text)
    .map((x) => x.field + (text ? " (" + num(x.text.documents) + " docs)" : " (" + x.type.toLowerCase() + ")")).join(", ");
}

function trainedBadge(c) {
  const kind = { TRAINED: "ok", NOT_APPLICABLE: "", UNTRAINED: "warn", TRAINING: "warn" }[c.training];
  return badge(c.training === "NOT_APPLICABLE" ? "n/a" : c.training.toLowerCase(), kind);
}

async function collectionsPage() {
  const list = el("div", { id: "collections" }, el("p", { class: "muted", text: "Loading…" }));
  const main = setMain(el("h1", { text: "Collections" }), list);
  const data = await api("/api/collections");
  const admin = state.session.role === "admin";
  const rows = data.collections.map((c) => {
    const actions = admin ? el("td", {}, dropControl(c.name)) : null;
    return el("tr", { dataset: { name: c.name } },
      el("td", {}, el("a", { href: "/collections/" + encodeURIComponent(c.name), text: c.name })),
      el("td", { class: "num", text: c.dim }),
      el("td", { text: c.metric }),
      el("td", { text: c.index_type + (c.nlist ? " (nlist " + c.nlist + ")" : "") }),
      el("td", {}, trainedBadge(c)),
      el("td", { class: "num count", text: num(c.count) }),
      el("td", { text: indexes(c, false) }),
      el("td", { text: indexes(c, true) }),
      el("td", { text: c.model }),
      actions);
  });
  const headers = ["name", "dim#", "metric", "index", "trained", "points#", "payload indexes", "text indexes", "model"];
  list.replaceChildren(data.collections.length
    ? table("collections-table", admin ? [...headers, ""] : headers, rows)
    : el("p", { class: "muted", text: "No collections yet: create one with the SDK or `vecshard collections create`." }));
  return main;
}

function dropControl(name) {
  const box = el("span", {});
  const start = el("button", { class: "danger drop", type: "button", dataset: { name }, text: "Drop…" });
  start.addEventListener("click", () => {
    const input = el("input", { type: "text", class: "confirm-name", placeholder: "type " + name + " to confirm" });
    const problem = el("span", { class: "error" });
    const go = el("button", { class: "danger confirm-drop", type: "button", text: "Drop for good" });
    go.addEventListener("click", async () => {
      problem.textContent = "";
      try {
        await api("/api/collections/" + encodeURIComponent(name) + "/drop", { confirm: input.value });
        await route();
      } catch (err) {
        showError(problem, err);
      }
    });
    box.replaceChildren(input, go, problem);
    input.focus();
  });
  box.append(start);
  return box;
}

// -- one collection -----------------------------------------------------------------------------

async function collectionPage(name) {
  const c = await api("/api/collections/" + encodeURIComponent(name));
  const view = { cursors: [""], page: 0 };
  const filter = el("input", { type: "text", id: "filter-input", class: "wide", placeholder: 'filter, e.g. lang = "en" and year >= 2020' });
  const vectors = el("input", { type: "checkbox", id: "show-vectors" });
  const filterError = el("span", { class: "error", id: "filter-error" });
  const matching = el("span", { class: "muted", id: "matching" });
  const points = el("div", { id: "points" });
  const prev = el("button", { type: "button", id: "prev-page", text: "← Previous" });
  const next = el("button", { type: "button", id: "next-page", text: "Next →" });

  const modes = [];
  if (c.model) modes.push(["text", "text (" + c.model + ")"]);
  if (c.payload_indexes.some((x) => x.type === "TEXT")) modes.push(["keyword", "keyword (BM25)"]);
  modes.push(["like", "more like this point (id)"]);
  const mode = el("select", { id: "search-mode" }, modes.map(([v, label]) => el("option", { value: v, text: label })));
  const query = el("input", { type: "text", id: "search-input", class: "wide", placeholder: "search…" });
  const k = el("input", { type: "number", id: "search-k", min: 1, max: 100, value: 10 });
  const searchError = el("span", { class: "error", id: "search-error" });
  const hits = el("div", { id: "hits" });

  async function loadPoints() {
    filterError.textContent = "";
    const params = new URLSearchParams({ filter: filter.value, cursor: view.cursors[view.page], limit: "20" });
    if (vectors.checked) params.set("vectors", "1");
    try {
      const page = await api("/api/collections/" + encodeURIComponent(name) + "/points?" + params);
      view.cursors[view.page + 1] = page.next_cursor;
      next.disabled = page.done;
      prev.disabled = view.page === 0;
      matching.textContent = num(page.matching) + " matching";
      const rows = page.points.map((p) => el("tr", { dataset: { id: String(p.id) } },
        el("td", { class: "num mono", text: String(p.id) }),
        el("td", { class: "payload mono", text: json(p.payload) }),
        vectors.checked ? el("td", { class: "payload mono", text: p.vector ? "[" + p.vector.map((x) => x.toFixed(4)).join(", ") + "]" : "(none)" }) : null,
        el("td", {}, el("button", { type: "button", class: "like", text: "More like this", onclick: () => like(p.id) }))));
      points.replaceChildren(page.points.length
        ? table("points-table", vectors.checked ? ["id#", "payload", "vector", ""] : ["id#", "payload", ""], rows)
        : el("p", { class: "muted", text: "No points match." }));
    } catch (err) {
      showError(filterError, err);
    }
  }

  async function search() {
    searchError.textContent = "";
    try {
      const r = await api("/api/collections/" + encodeURIComponent(name) + "/search",
        { mode: mode.value, query: query.value, filter: filter.value, k: Number(k.value || 10) });
      const rows = r.hits.map((h) => el("tr", { dataset: { id: String(h.id) } },
        el("td", { class: "num", text: h.rank }),
        el("td", { class: "num mono", text: String(h.id) }),
        el("td", { class: "num mono", text: h.score.toFixed(4) }),
        el("td", { class: "payload mono", text: json(h.payload) })));
      hits.replaceChildren(
        el("h2", { text: "Results (" + (r.higher_is_better ? "score: higher is better" : "distance: lower is better") + ")" }),
        r.hits.length ? table("hits-table", ["rank#", "id#", r.higher_is_better ? "score#" : "distance#", "payload"], rows)
          : el("p", { class: "muted", text: "No hits." }));
    } catch (err) {
      showError(searchError, err);
    }
  }

  function like(id) {
    mode.value = "like";
    query.value = String(id);
    search();
  }

  const filterForm = el("form", { class: "inline", id: "filter-form" }, el("label", { text: "Filter" }), filter,
    el("button", { type: "submit", id: "filter-apply", text: "Apply" }),
    el("label", {}, vectors, " vectors"), matching, filterError);
  filterForm.addEventListener("submit", (e) => { e.preventDefault(); view.cursors = [""]; view.page = 0; loadPoints(); });
  vectors.addEventListener("change", loadPoints);
  prev.addEventListener("click", () => { if (view.page > 0) { view.page--; loadPoints(); } });
  next.addEventListener("click", () => { view.page++; loadPoints(); });
  const searchForm = el("form", { class: "inline", id: "search-form" }, el("label", { text: "Search" }), mode, query,
    el("label", { text: "k" }), k, el("button", { type: "submit", class: "primary", id: "search-go", text: "Search" }), searchError);
  searchForm.addEventListener("submit", (e) => { e.preventDefault(); search(); });

  setMain(
    el("h1", {}, el("a", { href: "/collections", text: "Collections" }), " / ", el("span", { id: "collection-name", text: c.name })),
    el("div", { class: "cards" },
      card("Points", el("span", { id: "collection-count", text: num(c.count) })),
      card("Dimension", c.dim),
      card("Metric", c.metric),
      card("Index", c.index_type + (c.nlist ? " · nlist " + c.nlist : "")),
      card("Trained", trainedBadge(c)),
      card("Ids", c.id_type.toLowerCase()),
      card("Model", c.model || "none"),
      card("Shards", c.shards.map((s) => num(s.count)).join(" · "))),
    el("div", { class: "panel" }, searchForm, el("p", { class: "muted", text: "The filter below also applies to searches." }), hits),
    el("div", { class: "panel" }, filterForm, points, el("div", { class: "pager row" }, prev, next)),
    el("p", { class: "muted" }, "Payload indexes: ", indexes(c, false) || "none", " · text indexes: ", indexes(c, true) || "none"));
  await loadPoints();
}

// -- metrics ------------------------------------------------------------------------------------

const PALETTE = ["#2463c7", "#c2362b", "#1c8a4a", "#b7791f", "#7b3fb8", "#0f8b8d", "#d0487f", "#5a6b7d"];

async function metricsPage() {
  const box = el("div", { id: "charts", class: "charts" });
  const note = el("p", { class: "muted", id: "metrics-note" });
  setMain(el("h1", { text: "Metrics" }), note, box);
  const draw = async () => {
    const m = await api("/api/metrics?minutes=15");
    for (const c of state.charts) c.destroy();
    state.charts = [];
    const total = (name) => m.methods[name].qps.reduce((a, q) => a + (q || 0), 0);
    const methods = Object.keys(m.methods).filter((name) => total(name) > 0).sort((a, b) => total(b) - total(a));
    note.textContent = "RPCs this coordinator served, sampled every " + m.every_s + " s from its own metrics (last 15 minutes)." +
      (m.times.length < 2 ? " The first points appear after two samples." : "");
    const panels = [];
    const width = Math.min(600, Math.max(320, (box.clientWidth || 1200) / 2 - 30));
    if (!methods.length) {
      box.replaceChildren(el("p", { class: "muted", id: "no-traffic", text: "No traffic yet." }));
      return;
    }
    const qps = chartPanel("QPS by RPC", "chart-qps");
    panels.push(qps.panel);
    const series = [{}].concat(methods.map((name, i) => ({ label: name, stroke: PALETTE[i % PALETTE.length], width: 2 })));
    const data = [m.times].concat(methods.map((name) => m.methods[name].qps));
    const lat = [];
    for (const name of methods.slice(0, 7)) {  // (the busiest RPCs' latency)
      const p = chartPanel(name + ": latency (ms)", "chart-latency-" + name);
      panels.push(p.panel);
      lat.push([p, name]);
    }
    box.replaceChildren(...panels);
    state.charts.push(new uPlot({ width, height: 220, series, axes: [{}, { label: "req/s" }] }, data, qps.target));
    for (const [p, name] of lat) {
      const s = m.methods[name];
      state.charts.push(new uPlot({
        width, height: 200,
        series: [{}, { label: "p50", stroke: "#2463c7", width: 2, spanGaps: true }, { label: "p99", stroke: "#c2362b", width: 2, spanGaps: true }],
        axes: [{}, { label: "ms" }],
      }, [m.times, s.p50_ms, s.p99_ms], p.target));
    }
  };
  await draw();
  every(5, draw);
}

function chartPanel(title, id) {
  const target = el("div", {});
  return { panel: el("div", { class: "chart", id }, el("h3", { text: title }), target), target };
}

// -- routing ------------------------------------------------------------------------------------

async function route() {
  stopTimers();
  await loadSession();
  const path = location.pathname.replace(/\/+$/, "") || "/cluster";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", path.startsWith(a.getAttribute("href")));
  if (!state.session.role) return loginPage();
  try {
    const m = path.match(/^\/collections\/(.+)$/);
    if (m) return await collectionPage(decodeURIComponent(m[1]));
    if (path === "/collections") return await collectionsPage();
    if (path === "/metrics") return await metricsPage();
    return await clusterPage();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return loginPage();
    setMain(el("h1", { text: "Something went wrong" }), el("p", { class: "error", id: "page-error", text: err.message }));
  }
}

document.getElementById("logout").addEventListener("click", async () => {
  await api("/api/logout", {});
  history.pushState(null, "", "/cluster");
  await route();
});

document.addEventListener("click", (event) => {
  const a = event.target.closest && event.target.closest("a[href^='/']");
  if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  history.pushState(null, "", a.getAttribute("href"));
  route();
});
window.addEventListener("popstate", route);
route();

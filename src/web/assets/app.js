// promptcam pages: the overview, a camera's history and the prompt lab, rendered from the JSON
// API. Every text goes in through textContent (el()), never as HTML.
"use strict";

const body = document.body;
const page = body.dataset.page;
const camera = body.dataset.camera;
const main = document.getElementById("main");
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// A query refused because others hold the lab's turns ("busy: ...", 503 with Retry-After) did
// not run: it is asked again after the wait the daemon names, for up to about half a minute.
async function api(path, opts) {
  for (let attempt = 0; ; attempt++) {
    const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
    if (r.status === 204) return null;
    const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    const busy = r.status === 503 && /^busy/.test(data.error || "");
    if (busy && attempt < 15) {
      const wait = Number(r.headers.get("Retry-After")) || 2;
      await new Promise((done) => setTimeout(done, wait * 1000));
      continue;
    }
    if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
    return data;
  }
}

function post(path, data) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });
}

const fmt = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
const time = (iso) => new Date(iso).toLocaleString();
const msTime = (ms) => new Date(ms).toLocaleString();

function nav() {
  const n = document.getElementById("nav");
  n.append(el("a", { href: "/" }, "Cameras"));
  if (camera) {
    n.append(el("a", { href: `/camera/${encodeURIComponent(camera)}` }, "History"));
    n.append(el("a", { href: `/lab/${encodeURIComponent(camera)}` }, "Prompt lab"));
  }
}

function scoreBar(score, threshold) {
  const s = Math.max(0, Math.min(1, score || 0));
  return el("div", { class: "bar", title: `score ${fmt(score)} / threshold ${fmt(threshold)}` },
    el("span", { style: `width:${(s * 100).toFixed(1)}%` }),
    el("i", { style: `left:${(Math.max(0, Math.min(1, threshold)) * 100).toFixed(1)}%` }));
}

function shot(h, extra) {
  const img = h.thumbnail
    ? el("img", { src: h.thumbnail, alt: `frame at ${time(h.time)}`, loading: "lazy" })
    : el("div", { class: "noimg" }, "no thumbnail");
  // a tile that stands for near-duplicates says how many
  const count = h.count > 1 ? el("span", { class: "count", title: `${h.count} near-identical frames` }, `×${h.count}`) : null;
  return el("div", { class: "shot", "data-frame": h.frame },
    img, el("div", { class: "meta" }, el("span", {}, el("b", {}, fmt(h.score, 3)), " ", time(h.time), count ? " " : null, count), extra || null));
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children.flat()) if (c) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// A precision-recall plot: one line per evaluation (recall across, precision up), a dot where
// its threshold puts it.
function prPlot(evals) {
  const W = 420, H = 300, L = 46, B = 36, T = 12, R = 12;
  const x = (r) => L + r * (W - L - R), y = (p) => H - B - p * (H - B - T);
  const out = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "pr", role: "img", "aria-label": "precision-recall curves" });
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    out.append(svg("line", { x1: x(0), x2: x(1), y1: y(v), y2: y(v), class: "gridline" }),
      svg("line", { x1: x(v), x2: x(v), y1: y(0), y2: y(1), class: "gridline" }),
      svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(2)),
      svg("text", { x: x(v), y: H - B + 16, "text-anchor": "middle" }, v.toFixed(2)));
  }
  out.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "axis" }, "recall"),
    svg("text", { x: 12, y: (T + H - B) / 2, transform: `rotate(-90 12 ${(T + H - B) / 2})`, "text-anchor": "middle", class: "axis" }, "precision"));
  evals.forEach((e, k) => {
    const color = COLORS[k % COLORS.length];
    const pts = e.curve.map((c) => `${x(c.recall).toFixed(1)},${y(c.precision).toFixed(1)}`).join(" ");
    out.append(svg("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2, class: "pr-line" }),
      svg("circle", { cx: x(e.recall), cy: y(e.precision), r: 6, fill: color, stroke: "#fff", "stroke-width": 2, class: "pr-at" },
        svg("title", {}, `${e.prompt} at threshold ${fmt(e.threshold, 3)}: precision ${fmt(e.precision)}, recall ${fmt(e.recall)}`)),
      svg("text", { x: x(0.03), y: y(0.06) - 16 * k, style: `fill:${color}`, class: "legend" }, `● ${e.prompt} (threshold ${fmt(e.threshold, 3)})`));
  });
  return out;
}

// ---------------------------------------------------------------------------------- overview

async function overview() {
  let cards = null;
  async function refresh() {
    let st;
    try {
      st = await api("/api/status");
    } catch (e) {
      main.replaceChildren(el("p", { class: "error" }, `Unable to read the status: ${e.message}`));
      return;
    }
    if (!cards) {
      cards = {};
      const grid = el("div", { class: "grid" });
      for (const c of st.cameras) {
        const img = el("img", { class: "frame", alt: `latest frame of ${c.name}`, "data-camera": c.id });
        img.addEventListener("error", () => img.removeAttribute("src"));
        const tbody = el("tbody");
        grid.append(el("section", { class: "card camera", id: `cam-${c.id}` },
          el("div", { class: "head" }, el("h2", {}, c.name),
            el("span", {}, el("a", { href: `/camera/${encodeURIComponent(c.id)}` }, "history"), " · ",
              el("a", { href: `/lab/${encodeURIComponent(c.id)}` }, "prompt lab"))),
          img,
          el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Prompt"), el("th", {}, "Model"), el("th", {}, "State"),
            el("th", {}, "Score"), el("th", {}, ""), el("th", {}, "Threshold"))), tbody)));
        cards[c.id] = { img, tbody };
      }
      main.replaceChildren(el("h1", {}, "Cameras"), grid);
    }
    for (const c of st.cameras) {
      const card = cards[c.id];
      if (!card) continue;
      card.img.src = `/snapshot/${encodeURIComponent(c.id)}.jpg?t=${Date.now()}`;
      card.tbody.replaceChildren(...c.prompts.map((p) => el("tr", { "data-prompt": p.id },
        el("td", {}, p.name), el("td", { class: "muted" }, p.model),
        el("td", {}, el("span", { class: p.on ? "pill on" : "pill" }, p.on ? "ON" : "OFF")),
        el("td", { class: "score" }, fmt(p.score)), el("td", {}, scoreBar(p.score, p.decide.threshold)),
        el("td", {}, fmt(p.decide.threshold)))));
      if (c.paused) card.tbody.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "paused")));
    }
  }
  await refresh();
  setInterval(refresh, 2000);
}

// ---------------------------------------------------------------------------------- charts

// ON periods as shaded bands: [[startSec, endSec], ...]
function shadePlugin(periods, color) {
  return {
    hooks: {
      drawClear: (u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.fillStyle = color;
        for (const [a, b] of periods) {
          const x0 = u.valToPos(a, "x", true);
          const x1 = u.valToPos(b, "x", true);
          ctx.fillRect(Math.min(x0, x1), u.bbox.top, Math.max(1, Math.abs(x1 - x0)), u.bbox.height);
        }
        ctx.restore();
      },
    },
  };
}

// the charts on the page, for the browser tests to inspect
window.promptcam = { plots: [] };

function scorePlot(target, label, xs, ys, lines, periods, color) {
  const width = Math.max(320, target.clientWidth || 600);
  const data = [xs, ys, ...lines.map((l) => xs.map(() => l.value))];
  const series = [{}, { label, stroke: color, width: 1.5, points: { show: xs.length < 200 } },
    ...lines.map((l) => ({ label: l.label, stroke: l.color, dash: [6, 4], width: 1, points: { show: false } }))];
  const plot = new uPlot({
    width, height: 220, series, plugins: [shadePlugin(periods, "rgba(22,163,74,0.18)")],
    scales: { y: { range: [0, 1] } }, axes: [{}, { values: (u, v) => v.map((x) => x.toFixed(1)) }],
  }, data, target);
  window.promptcam.plots.push(plot);
  return plot;
}

// ---------------------------------------------------------------------------------- camera page

async function cameraPage() {
  let hours = 1;
  const plots = el("div");
  const events = el("div");
  const status = el("p", { class: "muted" });
  const toggle = (h) => el("button", { class: h === hours ? "" : "secondary", onclick: () => { hours = h; render(); } },
    h === 1 ? "Last hour" : "Last day");
  const bar = el("div", { class: "toolbar" });
  main.replaceChildren(el("h1", {}, `Camera ${camera}`), bar, status, plots, el("h2", {}, "Events"), events);
  async function render() {
    bar.replaceChildren(toggle(1), toggle(24), el("a", { class: "button secondary", href: `/lab/${encodeURIComponent(camera)}` }, "Open the prompt lab"));
    let h;
    try {
      h = await api(`/api/history?camera=${encodeURIComponent(camera)}&hours=${hours}`);
    } catch (e) {
      status.textContent = `Unable to read the history: ${e.message}`;
      status.className = "error";
      return;
    }
    status.className = "muted";
    status.replaceChildren(`${h.frames} analysed frame(s) in the last ${hours === 1 ? "hour" : "day"}. Dashed: `,
      el("span", { class: "legend-line" }), "threshold and off threshold; shaded: ON.");
    plots.replaceChildren();
    window.promptcam.plots = [];
    // a break in the recording (daemon stopped, camera paused) shows as a gap, not a line
    const steps = h.t.slice(1).map((t, i) => t - h.t[i]).sort((a, b) => a - b);
    const gap = Math.max(60000, 10 * (steps[steps.length >> 1] || 0));
    const breaks = new Set(h.t.map((t, i) => (i > 0 && t - h.t[i - 1] > gap ? i : -1)).filter((i) => i > 0));
    const withGaps = (arr, fill) => arr.flatMap((v, i) => (breaks.has(i) ? [fill(i), v] : [v]));
    const xs = withGaps(h.t.map((ms) => ms / 1000), (i) => (h.t[i - 1] + 1) / 1000);
    const names = Object.fromEntries(h.prompts.map((p) => [p.id, p.name]));
    h.prompts.forEach((p, i) => {
      const mine = h.events.filter((e) => e.prompt === p.id);
      const periods = [];
      let open = null;
      for (const e of mine) {
        if (e.kind === "start") open = e.t_ms / 1000;
        if (e.kind === "end" && open !== null) { periods.push([open, e.t_ms / 1000]); open = null; }
      }
      if (open !== null) periods.push([open, Date.now() / 1000]);
      const box = el("div", { class: "plot", "data-prompt": p.id });
      plots.append(el("section", { class: "card" }, el("h2", {}, `${p.name} `, el("span", { class: "muted" }, `(${p.model})`)), box));
      const ys = withGaps(h.scores[p.id] || [], () => null);
      scorePlot(box, "score", xs, ys, [
        { label: "threshold", value: p.decide.threshold, color: "#b45309" },
        { label: "off threshold", value: p.decide.off_threshold, color: "#9ca3af" },
      ], periods, COLORS[i % COLORS.length]);
    });
    if (!h.events.length) {
      events.replaceChildren(el("p", { class: "muted" }, "No events in this period."));
      return;
    }
    events.replaceChildren(el("table", { class: "events card" },
      el("thead", {}, el("tr", {}, ["Time", "Prompt", "Event", "Score", "Snapshot"].map((t) => el("th", {}, t)))),
      el("tbody", {}, h.events.slice(-200).reverse().map((e) => el("tr", {},
        el("td", {}, msTime(e.t_ms)), el("td", {}, names[e.prompt] || e.prompt), el("td", {}, e.kind), el("td", {}, fmt(e.score)),
        el("td", {}, e.has_snapshot ? el("a", { href: `/history/event/${e.id}.jpg`, target: "_blank" },
          el("img", { src: `/history/event/${e.id}.jpg`, alt: "snapshot", loading: "lazy" })) : ""))))));
  }
  await render();
}

// ---------------------------------------------------------------------------------- prompt lab

async function labPage() {
  const st = await api("/api/status");
  const cam = st.cameras.find((c) => c.id === camera);
  if (!cam) {
    main.replaceChildren(el("p", { class: "error" }, `There is no camera ${camera}.`));
    return;
  }
  const first = cam.prompts.find((p) => p.model === "clip") || cam.prompts[0];
  // start from the camera's first CLIP prompt, with its own settings
  const clip = first && first.model === "clip" ? first : null;
  const prompt = el("input", { type: "text", id: "prompt", placeholder: "a delivery van in the driveway", value: clip ? clip.text : "" });
  const negatives = el("textarea", { id: "negatives", placeholder: "one per line; empty: the camera's other CLIP prompts" });
  negatives.value = clip ? clip.negatives.join("\n") : "";
  const templates = el("textarea", { id: "templates", placeholder: "optional, one per line, e.g. a photo of {}" });
  templates.value = clip ? clip.ensemble.join("\n") : "";
  const hours = el("select", { id: "hours" }, [["1", "last hour"], ["24", "last 24 h"], ["168", "last 7 days"], ["0", "everything"]]
    .map(([v, t]) => el("option", { value: v, selected: v === "24" }, t)));
  const scoreBtn = el("button", { id: "score-btn", type: "submit" }, "Score the history");
  const summary = el("p", { id: "lab-summary", class: "muted" }, "Type a prompt and score it on every stored frame: no model runs per frame.");
  const plot = el("div", { id: "lab-plot" });
  const hist = el("div", { id: "histogram" });
  const top = el("div", { id: "top", class: "gallery" });
  const bottom = el("div", { id: "bottom", class: "gallery" });
  const d = (first && first.decide) || { threshold: 0.5, off_threshold: 0.4, window: 3, min_frames: 2, off_delay: 10, cooldown: 0 };
  const num = (id, v, step) => el("input", { type: "number", id, value: v, step, min: 0 });
  const params = {
    threshold: num("threshold", d.threshold, 0.01), off_threshold: num("off_threshold", d.off_threshold, 0.01),
    window: num("window", d.window, 1), min_frames: num("min_frames", d.min_frames, 1),
    off_delay: num("off_delay", d.off_delay, 0.5), cooldown: num("cooldown", d.cooldown, 1),
  };
  const fired = el("div", { id: "fired" });
  const moments = el("div", { id: "moments", class: "gallery" });
  const suggestion = el("p", { id: "suggestion", class: "muted" }, "Mark frames yes or no, then ask for the threshold that separates them.");
  const applyTo = el("select", { id: "apply-prompt" }, cam.prompts.map((p) => el("option", { value: p.id }, `${p.name} (${p.model})`)));
  const applyOut = el("div", { id: "apply-result" });
  let current = null; // the last scored query

  function queryString(extra) {
    const q = new URLSearchParams({ camera, q: prompt.value, hours: hours.value });
    for (const n of negatives.value.split("\n").map((s) => s.trim()).filter(Boolean)) q.append("negative", n);
    for (const t of templates.value.split("\n").map((s) => s.trim()).filter(Boolean)) q.append("template", t);
    for (const [k, v] of Object.entries(extra || {})) q.append(k, v);
    return q.toString();
  }
  const decideParams = () => Object.fromEntries(Object.entries(params).map(([k, e]) => [k, e.value]));

  function markButtons(h) {
    const marks = new Map((current && current.marks) || []);
    const state = marks.has(h.frame) ? (marks.get(h.frame) ? "yes" : "no") : null;
    const yes = el("button", { class: `small secondary yes${state === "yes" ? " active" : ""}`, title: "it shows the prompt" }, "yes");
    const no = el("button", { class: `small secondary no${state === "no" ? " active" : ""}`, title: "it does not" }, "no");
    const set = async (v) => {
      const now = (v === "yes" && yes.classList.contains("active")) || (v === "no" && no.classList.contains("active")) ? null : v === "yes";
      try {
        await post("/api/lab/mark", { camera, q: prompt.value, frame: h.frame, yes: now });
        yes.classList.toggle("active", now === true);
        no.classList.toggle("active", now === false);
        const m = new Map(current.marks);
        if (now === null) m.delete(h.frame); else m.set(h.frame, now);
        current.marks = [...m];
      } catch (e) { alert(`Unable to save the mark: ${e.message}`); }
    };
    yes.addEventListener("click", () => set("yes"));
    no.addEventListener("click", () => set("no"));
    return el("span", {}, yes, " ", no);
  }

  async function score(ev) {
    if (ev) ev.preventDefault();
    scoreBtn.disabled = true;
    summary.className = "muted";
    summary.textContent = "Scoring…";
    try {
      const r = await api(`/api/lab?${queryString()}`);
      current = r;
      summary.replaceChildren(`Scored "${r.prompt}" on ${r.searched} stored frame(s) against: `, el("i", {}, r.negatives.join(", ")), ".");
      plot.replaceChildren();
      window.promptcam.plots = [];
      scorePlot(plot, r.prompt, r.series.t.map((ms) => ms / 1000), r.series.score, [
        { label: "threshold", value: Number(params.threshold.value), color: "#b45309" },
      ], [], COLORS[0]);
      const max = Math.max(1, ...r.histogram);
      hist.replaceChildren(el("div", { class: "hist" }, r.histogram.map((n, i) =>
        el("span", { style: `height:${(100 * n / max).toFixed(1)}%`, title: `${(i / 20).toFixed(2)}–${((i + 1) / 20).toFixed(2)}: ${n}` }))),
        el("div", { class: "hist-axis" }, el("span", {}, "0"), el("span", {}, "0.5"), el("span", {}, "1")));
      top.replaceChildren(...r.top.map((h) => shot(h, markButtons(h))));
      bottom.replaceChildren(...r.bottom.map((h) => shot(h, markButtons(h))));
      if (r.running) applyTo.value = r.running;
      await replay();
    } catch (e) {
      summary.className = "error";
      summary.textContent = e.message;
    } finally {
      scoreBtn.disabled = false;
    }
  }

  async function replay() {
    fired.textContent = "Replaying…";
    try {
      const r = await api(`/api/lab/replay?${queryString(decideParams())}`);
      const span = hours.value === "0" ? "in the whole history" : `in the last ${hours.value === "1" ? "hour" : hours.value + " h"}`;
      fired.replaceChildren(el("span", { class: "big", id: "fired-count" }, String(r.fired)), ` time(s) it would have fired ${span} (${r.searched} frames).`);
      moments.replaceChildren(...r.fires.map((f) => shot({ time: f.start, score: f.best, thumbnail: f.thumbnail, frame: f.frame },
        el("span", { class: "muted" }, f.end ? `until ${new Date(f.end).toLocaleTimeString()}` : "still on"))));
    } catch (e) {
      fired.replaceChildren(el("span", { class: "error" }, e.message));
    }
  }

  async function suggest() {
    try {
      const r = await api(`/api/lab/suggest?${queryString(decideParams())}`);
      if (!r.suggestion) { suggestion.textContent = r.message; return; }
      params.threshold.value = r.suggestion.threshold;
      params.off_threshold.value = r.decide.off_threshold.toFixed(3);
      suggestion.textContent = `Suggested threshold ${r.suggestion.threshold} from ${r.suggestion.yes} yes and ${r.suggestion.no} no ` +
        `(${Math.round(100 * r.suggestion.balanced_accuracy)}% balanced accuracy); it would have fired ${r.fired} time(s).`;
      await replay();
    } catch (e) { suggestion.textContent = e.message; }
  }

  async function apply() {
    try {
      const r = await post("/api/threshold", { camera, prompt: applyTo.value, threshold: Number(params.threshold.value) });
      applyOut.replaceChildren(el("p", {}, `Threshold of ${r.prompt} set to ${r.threshold} (off below ${fmt(r.off_threshold, 3)}). To keep it after a restart, put these lines in the config:`),
        el("pre", { id: "toml" }, r.toml));
    } catch (e) { applyOut.replaceChildren(el("p", { class: "error" }, e.message)); }
  }

  const exampleName = el("input", { id: "example-name", placeholder: "its name (default: the prompt)" });
  const examplesOut = el("div", { id: "examples-out" });
  async function makeExamples() {
    try {
      const r = await post("/api/lab/examples", {
        camera, q: prompt.value, name: exampleName.value,
        negatives: negatives.value.split("\n").map((s) => s.trim()).filter(Boolean),
      });
      examplesOut.replaceChildren(
        el("p", {}, `Saved ${r.examples} picture(s) marked yes` + (r.negative_examples ? ` and ${r.negative_examples} marked no` : "") +
          ` in ${r.dir}. A prompt made of them, for the config (then reload: systemctl reload promptcam):`),
        el("pre", { id: "examples-toml" }, r.toml),
        el("div", { class: "toolbar" }, el("button", { id: "examples-add-btn", class: "secondary", onclick: () => addPrompt(r.prompt) }, "Add it to this camera")));
    } catch (e) { examplesOut.replaceChildren(el("p", { class: "error" }, e.message)); }
  }

  // ------------------------------------------------------------- run it on this camera
  const expires = el("select", { id: "expires" }, [["", "until removed"], ["1h", "for an hour"], ["8h", "for 8 hours"], ["24h", "for a day"]]
    .map(([v, t]) => el("option", { value: v }, t)));
  const once = el("input", { type: "checkbox", id: "once" });
  const addOut = el("div", { id: "add-out" });
  const runtimeList = el("div", { id: "runtime-prompts" });
  function promptKeys() {
    const keys = { text: prompt.value.trim(), model: "clip" };
    const negs = negatives.value.split("\n").map((s) => s.trim()).filter(Boolean);
    const ens = templates.value.split("\n").map((s) => s.trim()).filter(Boolean);
    if (negs.length) keys.negatives = negs;
    if (ens.length) keys.ensemble = ens;
    for (const [k, e] of Object.entries(params)) keys[k] = Number(e.value);
    return keys;
  }
  async function showRuntime() {
    const st = await api("/api/status");
    const c = st.cameras.find((x) => x.id === camera) || { prompts: [], runtime_prompts: [] };
    const rows = c.runtime_prompts.map((r) => {
      const live = c.prompts.find((p) => p.id === r.id);
      const state = live ? `${live.on ? "ON" : "OFF"}, score ${fmt(live.score, 3)}` : "loading…";
      const until = r.expires ? ` until ${new Date(r.expires).toLocaleString()}` : "";
      return el("tr", { "data-prompt": r.id, "data-running": live ? "yes" : "no" },
        el("td", {}, r.name || r.id), el("td", {}, `${r.model}${r.once ? ", once" : ""}${until}`), el("td", {}, r.source), el("td", { class: "state" }, state),
        el("td", {}, el("button", { class: "small secondary remove", onclick: () => removePrompt(r.id) }, "Remove")));
    });
    runtimeList.replaceChildren(rows.length
      ? el("table", {}, el("thead", {}, el("tr", {}, ["prompt", "runs", "added from", "now", ""].map((h) => el("th", {}, h)))), el("tbody", {}, rows))
      : el("p", { class: "muted" }, "No prompt was added to this camera while it runs."));
    return c;
  }
  async function addPrompt(keys) {
    addOut.replaceChildren(el("p", { class: "muted" }, "Adding…"));
    try {
      const body = Object.assign({}, keys);
      if (expires.value) body.expires = expires.value;
      if (once.checked) body.once = true;
      const r = await post("/api/lab/add", { camera, prompt: body });
      addOut.replaceChildren(el("p", { id: "added", "data-prompt": r.prompt }, `Added ${r.prompt}: it starts when its model is in (seconds), and stays after a restart until removed.`));
      for (let i = 0; i < 30; i++) {
        const c = await showRuntime();
        if (c.prompts.some((p) => p.id === r.prompt)) return;
        await new Promise((ok) => setTimeout(ok, 1000));
      }
    } catch (e) { addOut.replaceChildren(el("p", { class: "error" }, e.message)); }
  }
  async function removePrompt(id) {
    try {
      await post("/api/lab/remove", { camera, prompt: id });
      addOut.replaceChildren(el("p", {}, `Removed ${id}.`));
      await showRuntime();
    } catch (e) { addOut.replaceChildren(el("p", { class: "error" }, e.message)); }
  }

  // ------------------------------------------------------------- learning from the marks
  const learnName = el("input", { id: "learn-name", placeholder: "its name (default: the prompt)" });
  const measureOut = el("div", { id: "measure" });
  const prOut = el("div", { id: "pr-plot" });
  const missedG = el("div", { id: "missed", class: "gallery" });
  const alarmsG = el("div", { id: "false-alarms", class: "gallery" });
  const learnOut = el("div", { id: "learn-out" });
  const nextG = el("div", { id: "next", class: "gallery" });
  let learnedName = null;

  function figures(rows) {
    return el("table", { id: "figures" },
      el("thead", {}, el("tr", {}, ["prompt", "measured on", "marks (yes / no)", "threshold", "precision", "recall", "F1", "best F1"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((e) => el("tr", { "data-prompt": e.kind },
        el("td", {}, e.prompt), el("td", {}, e.on), el("td", {}, `${e.marked.yes} / ${e.marked.no}`), el("td", {}, fmt(e.threshold, 3)),
        el("td", { class: "precision" }, fmt(e.precision)), el("td", { class: "recall" }, fmt(e.recall)), el("td", { class: "f1" }, fmt(e.f1)),
        el("td", {}, e.best ? `${fmt(e.best.f1)} at ${fmt(e.best.threshold, 3)}` : "–")))));
  }

  async function measure() {
    measureOut.replaceChildren(el("p", { class: "muted" }, "Measuring…"));
    try {
      const text = await api(`/api/lab/evaluate?${queryString({ threshold: params.threshold.value })}`);
      text.kind = "text";
      const rows = [text];
      let learnedError = null;
      if (learnedName) {
        try {
          const l = await api(`/api/lab/evaluate?${new URLSearchParams({ camera, learned: learnedName })}`);
          l.kind = "learned";
          rows.push(l);
        } catch (e) { learnedError = el("p", { class: "error" }, `${learnedName}: ${e.message}`); }
      }
      const leftOut = rows[0].left_out ? el("p", { class: "muted" }, `${rows[0].left_out} mark(s) left out: made with another CLIP model.`) : null;
      measureOut.replaceChildren(...[figures(rows), learnedError, leftOut].filter(Boolean));
      prOut.replaceChildren(prPlot(rows));
      const last = rows[rows.length - 1];
      missedG.replaceChildren(...last.missed.map((h) => shot(h)));
      alarmsG.replaceChildren(...last.false_alarms.map((h) => shot(h)));
      if (!last.missed.length) missedG.replaceChildren(el("p", { class: "muted" }, "None: every frame marked yes fires."));
      if (!last.false_alarms.length) alarmsG.replaceChildren(el("p", { class: "muted" }, "None: no frame marked no fires."));
    } catch (e) {
      measureOut.replaceChildren(el("p", { class: "error" }, e.message));
    }
  }

  async function teach() {
    learnOut.replaceChildren(el("p", { class: "muted" }, "Learning…"));
    try {
      const r = await post("/api/lab/learn", {
        camera, q: prompt.value, name: learnName.value.trim() || prompt.value,
        negatives: negatives.value.split("\n").map((s) => s.trim()).filter(Boolean),
        templates: templates.value.split("\n").map((s) => s.trim()).filter(Boolean),
      });
      learnedName = r.name;
      learnOut.replaceChildren(
        el("p", { id: "cv" }, `Learned "${r.name}" from ${r.marks.yes} yes and ${r.marks.no} no marks. ` +
          `Cross-validated (${r.cv.folds} folds) at threshold ${fmt(r.threshold, 3)}: precision ${fmt(r.cv.precision)}, recall ${fmt(r.cv.recall)}, F1 ${fmt(r.cv.f1)}.`),
        el("p", {}, `Saved as ${r.file}. Run it on this camera now, until the daemon stops:`),
        el("div", { class: "toolbar" }, el("button", { id: "use-btn", onclick: useLearned }, "Add it to this camera"), useOut),
        el("p", {}, "To keep it, put these lines in the config (then reload: systemctl reload promptcam):"),
        el("pre", { id: "learn-toml" }, r.toml));
      await measure();
    } catch (e) {
      learnOut.replaceChildren(el("p", { class: "error" }, e.message));
    }
  }

  const useOut = el("span", { id: "use-out", class: "muted" });
  async function useLearned() {
    useOut.className = "muted";
    useOut.textContent = "Adding…";
    try {
      const r = await post("/api/lab/use", { camera, name: learnedName });
      useOut.textContent = r.running ? "It already runs on this camera." : "Loading its model; it starts in a few seconds…";
      for (let i = 0; i < 60; i++) {
        const st = await api("/api/status");
        const p = (st.cameras.find((c) => c.id === camera) || { prompts: [] }).prompts.find((q) => q.id === r.prompt);
        if (p) {
          useOut.className = "";
          useOut.textContent = `Running: ${p.on ? "ON" : "OFF"}, score ${fmt(p.score, 3)} (threshold ${fmt(p.decide.threshold, 3)}).`;
          useOut.dataset.running = r.prompt;
          return;
        }
        await new Promise((ok) => setTimeout(ok, 1000));
      }
      useOut.className = "error";
      useOut.textContent = "It did not start within a minute: see the daemon's log.";
    } catch (e) {
      useOut.className = "error";
      useOut.textContent = e.message;
    }
  }

  async function markNext() {
    nextG.replaceChildren(el("p", { class: "muted" }, "Looking…"));
    try {
      const extra = { threshold: params.threshold.value, hours: hours.value };
      const r = learnedName
        ? await api(`/api/lab/next?${new URLSearchParams(Object.assign({ camera, learned: learnedName }, extra))}`)
        : await api(`/api/lab/next?${queryString({ threshold: params.threshold.value })}`);
      nextG.replaceChildren(...r.frames.map((h) => shot(h, markButtons(h))));
      if (!r.frames.length) nextG.replaceChildren(el("p", { class: "muted" }, "No unmarked frame with a picture is left in this period."));
    } catch (e) {
      nextG.replaceChildren(el("p", { class: "error" }, e.message));
    }
  }

  const form = el("form", { class: "card", id: "lab-form", onsubmit: score },
    el("div", { class: "form" },
      el("div", {}, el("label", { for: "prompt" }, "Prompt"), prompt, el("label", { for: "hours" }, "Frames"), hours),
      el("div", {}, el("label", { for: "negatives" }, "Negatives"), negatives),
      el("div", {}, el("label", { for: "templates" }, "Ensemble templates"), templates)),
    el("div", { class: "toolbar", style: "margin-top:.8rem" }, scoreBtn), summary);
  main.replaceChildren(el("h1", {}, `Prompt lab · ${cam.name}`), form,
    el("section", { class: "card" }, el("h2", {}, "Score over time"), plot, el("h2", {}, "Histogram"), hist),
    el("section", { class: "card" }, el("h2", {}, "Best matches"), el("p", { class: "muted" }, "Among the frames with a thumbnail (one every few seconds, and on every event). Mark them: yes, it shows the prompt; no, it does not."), top,
      el("h2", { style: "margin-top:1rem" }, "Worst matches"), bottom),
    el("section", { class: "card", id: "learning" }, el("h2", {}, "Measure it on your marks, and teach it"),
      el("p", { class: "muted" }, "Precision: of the frames that fire, how many you marked yes. Recall: of the frames you marked yes, how many fire. " +
        "Teaching fits a prompt of its own to your marks (a few dozen help most); it is checked on the marks it did not learn from."),
      el("div", { class: "toolbar" }, el("button", { id: "measure-btn", class: "secondary", onclick: measure }, "Measure on my marks"),
        learnName, el("button", { id: "learn-btn", onclick: teach }, "Teach this prompt"),
        el("button", { id: "next-btn", class: "secondary", onclick: markNext }, "Which frames should I mark next?")),
      learnOut, el("div", { class: "measure-row" }, measureOut, prOut),
      el("h2", { style: "margin-top:1rem" }, "Missed: marked yes, does not fire"), missedG,
      el("h2", { style: "margin-top:1rem" }, "False alarms: marked no, would fire"), alarmsG,
      el("h2", { style: "margin-top:1rem" }, "Mark these next"), el("p", { class: "muted" }, "The frames it is least sure about, spread over time and scenes."), nextG),
    el("section", { class: "card" }, el("h2", {}, "Would it have fired?"),
      el("div", { class: "params" }, Object.entries(params).map(([k, e]) => el("div", {}, el("label", { for: k }, k.replace("_", " ")), e))),
      el("div", { class: "toolbar", style: "margin-top:.6rem" }, el("button", { id: "replay-btn", onclick: replay }, "Replay the decider"),
        el("button", { id: "suggest-btn", class: "secondary", onclick: suggest }, "Suggest a threshold from my marks")),
      suggestion, fired, moments),
    el("section", { class: "card", id: "run-it" }, el("h2", {}, "Run it on this camera"),
      el("p", { class: "muted" }, "Adds the prompt above, with these settings, to the running camera: its own sensor in Home Assistant, its events on MQTT. No restart, no edit of the config file."),
      el("div", { class: "toolbar" }, expires, el("label", { for: "once" }, once, " end after its first event"),
        el("button", { id: "add-btn", onclick: () => addPrompt(promptKeys()) }, "Add to this camera")),
      addOut, runtimeList),
    el("section", { class: "card" }, el("h2", {}, "A prompt made of these pictures"),
      el("p", { class: "muted" }, "The frames marked yes become the examples of a new CLIP prompt (their mean image embedding), those marked no its negative examples."),
      el("div", { class: "toolbar" }, exampleName, el("button", { id: "examples-btn", class: "secondary", onclick: makeExamples }, "Make a prompt from the frames marked yes")),
      examplesOut),
    el("section", { class: "card" }, el("h2", {}, "Apply the threshold"),
      el("div", { class: "toolbar" }, applyTo, el("button", { id: "apply-btn", onclick: apply }, "Apply to the running prompt")), applyOut));
  await showRuntime();
  if (prompt.value) await score();
}

nav();
const pages = { overview, camera: cameraPage, lab: labPage };
(pages[page] || overview)().catch((e) => main.replaceChildren(el("p", { class: "error" }, e.message)));

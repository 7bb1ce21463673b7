// The mode atlas (qkdissect): a layer x head grid per model, a head's modes, a mode's top images with the query and
// key maps. Data files are scripts added on demand (a browser reads no JSON from file://): data/index.js calls
// QKAtlas.index, data/<model>/model.js QKAtlas.model, data/<model>/heads/L<l>-H<h>.js QKAtlas.head.
"use strict";

const QKAtlas = (() => {
  // one character per map value, 64 levels (the store's 8-bit codes, top 6 bits)
  const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const LEVEL = new Uint8Array(128);
  for (let i = 0; i < ALPHABET.length; i++) LEVEL[ALPHABET.charCodeAt(i)] = i;
  const SIGNS = ["+", "-"];

  const state = { index: null, models: {}, heads: {}, loading: {}, shown: [], images: {}, token: 0 };
  const filters = { sign: "all", cmin: -1, cmax: 1, lmin: 0, lmax: Infinity, share: 0 };

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k === "style") e.style.cssText = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  const fmt = (x, d) => (x === null || x === undefined ? "—" : (x >= 0 ? "+" : "") + x.toFixed(d));
  const modeCode = (l, h, n, s) => `L${l} H${h} M${n}` + (s === "-" ? " (-)" : "");

  // ------------------------------------------------------------------------------------------ data
  function script(src) {
    if (!state.loading[src]) {
      state.loading[src] = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = src;
        s.onload = () => resolve();
        s.onerror = () => { delete state.loading[src]; reject(new Error("cannot load " + src)); };
        document.head.append(s);
      });
    }
    return state.loading[src];
  }
  const dir = (key) => "data/" + encodeURIComponent(key);

  async function getModel(key) {
    if (!state.models[key]) await script(dir(key) + "/model.js");
    return state.models[key];
  }
  async function getHead(key, l, h) {
    const id = `${key}/${l}/${h}`;
    if (!state.heads[id]) await script(`${dir(key)}/heads/L${l}-H${h}.js`);
    return state.heads[id];
  }

  function prepare(m) {
    // the singular-value share of each mode in its head, and its degenerate block (first, last mode) or null
    const M = m.modes, n = m.layers * m.heads * M;
    m.share = new Float64Array(n);
    m.blockFirst = new Int32Array(n).fill(-1);
    m.blockLast = new Int32Array(n).fill(-1);
    for (let lh = 0; lh < m.layers * m.heads; lh++) {
      let sum = 0;
      for (let j = 0; j < M; j++) sum += m.S[lh * M + j] || 0;
      for (let j = 0; j < M; j++) m.share[lh * M + j] = sum > 0 ? (m.S[lh * M + j] || 0) / sum : 0;
      let first = 0;
      for (let j = 1; j <= M; j++) {
        if (j === M || m.block[lh * M + j] !== m.block[lh * M + first]) {
          if (j - first > 1) for (let t = first; t < j; t++) { m.blockFirst[lh * M + t] = first; m.blockLast[lh * M + t] = j - 1; }
          first = j;
        }
      }
    }
    return m;
  }

  // ------------------------------------------------------------------------------------------ filters
  function matches(m, l, i) {
    const c = m.cosine[i];
    if (l < filters.lmin || l > filters.lmax) return false;
    if (filters.sign === "pos" && !(c > 0)) return false;
    if (filters.sign === "neg" && !(c < 0)) return false;
    if (c < filters.cmin || c > filters.cmax) return false;
    return m.share[i] >= filters.share;
  }
  function headMatches(m, l, h) {
    let n = 0;
    for (let j = 0; j < m.modes; j++) if (matches(m, l, (l * m.heads + h) * m.modes + j)) n++;
    return n;
  }
  function readFilters() {
    const num = (id, dflt) => { const v = parseFloat($(id).value); return Number.isFinite(v) ? v : dflt; };
    filters.sign = $("f-sign").value;
    filters.cmin = num("f-cmin", -1);
    filters.cmax = num("f-cmax", 1);
    filters.lmin = num("f-lmin", 0);
    filters.lmax = num("f-lmax", Infinity);
    filters.share = num("f-share", 0);
  }

  // ------------------------------------------------------------------------------------------ maps
  function percentile(sorted, p) {
    const pos = (p / 100) * (sorted.length - 1), lo = Math.floor(pos), hi = Math.ceil(pos);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
  }
  // clipped to its [30th, 95th] percentile and scaled to [0, 1], as the figures draw it
  function unit(values) {
    const sorted = Float64Array.from(values).sort();
    const a0 = percentile(sorted, 30), a1 = percentile(sorted, 95);
    return values.map((v) => (a1 > a0 ? Math.min(1, Math.max(0, (v - a0) / (a1 - a0))) : 0));
  }
  function slotMap(text, slot, cells) {
    const out = new Array(cells);
    for (let i = 0; i < cells; i++) out[i] = LEVEL[text.charCodeAt(slot * cells + i)];
    return out;
  }
  function image(m, i) {
    const id = `${m.key}/${i}`;
    if (!state.images[id]) { state.images[id] = new Image(); state.images[id].src = `${dir(m.key)}/thumbs/${i}.jpg`; }
    return state.images[id];
  }
  // red = query map, cyan = key map, white = both, over the dimmed grey image
  function drawOverlay(canvas, img, m, head, slot) {
    const draw = () => {
      const [gy, gx] = m.map_grid, cells = gy * gx;
      const q = unit(slotMap(head.q, slot, cells)), k = unit(slotMap(head.k, slot, cells));
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const ctx = canvas.getContext("2d");
      ctx.filter = "grayscale(1) brightness(0.45)";
      ctx.drawImage(img, 0, 0);
      ctx.filter = "none";
      const small = document.createElement("canvas");
      small.width = gx;
      small.height = gy;
      const sctx = small.getContext("2d"), px = sctx.createImageData(gx, gy);
      for (let i = 0; i < cells; i++) {
        px.data[4 * i] = 255 * q[i];
        px.data[4 * i + 1] = px.data[4 * i + 2] = 255 * k[i];
        px.data[4 * i + 3] = 255 * Math.max(q[i], k[i]);
      }
      sctx.putImageData(px, 0, 0);
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
    };
    if (img.complete && img.naturalWidth > 0) draw();
    else img.addEventListener("load", draw, { once: true });
  }
  function colour(c, scale) {
    // diverging: blue (< 0), white (0), red (> 0)
    if (c === null || c === undefined) return "#ccc";
    const t = Math.max(-1, Math.min(1, c / scale));
    const mix = (a, b) => Math.round(247 + (b - 247) * Math.abs(t));
    return t >= 0 ? `rgb(${mix(247, 178)},${mix(247, 24)},${mix(247, 43)})` : `rgb(${mix(247, 33)},${mix(247, 102)},${mix(247, 172)})`;
  }
  function key(m) {
    const sw = (c) => el("span", { class: "sw", style: "background:" + c });
    const [gy, gx] = m.map_grid, [ty, tx] = m.grid;
    const pooled = gy === ty && gx === tx ? `${gx} × ${gy} patch grid` : `averaged from the ${tx} × ${ty} patch grid to ${gx} × ${gy}`;
    return el("div", { class: "key" },
      el("span", {}, sw("#ff0000"), "query map x·u (red)"),
      el("span", {}, sw("#00ffff"), "key map x·v (cyan)"),
      el("span", {}, sw("#ffffff"), "both (white)"),
      el("span", {}, `each map clipped to its 30th–95th percentile, over the dimmed grey image; ${pooled}; `
        + `tokens: ${m.token_source}; image score: ${m.image_score}`));
  }

  // ------------------------------------------------------------------------------------------ views
  function scaleOf(models) {
    let s = 0.05;
    for (const m of models) for (const c of m.head_weighted) if (c !== null) s = Math.max(s, Math.abs(c));
    return s;
  }
  function scaleBar(scale) {
    const bar = el("canvas", { class: "bar", width: "160", height: "10" }), ctx = bar.getContext("2d");
    for (let x = 0; x < 160; x++) { ctx.fillStyle = colour(((x / 159) * 2 - 1) * scale, scale); ctx.fillRect(x, 0, 1, 10); }
    return el("div", { class: "scale" }, "weighted cos(u, v) of the head:", fmt(-scale, 2), bar, fmt(scale, 2));
  }

  async function viewGrid(view) {
    const models = await Promise.all(state.shown.map(getModel));
    const scale = scaleOf(models), height = 520;
    const grids = el("div", { class: "grids" });
    let total = 0, shown = 0;
    for (const m of models) {
      const grid = el("div", { class: "grid", style: `grid-template-columns: 3.2em repeat(${m.heads}, minmax(18px, 26px)); grid-template-rows: 1.4em repeat(${m.layers}, ${height / m.layers}px)` });
      grid.append(el("span", { class: "lab" }));
      for (let h = 0; h < m.heads; h++) grid.append(el("span", { class: "lab hlab", text: "H" + h }));
      for (let l = 0; l < m.layers; l++) {
        grid.append(el("span", { class: "lab", text: "L" + l }));
        for (let h = 0; h < m.heads; h++) {
          const c = m.head_weighted[l * m.heads + h], n = headMatches(m, l, h);
          total += m.modes; shown += n;
          grid.append(el("button", {
            class: "cell" + (n ? "" : " dim"), style: "background:" + colour(c, scale),
            title: `${m.label} L${l} H${h}: weighted cosine ${fmt(c, 3)}; ${n} of ${m.modes} modes match the filters`,
            "data-model": m.key, "data-layer": l, "data-head": h, "data-weighted": c,
            onclick: () => { location.hash = `#/${m.key}/L${l}/H${h}`; },
          }));
        }
      }
      const [gy, gx] = m.map_grid;
      grids.append(el("div", { class: "grid-model" },
        el("h2", { text: m.label }),
        el("p", { class: "about", text: `${m.layers} layers × ${m.heads} heads × ${m.modes} modes; top ${m.top_k} of ${m.image_set} (${m.images.length} images shown); maps ${gx} × ${gy}. Rows at the same height are at the same depth.` }),
        grid));
    }
    $("match-count").textContent = `${shown} of ${total} modes match`;
    view.replaceChildren(el("p", { class: "crumbs", text: "Click a head to see its modes." }), scaleBar(scale), grids);
  }

  function sameDepth(m, l) {
    const others = state.shown.filter((k) => k !== m.key && state.models[k]).map((k) => state.models[k]);
    if (!others.length) return null;
    const depth = m.depth[l], scale = scaleOf([m, ...others]);
    const box = el("div", { class: "samedepth" }, `At depth ${depth.toFixed(2)} in the other models: `);
    for (const o of others) {
      let best = 0;
      for (let j = 0; j < o.layers; j++) if (Math.abs(o.depth[j] - depth) < Math.abs(o.depth[best] - depth)) best = j;
      const row = el("span", {}, ` ${o.label} L${best}: `);
      for (let h = 0; h < o.heads; h++) {
        row.append(el("a", { href: `#/${o.key}/L${best}/H${h}`, text: "H" + h, style: "background:" + colour(o.head_weighted[best * o.heads + h], scale) }));
      }
      box.append(row);
    }
    return box;
  }

  function crumbs(m, l, h, n, s) {
    const c = el("p", { class: "crumbs" }, el("a", { href: "#/", text: "all heads" }), " › ", m.label);
    if (l !== undefined) c.append(" › ", n === undefined ? `L${l} H${h}` : el("a", { href: `#/${m.key}/L${l}/H${h}`, text: `L${l} H${h}` }));
    if (n !== undefined) c.append(" › ", `M${n} (${s})`);
    return c;
  }

  async function viewHead(view, m, l, h) {
    const head = await getHead(m.key, l, h);
    const base = (l * m.heads + h) * m.modes, R = m.top_k;
    const rows = [];
    let n = 0;
    for (let j = 0; j < m.modes; j++) {
      const i = base + j;
      if (!matches(m, l, i)) continue;
      n++;
      const previews = SIGNS.map((s, si) => {
        const slot = (j * 2 + si) * R, img = head.image[slot];
        if (img < 0) return el("td", { class: "empty", text: "—" });
        const canvas = el("canvas", { title: `top image of ${modeCode(l, h, j, s)}: ${m.images[img]}`, onclick: () => { location.hash = `#/${m.key}/L${l}/H${h}/M${j}${s}`; } });
        drawOverlay(canvas, image(m, img), m, head, slot);
        return el("td", {}, canvas, el("small", { text: (head.score[slot] === null ? "" : head.score[slot].toPrecision(3)) + slotEffect(head, slot) }));
      });
      const c = m.cosine[i], block = m.blockFirst[i] >= 0 ? `† M${m.blockFirst[i]}–M${m.blockLast[i]}` : "";
      rows.push(el("tr", { "data-mode": j },
        el("td", { class: "left" }, el("a", { href: `#/${m.key}/L${l}/H${h}/M${j}+`, text: `M${j}` })),
        el("td", { text: m.S[i].toPrecision(4) }),
        el("td", { text: (100 * m.share[i]).toFixed(1) + "%" }),
        el("td", { class: "cos", "data-cosine": c }, fmt(c, 3), el("span", { class: "cosbar", style: `width:${Math.round(40 * Math.abs(c))}px;background:${colour(c, 1)}` })),
        el("td", { class: "left" }, el("span", { class: "block", text: block }), m.null[i] ? el("span", { class: "null", text: " null" }) : null),
        ...(m.ablation ? [el("td", { class: "effect", "data-effect": modeEffect(m, i).value ?? "", text: modeEffect(m, i).short })] : []),
        ...previews));
    }
    const table = el("table", { class: "modes" },
      el("thead", {}, el("tr", {}, ...["mode", "s_n", "share of Σs", "cos(u, v)", "block / null", ...(m.ablation ? ["removed: attention KL"] : []), "top image, +", "top image, −"].map((t) => el("th", { text: t })))),
      el("tbody", {}, ...rows));
    const wc = m.head_weighted[l * m.heads + h];
    const nav = el("p", { class: "nav" },
      h > 0 ? el("a", { href: `#/${m.key}/L${l}/H${h - 1}`, text: "‹ previous head" }) : null,
      h + 1 < m.heads ? el("a", { href: `#/${m.key}/L${l}/H${h + 1}`, text: "next head ›" }) : null,
      l > 0 ? el("a", { href: `#/${m.key}/L${l - 1}/H${h}`, text: "layer above ▲" }) : null,
      l + 1 < m.layers ? el("a", { href: `#/${m.key}/L${l + 1}/H${h}`, text: "layer below ▼" }) : null);
    $("match-count").textContent = `${n} of ${m.modes} modes match`;
    view.replaceChildren(...[crumbs(m, l, h), el("h2", { id: "head-title", text: `${m.label} L${l} H${h}` }),
      el("p", { text: `weighted cosine ${fmt(wc, 3)}, depth ${m.depth[l].toFixed(2)}; ${n} of ${m.modes} modes match the filters. † a block of near-equal singular values: only the block's sum is identifiable. Click a mode or a top image.` }),
      nav, sameDepth(m, l), key(m), table].filter(Boolean));
  }

  function pythonLine(m, l, h, n, s) {
    const st = m.stores;
    return `import qkdissect as qk; mode = qk.open_store(${JSON.stringify(st.modes)}).sel(layer=${l}, head=${h}, mode=${n}); `
      + `top = qk.open_store(${JSON.stringify(st.maps)}).sel(layer=${l}, head=${h}, mode=${n}, sign="${s}")`;
  }

  function prefixShare(m, head, n, si) {
    // the share of the images whose key map (sign −: of −v) peaks on a CLS / distillation / register token
    if (!head.key_prefix || !m.valid_images || !m.prefix_tokens.length) return null;
    const K = m.prefix_kinds.length, names = { cls: "CLS", distillation: "distillation", register: "registers" };
    const parts = m.prefix_kinds.map((kind, c) => [kind, head.key_prefix[(n * 2 + si) * K + c]])
      .filter(([kind]) => m.prefix_tokens.includes(kind))
      .map(([kind, count]) => `${names[kind] || kind} ${(100 * count / m.valid_images).toFixed(1)}%`);
    return `${parts.join(" · ")} of ${m.valid_images} images (the rest: a patch)`;
  }

  function modeEffect(m, i) {
    // the mode's ablation effect (the head's attention KL when its term is removed): on its top images, on all
    const a = m.ablation, top = a.top ? a.top[i] : null, all = a.all[i];
    if (all === null) return { value: null, short: "—", long: "not ablated" };
    const value = top !== null ? top : all;
    const long = (top !== null ? `${top.toPrecision(3)} nats on its top images, ` : "")
      + `${all.toPrecision(3)} on all ${a.images} images (${a.kind}-ablation)`;
    return { value, short: value.toPrecision(3), long };
  }

  function slotEffect(head, slot) {
    // a top image's own attention KL when the mode is removed (empty when not measured)
    const e = head.effect ? head.effect[slot] : null;
    return e === null || e === undefined ? "" : ` · KL ${e.toPrecision(3)}`;
  }

  async function viewMode(view, m, l, h, n, s) {
    const head = await getHead(m.key, l, h);
    const i = (l * m.heads + h) * m.modes + n, si = SIGNS.indexOf(s), R = m.top_k;
    const cards = el("div", { class: "cards", id: "cards" });
    for (let r = 0; r < R; r++) {
      const slot = (n * 2 + si) * R + r, img = head.image[slot];
      if (img < 0) continue;
      const photo = el("img", { class: "photo", src: `${dir(m.key)}/thumbs/${img}.jpg`, alt: m.images[img] });
      const canvas = el("canvas", { class: "overlay" });
      drawOverlay(canvas, photo, m, head, slot);
      const score = head.score[slot];
      cards.append(el("figure", { class: "card", "data-image": m.images[img], "data-score": score },
        canvas, photo, el("figcaption", { text: `#${r + 1} ${m.images[img]} — score ${score === null ? "—" : score.toPrecision(4)}${slotEffect(head, slot)}` })));
    }
    const c = m.cosine[i], block = m.blockFirst[i] >= 0 ? `yes: modes M${m.blockFirst[i]}–M${m.blockLast[i]} have near-equal singular values (only their sum is identifiable)` : "no";
    const stat = (t, v, attrs) => [el("dt", { text: t }), el("dd", attrs || {}, v)];
    const stats = el("dl", { class: "stats" },
      ...stat("cos(u, v)", fmt(c, 4), { id: "mode-cosine", "data-cosine": c }),
      ...stat("singular value s_n", m.S[i].toPrecision(5)),
      ...stat("share of the head's Σs", (100 * m.share[i]).toFixed(2) + "%"),
      ...stat("degenerate block", block),
      ...stat("numerically null", m.null[i] ? "yes" : "no"),
      ...stat("depth", m.depth[l].toFixed(2)),
      ...(prefixShare(m, head, n, si) ? stat("key map's top token on", prefixShare(m, head, n, si), { id: "mode-prefix" }) : []),
      ...(m.ablation ? stat("removed: its head's attention KL", modeEffect(m, i).long, { id: "mode-effect", "data-effect": modeEffect(m, i).value ?? "" }) : []));
    const link = (t, hash, here) => el("a", { href: hash, text: t, class: here ? "here" : "" });
    const nav = el("p", { class: "nav" },
      link("sign +", `#/${m.key}/L${l}/H${h}/M${n}+`, s === "+"), link("sign − (−u, −v)", `#/${m.key}/L${l}/H${h}/M${n}-`, s === "-"),
      n > 0 ? link("‹ previous mode", `#/${m.key}/L${l}/H${h}/M${n - 1}${s}`) : null,
      n + 1 < m.modes ? link("next mode ›", `#/${m.key}/L${l}/H${h}/M${n + 1}${s}`) : null);
    const toggle = el("label", {}, el("input", { type: "checkbox", id: "show-photos", onchange: (e) => cards.classList.toggle("photos", e.target.checked) }), " photographs without the maps");
    const python = el("textarea", { class: "python", id: "python-line", readonly: "", rows: "2", onfocus: (e) => e.target.select() });
    python.value = pythonLine(m, l, h, n, s);
    $("match-count").textContent = "";
    view.replaceChildren(crumbs(m, l, h, n, s), el("h2", { id: "mode-title", text: `${m.label} ${modeCode(l, h, n, s)}` }),
      stats, nav, key(m), toggle, cards,
      el("p", { text: "In Python (the mode's u, s, v; its top images, scores and maps):" }), python);
  }

  // ------------------------------------------------------------------------------------------ routing
  function parseHash() {
    const parts = decodeURIComponent(location.hash.replace(/^#\/?/, "")).split("/").filter(Boolean);
    if (!parts.length) return { view: "grid" };
    const [key, L, H, M] = parts, l = /^L(\d+)$/.exec(L || ""), h = /^H(\d+)$/.exec(H || ""), n = /^M(\d+)([+-])?$/.exec(M || "");
    if (!l || !h) return { view: "grid" };
    return { view: n ? "mode" : "head", key, l: +l[1], h: +h[1], n: n ? +n[1] : undefined, s: n ? n[2] || "+" : undefined };
  }

  async function render() {
    const token = ++state.token, view = $("view"), r = parseHash();
    try {
      view.dataset.view = "";
      if (r.view === "grid") await viewGrid(view);
      else {
        const m = await getModel(r.key).catch(() => null);
        if (!m || r.l >= m.layers || r.h >= m.heads || (r.n !== undefined && r.n >= m.modes)) {
          view.replaceChildren(el("p", { text: `No ${r.key || ""} L${r.l} H${r.h}${r.n !== undefined ? " M" + r.n : ""} in this atlas.` }));
          return;
        }
        if (token !== state.token) return;
        if (r.view === "head") await viewHead(view, m, r.l, r.h);
        else await viewMode(view, m, r.l, r.h, r.n, r.s);
      }
      if (token === state.token) view.dataset.view = r.view;  // what a test waits for
    } catch (e) {
      view.replaceChildren(el("p", { text: "Could not show this page: " + e.message }));
    }
  }

  function search(text) {
    const msg = $("search-message");
    msg.textContent = "";
    const found = /L\s*(\d+)\s*H\s*(\d+)(?:\s*M\s*(\d+)\s*\(?([+-])?\)?)?/i.exec(text);
    if (!found) { msg.textContent = "type e.g. L8 H9 M2, L8 H9, or L8 H9 M2 -"; return; }
    const named = state.index.models.find((m) => text.includes(m.key));
    const current = parseHash().key;
    const key = named ? named.key : state.shown.includes(current) ? current : state.shown[0];
    const m = state.index.models.find((x) => x.key === key);
    const [l, h, n] = [found[1], found[2], found[3]].map((v) => (v === undefined ? undefined : +v));
    if (l >= m.layers || h >= m.heads || (n !== undefined && n >= m.modes)) {
      msg.textContent = `${m.label} has layers 0-${m.layers - 1}, heads 0-${m.heads - 1}, modes 0-${m.modes - 1}`;
      return;
    }
    location.hash = `#/${key}/L${l}/H${h}` + (n === undefined ? "" : `/M${n}${found[4] || "+"}`);
  }

  function start() {
    const models = state.index.models;
    state.shown = models.map((m) => m.key);
    const choice = $("model-choice");
    if (models.length > 1) {
      choice.append("models side by side: ");
      for (const m of models) {
        choice.append(el("label", {}, el("input", { type: "checkbox", checked: "", value: m.key, onchange: () => {
          state.shown = [...choice.querySelectorAll("input:checked")].map((x) => x.value);
          render();
        } }), " " + m.label));
      }
    }
    for (const id of ["f-sign", "f-cmin", "f-cmax", "f-lmin", "f-lmax", "f-share"]) $(id).addEventListener("change", () => { readFilters(); render(); });
    $("f-reset").addEventListener("click", () => {
      Object.entries({ "f-sign": "all", "f-cmin": -1, "f-cmax": 1, "f-lmin": 0, "f-lmax": "", "f-share": 0 }).forEach(([id, v]) => { $(id).value = v; });
      readFilters();
      render();
    });
    $("search").addEventListener("submit", (e) => { e.preventDefault(); search($("search-box").value); });
    window.addEventListener("hashchange", render);
    readFilters();
    render();
  }

  return {
    index(data) { state.index = data; if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start(); },
    model(data) { state.models[data.key] = prepare(data); },
    head(key, data) { state.heads[`${key}/${data.layer}/${data.head}`] = data; },
    // for scripts and tests: the models shown, and a loaded model's summary
    shown: () => state.shown.slice(),
    summary: (key) => state.models[key],
  };
})();

"use strict";
// SPES report page: index of utterances and the per-utterance view. Data comes from the JSON script
// elements the builder writes: "spes-meta" (index rows, colour map) and "spes-u<i>" (one utterance,
// parsed and inflated only when its view opens). Everything is drawn locally; nothing is fetched.
(() => {
  const $ = (id) => document.getElementById(id);
  const META = JSON.parse($("spes-meta").textContent);
  const LUT = META.colormap; // 256 RGB triples, flattened
  const OVERLAY = META.overlay; // the overlay's hue, opacity curve and grey (as in the figures: plotting.py)
  const DIVERGING = META.diverging; // the same for signed (contrastive) maps, centred on 0; absent without them
  const SPACE = "\u2581";
  const state = { u: -1, d: null, k: 0, hover: -1, mode: "norm", layer: "overlay", sel: null, playing: false };
  const report = { firstViewMs: null, state }; // read by the browser test
  window.spesReport = report;

  // ---- data ---------------------------------------------------------------------------------------
  async function inflate(b64) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  const cache = new Map();
  async function load(i) {
    if (cache.has(i)) return cache.get(i);
    const d = JSON.parse($("spes-u" + i).textContent);
    d.maps = await inflate(d.maps);
    d.features = d.features ? await inflate(d.features) : null;
    if (d.audio) d.audio.bytes = await inflate(d.audio.data);
    d.prefixMax = d.prefixRaw.flat().reduce((a, v) => Math.max(a, v), 1e-12);
    d.sentence = null;
    cache.set(i, d);
    if (cache.size > 3) cache.delete(cache.keys().next().value);
    return d;
  }

  // Token k's spectrogram map in raw or normalised units, (T, C) row-major over time.
  function tokenMap(d, k, kind) {
    const n = d.T * d.C, off = k * n, q = d.maps, out = new Float32Array(n);
    const lo = d[kind][0][k], s = (d[kind][1][k] - lo) / 255;
    for (let i = 0; i < n; i++) out[i] = lo + q[off + i] * s;
    return out;
  }

  function meanMap(d, rows) {
    const n = d.T * d.C, out = new Float32Array(n);
    for (const k of rows) {
      const lo = d.norm[0][k], s = (d.norm[1][k] - lo) / 255, off = k * n, q = d.maps;
      for (let i = 0; i < n; i++) out[i] += lo + q[off + i] * s;
    }
    for (let i = 0; i < n; i++) out[i] /= rows.length;
    return out;
  }

  const meanRows = (m, rows) => m[0].map((_, j) => rows.reduce((a, k) => a + m[k][j], 0) / rows.length);
  const wordRows = (d, k) => (d.words[k] < 0 ? [k] : d.words.flatMap((w, i) => (w === d.words[k] ? [i] : [])));
  const pieceText = (p) => (p === "</s>" ? "</s>" : p.split(SPACE).join(""));

  // What the current mode shows for token k: the map, its colour range, the prefix bars, a caption.
  function current(d, k) {
    if (d.contrastive) return contrastiveCurrent(d);
    const tok = `<b>${escapeHtml(pieceText(d.tokens[k]))}</b>`;
    if (state.mode === "raw") {
      return { map: tokenMap(d, k, "raw"), lim: d.limits.raw, bars: d.prefixRaw[k].map((v) => v / d.prefixMax),
               barMax: d.prefixMax, rows: [k], caption: `Token ${k + 1} of ${d.K}: ${tok}. Raw map (Eq. 3); colour scale shared by all tokens of the utterance.` };
    }
    if (state.mode === "norm") {
      return { map: tokenMap(d, k, "norm"), lim: d.limits.norm[k], bars: d.prefixNorm[k], rows: [k],
               caption: `Token ${k + 1} of ${d.K}: ${tok}. Normalised map (per-token z-score, then min-max with its prefix map).` };
    }
    if (state.mode === "word") {
      const rows = wordRows(d, k);
      const text = rows.map((r) => pieceText(d.tokens[r])).join("");
      return { map: meanMap(d, rows), lim: d.limits.word[k], bars: meanRows(d.prefixNorm, rows), rows,
               caption: `Word <b>${escapeHtml(text)}</b> (token${rows.length > 1 ? "s" : ""} ${rows[0] + 1}` +
                        `${rows.length > 1 ? "\u2013" + (rows[rows.length - 1] + 1) : ""}): mean of its tokens' normalised maps.` };
    }
    if (!d.sentence) d.sentence = meanMap(d, d.tokens.map((_, i) => i));
    return { map: d.sentence, lim: d.limits.sentence, bars: meanRows(d.prefixNorm, d.tokens.map((_, i) => i)),
             rows: d.tokens.map((_, i) => i), caption: `Sentence level: mean of all ${d.K} normalised token maps.` };
  }

  // A contrastive explanation has one signed map, the word's, raw or normalised: a diverging colour
  // scale centred on 0 and prefix bars over the decoder inputs before the word (signed, |v| as height).
  function contrastiveCurrent(d) {
    const c = d.contrastive, kind = state.mode === "raw" ? "raw" : "norm";
    const half = Math.max(Math.abs(d[kind][0][0]), Math.abs(d[kind][1][0])) || 1;
    const prefix = kind === "raw" ? d.prefixRaw[0] : d.prefixNorm[0];
    const pmax = prefix.reduce((a, v) => Math.max(a, Math.abs(v)), 0) || 1;
    const rows = [];
    for (let k = c.start; k <= c.end; k++) rows.push(k);
    const what = kind === "raw" ? `Raw map (Eq. 3, ${escapeHtml(c.scorer)} score)` : `Normalised map (${escapeHtml(c.normalizer)})`;
    return { map: tokenMap(d, 0, kind), lim: [-half, half], lut: DIVERGING, signed: true, bars: prefix.map((v) => v / pmax),
             barMax: pmax, rows,
             caption: `Why <b>${escapeHtml(c.word)}</b> rather than <b>${escapeHtml(c.foil_word)}</b>? ${what}; colour scale ` +
                      "centred on 0: red cells favour the target word (occluding them lowers its score against the foil), blue cells the foil." };
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  // ---- drawing ------------------------------------------------------------------------------------
  const M = { l: 54, r: 92, t: 10, plot: 250 };
  const geometry = (d, W) => {
    const pw = W - M.l - M.r, words = d.timings ? 24 : 0;
    const yWords = M.t + M.plot + 6, yTop = yWords + (words || 10), yAxis = yTop + 10;
    return { pw, yWords, yTop, yAxis, H: yAxis + 38, x: (t) => M.l + (t / (d.T * d.shift)) * pw };
  };

  function sizeCanvas(c, W, H) {
    const r = window.devicePixelRatio || 1;
    c.width = Math.round(W * r);
    c.height = Math.round(H * r);
    c.style.height = H + "px";
    const g = c.getContext("2d");
    g.setTransform(r, 0, 0, r, 0, 0);
    return g;
  }

  function rgb(s, lut = LUT) {
    const i = 3 * Math.max(0, Math.min(255, Math.round(s * 255)));
    return [lut[i], lut[i + 1], lut[i + 2]];
  }

  // Opacity of the overlay's hue at s (0..1) in the colour range: 0 at the map's background level.
  const overlayAlpha = (s) => OVERLAY.alpha * Math.pow(s, OVERLAY.gamma);

  function image(d, cur) {
    const { T, C, features } = d, img = new ImageData(T, C), px = img.data, [lo, hi] = cur.lim;
    const layer = features ? state.layer : "saliency";
    for (let t = 0; t < T; t++) {
      for (let c = 0; c < C; c++) {
        const i = t * C + c, o = ((C - 1 - c) * T + t) * 4;
        // Dark = loud, as in the paper's figures; paler under the overlay so its hue stands out.
        const grey = features ? 255 - (layer === "overlay" ? OVERLAY.pale : 1) * features[i] : 0;
        let r = grey, g = grey, b = grey;
        if (layer !== "spectrogram") {
          const s = Math.max(0, Math.min(1, (cur.map[i] - lo) / (hi - lo || 1)));
          let col = rgb(s), a = 1;
          if (cur.signed) {
            // Signed maps keep their diverging colours; under the overlay they grow opaque with |saliency|.
            col = rgb(s, cur.lut);
            if (layer === "overlay") a = overlayAlpha(Math.abs(2 * s - 1));
          } else if (layer === "overlay") {
            col = OVERLAY.rgb;
            a = overlayAlpha(s);
          }
          r = grey * (1 - a) + col[0] * a; g = grey * (1 - a) + col[1] * a; b = grey * (1 - a) + col[2] * a;
        }
        px[o] = r; px[o + 1] = g; px[o + 2] = b; px[o + 3] = 255;
      }
    }
    return img;
  }

  function niceStep(range, slots) {
    for (const s of [0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300]) if (range / s <= slots) return s;
    return 600;
  }

  const fmt = (v) => (Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(2));

  function draw() {
    const d = state.d;
    if (!d) return;
    const k = state.hover >= 0 ? state.hover : state.k;
    const cur = current(d, k);
    state.cur = cur;
    const main = $("main"), W = main.parentElement.clientWidth, G = geometry(d, W);
    const g = sizeCanvas(main, W, G.H);
    g.clearRect(0, 0, W, G.H);
    const off = document.createElement("canvas");
    off.width = d.T; off.height = d.C;
    off.getContext("2d").putImageData(image(d, cur), 0, 0);
    g.imageSmoothingEnabled = d.T > G.pw;
    g.drawImage(off, M.l, M.t, G.pw, M.plot);
    g.strokeStyle = "#c9ced6";
    g.strokeRect(M.l - 0.5, M.t - 0.5, G.pw + 1, M.plot + 1);

    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#4a5262";
    g.textAlign = "right"; g.textBaseline = "middle";
    const melStep = d.C >= 40 ? 20 : d.C >= 10 ? 5 : 1;
    for (let c = 0; c <= d.C; c += melStep) {
      const y = M.t + M.plot - (c / d.C) * M.plot;
      g.fillText(String(c), M.l - 7, y);
      g.fillRect(M.l - 4, Math.round(y), 4, 1);
    }
    g.save(); g.translate(14, M.t + M.plot / 2); g.rotate(-Math.PI / 2);
    g.textAlign = "center"; g.fillText("mel channel", 0, 0); g.restore();

    const dur = d.T * d.shift, step = niceStep(dur, G.pw / 64);
    g.textAlign = "center"; g.textBaseline = "top";
    for (let s = 0; s <= dur + 1e-9; s += step) {
      const x = G.x(s);
      g.fillRect(Math.round(x), G.yAxis - 4, 1, 4);
      g.fillText(step < 1 ? s.toFixed(step < 0.1 ? 2 : 1) : String(Math.round(s)), x, G.yAxis + 2);
    }
    g.fillText("time (s)", M.l + G.pw / 2, G.yAxis + 19);

    if (d.timings) drawWords(g, d, cur, G);
    drawTopP(g, d, cur, G);

    // colour bar: the layer's colours (the overlay's hue over light grey, else the colour map; signed maps: diverging)
    const cx = M.l + G.pw + 18, cw = 12, overlay = d.features && state.layer === "overlay", [lo, hi] = cur.lim;
    for (let y = 0; y < M.plot; y++) {
      const s = 1 - y / (M.plot - 1), a = overlayAlpha(s);
      const c = cur.signed ? rgb(s, cur.lut) : overlay ? OVERLAY.rgb.map((v) => 230 * (1 - a) + v * a) : rgb(s);
      g.fillStyle = `rgb(${c[0]},${c[1]},${c[2]})`;
      g.fillRect(cx, M.t + y, cw, 1);
    }
    g.strokeStyle = "#c9ced6"; g.strokeRect(cx - 0.5, M.t - 0.5, cw + 1, M.plot + 1);
    g.fillStyle = "#4a5262"; g.textAlign = "left"; g.textBaseline = "middle";
    for (const f of [0, 0.5, 1]) g.fillText(fmt(lo + f * (hi - lo)), cx + cw + 5, M.t + M.plot * (1 - f));
    g.save(); g.translate(cx + cw + 48, M.t + M.plot / 2); g.rotate(Math.PI / 2);
    g.textAlign = "center"; g.fillText(state.mode === "raw" ? "saliency (raw)" : "saliency", 0, 0); g.restore();

    const range = cur.signed ? "centred on 0, to \u00b1 the largest |saliency|" : META.clip === null ? "minimum to maximum"
      : `median to the ${META.clip}th percentile of the cells above it`;
    $("caption").innerHTML = `${cur.caption} Colours: ${range}. Bars: saliency of the previous tokens.`;
    drawStrip(d, k, cur);
    drawOver();
  }

  // Word timings: one box per timed word under the map, and faint boundaries across it.
  function drawWords(g, d, cur, G) {
    // the timed words the shown tokens' words match by spoken form (plausibility.timed_words)
    const active = new Set(cur.rows.flatMap((r) => d.timedWords[r]));
    g.textAlign = "center"; g.textBaseline = "middle"; g.font = "11px system-ui, sans-serif";
    d.timings.forEach(([word, s, e], i) => {
      const x0 = G.x(s), x1 = G.x(e), on = state.mode !== "sentence" && active.has(i);
      g.fillStyle = on ? "#dbe6fb" : "#eef1f5";
      g.fillRect(x0, G.yWords, Math.max(1, x1 - x0), 18);
      g.fillStyle = on ? "#2f6fde" : "#4a5262";
      g.fillText(fitText(g, word, x1 - x0 - 2), (x0 + x1) / 2, G.yWords + 9.5);
      g.strokeStyle = on ? "rgba(47,111,222,0.9)" : "rgba(47,111,222,0.55)";
      g.setLineDash([4, 3]);
      for (const x of [x0, x1]) {
        g.beginPath(); g.moveTo(Math.round(x) + 0.5, M.t); g.lineTo(Math.round(x) + 0.5, G.yWords); g.stroke();
      }
      g.setLineDash([]);
    });
  }

  // text, shortened with an ellipsis to fit width pixels ("" when not even one letter does)
  function fitText(g, text, width) {
    if (g.measureText(text).width <= width) return text;
    for (let n = text.length - 1; n > 0; n--) {
      const short = text.slice(0, n) + "\u2026";
      if (g.measureText(short).width <= width) return short;
    }
    return "";
  }

  // The frames "Play top p %" keeps: ranked by the mean over mel channels of the shown map.
  function topFrames(d, cur) {
    const p = Number($("p").value), score = new Float32Array(d.T);
    for (let t = 0; t < d.T; t++) {
      let s = 0;
      for (let c = 0; c < d.C; c++) s += cur.map[t * d.C + c];
      score[t] = s;
    }
    const order = Array.from(score.keys()).sort((a, b) => score[b] - score[a] || a - b);
    const keep = new Uint8Array(d.T);
    order.slice(0, Math.ceil((d.T * p) / 100)).forEach((t) => (keep[t] = 1));
    return keep;
  }

  function drawTopP(g, d, cur, G) {
    const keep = topFrames(d, cur), invert = $("invert").checked, w = G.pw / d.T;
    g.fillStyle = "#4a5262"; g.font = "10px system-ui, sans-serif"; g.textAlign = "left"; g.textBaseline = "middle";
    g.fillText(`top ${$("p").value} %`, M.l + G.pw + 6, G.yTop + 2);
    g.fillStyle = invert ? "#d0463c" : "#f0a33c";
    for (let t = 0; t < d.T; t++) if (keep[t]) g.fillRect(M.l + t * w, G.yTop, Math.max(w, 1), 4);
  }

  function drawOver() {
    if (!state.d || $("view").hidden) return;
    const d = state.d, main = $("main"), over = $("over");
    const W = main.parentElement.clientWidth, G = geometry(d, W), g = sizeCanvas(over, W, G.H);
    over.style.width = W + "px";
    g.clearRect(0, 0, W, G.H);
    if (state.sel) {
      const [a, b] = state.sel;
      g.fillStyle = "rgba(47,111,222,0.16)";
      g.fillRect(G.x(a), M.t, G.x(b) - G.x(a), M.plot);
      g.fillStyle = "#2f6fde";
      g.fillRect(G.x(a), M.t, 1, M.plot); g.fillRect(G.x(b), M.t, 1, M.plot);
    }
    if (state.playhead != null) {
      g.fillStyle = "#e23b3b";
      g.fillRect(G.x(state.playhead), M.t, 2, M.plot);
    }
  }

  function drawStrip(d, k, cur) {
    const strip = $("strip");
    if (strip.dataset.u !== String(state.u)) buildStrip(d);
    const bars = cur.bars, all = state.mode === "sentence";
    const top = cur.barMax || 1; // what a full bar is
    strip.querySelector(".scale .top").textContent = fmt(top);
    strip.querySelector(".scale .mid").textContent = fmt(top / 2);
    strip.querySelectorAll(".tok[data-pos]").forEach((el) => {
      const pos = Number(el.dataset.pos); // prefix position: 0 = start, j = token j - 1
      const tk = pos - 1;
      const prev = all || pos <= Math.max(...cur.rows);
      const v = bars[pos] || 0;
      el.querySelector(".bar i").style.height = prev ? `${Math.max(0, Math.min(1, cur.signed ? Math.abs(v) : v)) * 100}%` : "0";
      el.querySelector(".bar i").classList.toggle("neg", !!cur.signed && v < 0);
      el.classList.toggle("after", !all && tk > Math.max(...cur.rows));
      el.classList.toggle("sel", tk === state.k && !all);
      el.classList.toggle("inword", tk >= 0 && cur.rows.includes(tk) && !all && tk !== state.k);
    });
    strip.querySelectorAll(".word").forEach((el) => {
      el.classList.toggle("active", !all && cur.rows.some((r) => d.words[r] === Number(el.dataset.w) && d.words[r] >= 0));
    });
  }

  function chip(text, pos, title) {
    const b = document.createElement("button");
    b.className = "tok" + (pos === 0 ? " start" : "");
    b.dataset.pos = pos;
    b.title = title;
    b.innerHTML = '<span class="bar"><i></i></span><span class="t"></span>';
    b.querySelector(".t").textContent = text;
    if (pos > 0) {
      b.addEventListener("click", () => select(pos - 1));
      b.addEventListener("mouseenter", () => { state.hover = pos - 1; draw(); });
      b.addEventListener("mouseleave", () => { state.hover = -1; draw(); });
    }
    return b;
  }

  function buildStrip(d) {
    const strip = $("strip");
    strip.textContent = "";
    strip.dataset.u = String(state.u);
    // the bars' value axis, shaped like a token so that it lines up with their bars
    const scale = document.createElement("div");
    scale.className = "word scale";
    scale.title = "prefix saliency: a full bar is the top value";
    scale.innerHTML = '<div class="pieces"><span class="tok"><span class="bar"><b class="top" style="top:0"></b>' +
      '<b class="mid" style="top:50%"></b><b style="top:100%">0</b></span><span class="t">&nbsp;</span></span></div>' +
      '<div class="wlabel">prefix</div>';
    strip.appendChild(scale);
    const start = document.createElement("div");
    start.className = "word";
    start.innerHTML = '<div class="pieces"></div><div class="wlabel">start</div>';
    start.firstChild.appendChild(chip("<s>", 0, "start of the prefix (position 0)"));
    strip.appendChild(start);
    let group = null, gw = null;
    d.tokens.forEach((p, k) => {
      const w = d.words[k];
      if (!group || w < 0 || w !== gw) {
        group = document.createElement("div");
        group.className = "word";
        group.dataset.w = w;
        group.innerHTML = '<div class="pieces"></div><div class="wlabel"></div>';
        strip.appendChild(group);
        gw = w;
      }
      group.firstChild.appendChild(chip(pieceText(p), k + 1, `token ${k + 1}: ${p}`));
      if (w >= 0) group.lastChild.textContent += pieceText(p);
      else group.lastChild.innerHTML = "&nbsp;";
    });
  }

  // ---- interaction --------------------------------------------------------------------------------
  function select(k) {
    if (!state.d || state.d.contrastive) return; // one map: the word's
    state.k = Math.max(0, Math.min(state.d.K - 1, k));
    state.hover = -1;
    draw();
  }

  function setMode(m) {
    state.mode = m;
    document.querySelectorAll("#modes button").forEach((b) => b.setAttribute("aria-checked", String(b.dataset.mode === m)));
    draw();
  }

  function setLayer(l) {
    state.layer = l;
    document.querySelectorAll("#layers button").forEach((b) => b.setAttribute("aria-checked", String(b.dataset.layer === l)));
    draw();
  }

  function timeAt(ev) {
    const d = state.d, r = $("over").getBoundingClientRect(), G = geometry(d, r.width);
    const f = (ev.clientX - r.left - M.l) / G.pw;
    return Math.max(0, Math.min(1, f)) * d.T * d.shift;
  }

  function wireCanvas() {
    const over = $("over");
    let anchor = null;
    over.addEventListener("mousedown", (ev) => { anchor = timeAt(ev); state.sel = null; drawOver(); });
    over.addEventListener("mousemove", (ev) => {
      if (anchor == null) return;
      const t = timeAt(ev);
      state.sel = [Math.min(anchor, t), Math.max(anchor, t)];
      drawOver();
    });
    window.addEventListener("mouseup", () => {
      if (anchor != null && state.sel && state.sel[1] - state.sel[0] < 0.02) state.sel = null;
      anchor = null;
      drawOver();
      updateButtons();
    });
  }

  // ---- audio --------------------------------------------------------------------------------------
  let actx = null, source = null;
  function pcm(d) {
    if (!d.audio.pcm) {
      const q = d.audio.bytes, x = new Float32Array(q.length);
      for (let i = 0; i < q.length; i++) {
        const y = q[i] / 127.5 - 1; // mu-law, mu = 255
        x[i] = Math.sign(y) * (Math.pow(256, Math.abs(y)) - 1) / 255;
      }
      d.audio.pcm = x;
    }
    return d.audio.pcm;
  }

  function stop() {
    if (source) { source.onended = null; try { source.stop(); } catch (e) { /* already stopped */ } }
    source = null;
    state.playing = false;
    state.playhead = null;
    $("play").innerHTML = "&#9654; Play";
    drawOver();
  }

  // Plays [from, to) seconds; gain (per 10 ms frame, 0 or 1) silences frames, with 5 ms ramps.
  function play(from, to, gain) {
    stop();
    const d = state.d, a = d.audio;
    actx = actx || new AudioContext();
    const buf = actx.createBuffer(1, a.n, a.rate), ch = buf.getChannelData(0), x = pcm(d);
    ch.set(x);
    if (gain) {
      const hop = Math.round(d.shift * a.rate), ramp = Math.round(0.005 * a.rate);
      let g = gain[0];
      for (let i = 0; i < a.n; i++) {
        const target = gain[Math.min(d.T - 1, Math.floor(i / hop))];
        g += Math.sign(target - g) * Math.min(Math.abs(target - g), 1 / ramp);
        ch[i] = x[i] * g;
      }
    }
    const src = actx.createBufferSource();
    src.buffer = buf;
    src.connect(actx.destination);
    src.onended = () => stop();
    actx.resume();
    const t0 = actx.currentTime;
    src.start(0, from, Math.max(0.01, to - from));
    source = src;
    state.playing = true;
    $("play").innerHTML = "&#9632; Stop";
    const tick = () => {
      if (source !== src) return;
      state.playhead = Math.min(to, from + actx.currentTime - t0);
      drawOver();
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  function updateButtons() {
    const has = !!(state.d && state.d.audio);
    $("audio").querySelectorAll("button").forEach((b) => (b.disabled = !has));
    $("play-sel").disabled = !has || !state.sel;
    $("status").textContent = has ? (state.sel ? `selection ${state.sel[0].toFixed(2)}\u2013${state.sel[1].toFixed(2)} s` : "")
      : "no audio in this report (give the audio when building it)";
  }

  function wireAudio() {
    $("play").addEventListener("click", () => (state.playing ? stop() : play(0, state.d.T * state.d.shift)));
    $("play-sel").addEventListener("click", () => state.sel && play(state.sel[0], state.sel[1]));
    $("play-top").addEventListener("click", () => {
      const keep = topFrames(state.d, state.cur), invert = $("invert").checked;
      play(0, state.d.T * state.d.shift, keep.map((v) => (invert ? 1 - v : v)));
    });
    $("p").addEventListener("input", () => { $("p-label").textContent = $("p").value; draw(); });
    $("invert").addEventListener("change", draw);
  }

  // ---- index --------------------------------------------------------------------------------------
  const ROW_H = 35;
  const rows = META.rows.map((r, i) => ({ ...r, _i: i }));
  let shown = rows.slice(), sortKey = null, sortDir = 1;
  const NUMERIC = new Set(["duration", "tokens", "WER", "spoken WER", "BLEU", "deletion AUC", "insertion AUC", "size AUC",
    "P_o", "Q_o"]);
  const columns = ["id", "duration", "tokens", "hypothesis", "reference", "word", "foil", "P_o", "Q_o", "WER", "spoken WER",
    "BLEU", "deletion AUC", "insertion AUC", "size AUC"]
    .filter((c) => rows.some((r) => r[c] !== undefined && r[c] !== ""));
  const WIDTH = { id: 150, duration: 124, tokens: 76, hypothesis: null, reference: null, "deletion AUC": 132, "insertion AUC": 140 };

  // Explanations of given targets (explain --targets) are not of the model's hypotheses.
  const TEXT_HEADER = rows.every((r) => r.given) ? "given target" : rows.some((r) => r.given) ? "hypothesis / given target"
    : "hypothesis";

  function buildHead() {
    const head = $("thead");
    for (const c of columns) {
      const th = document.createElement("th");
      th.textContent = c === "duration" ? "duration (s)" : c === "hypothesis" ? TEXT_HEADER : c;
      if (NUMERIC.has(c)) th.className = "num";
      if (WIDTH[c] !== null) th.style.width = (WIDTH[c] || 118) + "px";
      th.addEventListener("click", () => sortBy(c));
      head.appendChild(th);
    }
  }

  function sortBy(c) {
    sortDir = sortKey === c ? -sortDir : 1;
    sortKey = c;
    const num = NUMERIC.has(c);
    shown.sort((a, b) => {
      const x = a[c], y = b[c];
      if (x === undefined || y === undefined) return x === undefined ? 1 : -1;
      return (num ? x - y : String(x).localeCompare(String(y))) * sortDir;
    });
    document.querySelectorAll("#thead th").forEach((th, i) =>
      th.setAttribute("aria-sort", columns[i] === c ? (sortDir > 0 ? "ascending" : "descending") : "none"));
    renderRows();
  }

  function filter() {
    const q = $("filter").value.trim().toLowerCase();
    shown = rows.filter((r) => !q || [r.id, r.hypothesis, r.reference || ""].some((s) => s.toLowerCase().includes(q)));
    if (sortKey) { sortDir = -sortDir; sortBy(sortKey); } else renderRows();
  }

  // Only the rows in view (plus a margin) exist in the DOM; two padding rows keep the scroll height.
  function renderRows() {
    const wrap = $("table-wrap"), body = $("tbody");
    const first = Math.max(0, Math.floor(wrap.scrollTop / ROW_H) - 10);
    // the box may still be growing to its full height (max-height), so count with the window's height
    const last = Math.min(shown.length, first + Math.ceil(Math.max(wrap.clientHeight, window.innerHeight) / ROW_H) + 20);
    const cell = (r, c) => {
      const v = r[c];
      if (c === "id") return `<td><a href="#u=${encodeURIComponent(r.id)}">${escapeHtml(v)}</a></td>`;
      if (v === undefined) return '<td class="num muted">\u2013</td>';
      return `<td class="${NUMERIC.has(c) ? "num" : ""}" title="${escapeHtml(v)}">${escapeHtml(v)}</td>`;
    };
    const pad = (n) => (n ? `<tr class="pad"><td colspan="${columns.length}" style="height:${n * ROW_H}px"></td></tr>` : "");
    body.innerHTML = pad(first) + shown.slice(first, last).map((r) => `<tr>${columns.map((c) => cell(r, c)).join("")}</tr>`).join("")
      + pad(shown.length - last);
    $("count").textContent = `${shown.length} of ${rows.length} utterance${rows.length === 1 ? "" : "s"}`;
  }

  // ---- routing ------------------------------------------------------------------------------------
  async function route() {
    const m = location.hash.match(/^#u=(.*)$/);
    const id = m ? decodeURIComponent(m[1]) : rows.length === 1 ? rows[0].id : null;
    const row = id === null ? null : rows.find((r) => r.id === id);
    $("index").hidden = !!row;
    $("view").hidden = !row;
    $("crumbs").innerHTML = row && rows.length > 1 ? '<a href="#">All utterances</a>' : "";
    if (!row) { stop(); renderRows(); return; }
    if (state.u !== row._i) {
      stop();
      state.sel = null;
      state.d = await load(row._i);
      state.u = row._i;
      state.k = 0;
    }
    showView(row);
  }

  function showView(row) {
    const d = state.d;
    $("uid").textContent = d.id;
    const lines = [[d.given ? "given target" : "hypothesis", d.text], ["reference", d.reference]].filter((l) => l[1]);
    const score = ["WER", "spoken WER", "BLEU", "deletion AUC", "size AUC"].filter((c) => row[c] !== undefined).map((c) => `${c} ${row[c]}`);
    $("utext").innerHTML = d.contrastive ? contrastiveHead(d) : lines.map(([k, v]) => `<div><b>${k}</b>${escapeHtml(v)}</div>`).join("") +
      `<div><b>duration</b>${(d.T * d.shift).toFixed(2)} s &middot; ${d.K} tokens${score.length ? " &middot; " + score.join(" &middot; ") : ""}</div>`;
    // word and sentence modes average token maps; a contrastive explanation has the word's map only
    document.querySelectorAll("#modes button").forEach((b) => (b.disabled = !!d.contrastive && !["raw", "norm"].includes(b.dataset.mode)));
    if (d.contrastive) { state.k = d.contrastive.start; if (!["raw", "norm"].includes(state.mode)) setMode("norm"); }
    const pos = shown.findIndex((r) => r._i === row._i), nav = (el, r) => {
      el.classList.toggle("off", !r);
      el.href = r ? `#u=${encodeURIComponent(r.id)}` : "#";
    };
    nav($("prev"), shown[pos - 1]);
    nav($("next"), shown[pos + 1]);
    document.querySelectorAll("#layers button").forEach((b) => (b.disabled = !d.features && b.dataset.layer !== "saliency"));
    if (!d.features) state.layer = "saliency";
    setLayer(state.layer);
    updateButtons();
    if (report.firstViewMs === null) report.firstViewMs = performance.now();
    $("strip").focus({ preventScroll: true });
  }

  function contrastiveHead(d) {
    const c = d.contrastive, e = escapeHtml;
    return `<div><b>target</b>${e(d.text)}</div><div><b>foil</b>${e(c.foil)}</div>` +
      (d.reference ? `<div><b>reference</b>${e(d.reference)}</div>` : "") +
      `<div><b>word</b>${e(c.word)} rather than ${e(c.foil_word)} &middot; P<sub>o</sub> ${c.p} (target word) &middot; ` +
      `Q<sub>o</sub> ${c.q} (foil word) &middot; ${e(c.scorer)}, ${e(c.word_probability)} &middot; duration ${(d.T * d.shift).toFixed(2)} s</div>`;
  }

  // ---- start --------------------------------------------------------------------------------------
  $("source").textContent = META.source;
  document.querySelectorAll("#modes button").forEach((b) => b.addEventListener("click", () => setMode(b.dataset.mode)));
  document.querySelectorAll("#layers button").forEach((b) => b.addEventListener("click", () => setLayer(b.dataset.layer)));
  document.querySelectorAll("#modes button").forEach((b) => b.setAttribute("aria-checked", String(b.dataset.mode === state.mode)));
  document.addEventListener("keydown", (ev) => {
    if ($("view").hidden || ev.target.tagName === "INPUT" || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      select(state.k + (ev.key === "ArrowRight" ? 1 : -1));
      ev.preventDefault();
    } else if (ev.key === " " && state.d && state.d.audio) {
      if (state.playing) stop(); else play(0, state.d.T * state.d.shift);
      ev.preventDefault();
    }
  });
  let pending = false;
  $("table-wrap").addEventListener("scroll", () => {
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; renderRows(); }); }
  });
  $("filter").addEventListener("input", filter);
  window.addEventListener("resize", () => { if (!$("view").hidden) draw(); else renderRows(); });
  window.addEventListener("hashchange", route);
  buildHead();
  wireCanvas();
  wireAudio();
  route();
})();

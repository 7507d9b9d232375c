// orderflow footprint chart: MIT (LICENSE.txt). Canvas only, no dependencies, no network but this page's server.
"use strict";
(function () {
  const fp = window.footprint = {
    bars: new Map(), open: null, whales: [], naked: [], health: {}, state: "connecting", tick: 1,
    percent: 300, stack: 3, group: 1, seq: 0, hellos: 0, reconnects: 0, received: 0, symbol: "", window: "",
    socket: null, offset: 0, colWidth: 120,
  };
  const canvas = document.getElementById("chart");
  const ctx = canvas.getContext("2d");
  const conn = document.getElementById("conn");
  const feed = document.getElementById("feed");
  let dirty = true;

  // Decimal strings are kept as they came (the data layer tests compare them); numbers only for drawing.
  function setState(state) { fp.state = state; conn.textContent = state; conn.className = "state " + state; }

  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    fp.socket = ws;
    ws.onopen = () => setState("live");
    ws.onmessage = (event) => { handle(JSON.parse(event.data)); };
    ws.onclose = () => {
      setState("reconnecting");
      fp.reconnects += 1;
      setTimeout(connect, Math.min(2000, 200 * fp.reconnects));
    };
  }

  function handle(msg) {
    fp.received += 1;
    fp.seq = msg.seq;
    if (msg.type === "hello") {
      fp.hellos += 1;
      fp.symbol = msg.symbol; fp.window = msg.window; fp.tick = Number(msg.tick);
      fp.percent = msg.imbalance_percent; fp.stack = msg.stack_length;
      fp.bars = new Map(msg.bars.map((b) => [b.start, b]));
      fp.open = msg.open; fp.whales = msg.whales; fp.naked = msg.naked; fp.health = msg.health;
      document.getElementById("title").textContent = msg.symbol + " " + msg.window + " footprint";
    } else if (msg.type === "bar") {
      fp.bars.set(msg.bar.start, msg.bar);  // a revised bar replaces its column
      if (fp.open && fp.open.start <= msg.bar.start) fp.open = null;
    } else if (msg.type === "open") {
      fp.open = msg.bar;
    } else if (msg.type === "whale") {
      fp.whales.push(msg.whale); if (fp.whales.length > 200) fp.whales.shift();
    } else if (msg.type === "naked") {
      fp.naked = msg.naked;
    } else if (msg.type === "health") {
      fp.health = msg.health;
    }
    dirty = true;
  }

  function columns() {
    const all = [...fp.bars.values()].sort((a, b) => a.start - b.start);
    if (fp.open && !fp.bars.has(fp.open.start)) all.push(fp.open);
    return all;
  }

  // Levels grouped by `group` ticks, with the diagonal imbalances and stacks of the grouped footprint.
  function grouped(bar) {
    const size = fp.tick * fp.group;
    const map = new Map();
    for (const [p, b, s] of bar.levels) {
      const key = Math.round(Math.floor(Number(p) / size + 1e-9) * size * 1e8) / 1e8;
      const level = map.get(key) || { price: key, buy: 0, sell: 0 };
      level.buy += Number(b); level.sell += Number(s); map.set(key, level);
    }
    const levels = [...map.values()].sort((a, b) => a.price - b.price);
    const at = (price) => map.get(Math.round(price * 1e8) / 1e8);
    for (const l of levels) {
      const below = at(l.price - size), above = at(l.price + size);
      l.buyImb = l.buy > 0 && l.buy * 100 >= fp.percent * (below ? below.sell : 0);
      l.sellImb = l.sell > 0 && l.sell * 100 >= fp.percent * (above ? above.buy : 0);
    }
    for (const side of ["buyImb", "sellImb"]) {
      let run = [];
      const flush = () => { if (run.length >= fp.stack) run.forEach((l) => { l[side + "Stack"] = true; }); run = []; };
      for (const l of levels) {
        if (l[side] && (!run.length || Math.abs(l.price - run[run.length - 1].price - size) < size / 1e6)) run.push(l);
        else { flush(); if (l[side]) run.push(l); }
      }
      flush();
    }
    return { size, levels };
  }

  function fmt(v) { const n = Number(v); return Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 1 ? n.toFixed(2) : n.toFixed(3); }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w * dpr || canvas.height !== h * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#11151c"; ctx.fillRect(0, 0, w, h);
    const axis = 70, footer = 34, cvdH = Math.max(60, h * 0.16), top = 8;
    const plotH = h - cvdH - footer - top - 8;
    const cols = columns();
    const fit = Math.max(1, Math.floor((w - axis) / fp.colWidth));
    const end = Math.max(0, cols.length - fp.offset);
    const shown = cols.slice(Math.max(0, end - fit), end);
    fp.shown = shown.map((c) => c.start);  // the columns on screen, for scripts and tests
    feed.textContent = healthText();
    if (!shown.length) { ctx.fillStyle = "#7b8494"; ctx.fillText("waiting for trades...", 20, 40); return; }
    const groups = shown.map(grouped);
    let lo = Infinity, hi = -Infinity;
    groups.forEach((g) => g.levels.forEach((l) => { lo = Math.min(lo, l.price); hi = Math.max(hi, l.price + g.size); }));
    const size = fp.tick * fp.group;
    const rows = Math.max(1, Math.round((hi - lo) / size));
    const rowH = Math.max(3, Math.min(18, plotH / rows));
    const y = (price) => top + plotH - (price - lo) / size * rowH - (plotH - rows * rowH) / 2;
    // price axis
    ctx.fillStyle = "#7b8494"; ctx.textAlign = "left"; ctx.font = "11px monospace";
    const every = Math.max(1, Math.ceil(14 / rowH));
    for (let i = 0; i <= rows; i += every) { const p = lo + i * size; ctx.fillText(fmt(p), w - axis + 4, y(p) - 2); }
    shown.forEach((bar, i) => {
      const x = i * fp.colWidth + 2, cw = fp.colWidth - 6, g = groups[i];
      const vmax = Math.max(...g.levels.map((l) => l.buy + l.sell), 1e-12);
      if (bar.va) {  // value area: a shaded band behind the cells and a blue edge on the left
        const a = y(Number(bar.va[1]) + fp.tick), b = y(Number(bar.va[0]));
        ctx.fillStyle = "rgba(100,150,255,0.22)"; ctx.fillRect(x - 2, a - 2, cw + 4, b - a + 4);
        ctx.fillStyle = "#5c8dff"; ctx.fillRect(x - 2, a - 2, 2, b - a + 4);
      }
      ctx.font = Math.min(11, Math.max(7, rowH - 3)) + "px monospace"; ctx.textAlign = "center";
      for (const l of g.levels) {
        const yy = y(l.price + g.size), share = (l.buy + l.sell) / vmax;
        ctx.fillStyle = l.buyImb ? `rgba(38,166,91,${0.35 + 0.5 * share})` : l.sellImb ? `rgba(229,57,53,${0.35 + 0.5 * share})`
          : `rgba(90,110,150,${0.15 + 0.45 * share})`;
        ctx.fillRect(x, yy + 0.5, cw, rowH - 1);
        if (l.buyImbStack || l.sellImbStack) { ctx.fillStyle = "#ffd54f"; ctx.fillRect(l.buyImbStack ? x + cw - 3 : x, yy + 0.5, 3, rowH - 1); }
        if (rowH >= 9) { ctx.fillStyle = "#e8edf5"; ctx.fillText(fmt(l.sell) + " x " + fmt(l.buy), x + cw / 2, yy + rowH - 3); }
      }
      if (bar.poc !== null) {  // POC outlined
        const pocPrice = Math.floor(Number(bar.poc) / g.size + 1e-9) * g.size;
        ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 1.5; ctx.strokeRect(x + 0.5, y(pocPrice + g.size) + 0.5, cw - 1, rowH - 1);
      }
      // delta and volume under the bar
      const d = Number(bar.delta);
      ctx.font = "11px monospace"; ctx.fillStyle = d >= 0 ? "#4caf50" : "#ef5350";
      ctx.fillText("Δ " + fmt(bar.delta), x + cw / 2, top + plotH + 14);
      ctx.fillStyle = "#9aa4b5"; ctx.fillText("v " + fmt(bar.volume), x + cw / 2, top + plotH + 28);
      if (bar === fp.open) { ctx.strokeStyle = "#b26a00"; ctx.setLineDash([3, 3]); ctx.strokeRect(x, top, cw, plotH); ctx.setLineDash([]); }
    });
    // naked POCs: a line from their bar to the right edge, until touched
    ctx.strokeStyle = "#ffb300"; ctx.setLineDash([6, 4]); ctx.lineWidth = 1;
    for (const n of fp.naked) {
      const i = shown.findIndex((b) => b.start === n.start);
      const p = Number(n.price);
      if (p < lo || p > hi) continue;
      const x0 = i >= 0 ? i * fp.colWidth + fp.colWidth - 4 : 0, yy = y(p + fp.tick / 2);
      ctx.beginPath(); ctx.moveTo(x0, yy); ctx.lineTo(w - axis, yy); ctx.stroke();
    }
    ctx.setLineDash([]);
    // whale bubbles at their bar and price
    for (const wh of fp.whales) {
      const i = shown.findIndex((b) => wh.time >= b.start && wh.time < b.end);
      if (i < 0) continue;
      const r = Math.max(4, Math.min(22, Math.sqrt(Number(wh.notional)) / 40));
      ctx.fillStyle = wh.side === "buy" ? "rgba(76,175,80,0.45)" : "rgba(239,83,80,0.45)";
      ctx.strokeStyle = wh.side === "buy" ? "#a5d6a7" : "#ef9a9a"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.arc(i * fp.colWidth + fp.colWidth / 2, y(Number(wh.price) + fp.tick * fp.group / 2), r, 0, 2 * Math.PI);
      ctx.fill(); ctx.stroke();
    }
    // CVD pane
    const cy0 = h - cvdH, cvds = shown.map((b) => Number(b.cvd));
    const cmin = Math.min(...cvds), cmax = Math.max(...cvds), span = cmax - cmin || 1;
    ctx.fillStyle = "#161b24"; ctx.fillRect(0, cy0, w, cvdH);
    ctx.fillStyle = "#7b8494"; ctx.textAlign = "left"; ctx.fillText("CVD " + fmt(cvds[cvds.length - 1]), 6, cy0 + 12);
    ctx.strokeStyle = "#4fc3f7"; ctx.lineWidth = 1.5; ctx.beginPath();
    cvds.forEach((c, i) => {
      const xx = i * fp.colWidth + fp.colWidth / 2, yy = cy0 + cvdH - 6 - (c - cmin) / span * (cvdH - 30);
      if (i) ctx.lineTo(xx, yy); else ctx.moveTo(xx, yy);
    });
    ctx.stroke();
    legend(w, cy0);
  }

  function legend(w, yy) {
    const items = [["rgba(38,166,91,0.8)", "buy imbalance"], ["rgba(229,57,53,0.8)", "sell imbalance"],
      ["#ffd54f", "stacked"], ["#ffffff", "POC"], ["#5c8dff", "value area"], ["#ffb300", "naked POC"],
      ["rgba(76,175,80,0.6)", "whale"]];
    ctx.font = "11px monospace"; ctx.textAlign = "left";
    let x = w - 760;
    for (const [colour, label] of items) {
      ctx.fillStyle = colour; ctx.fillRect(x, yy + 5, 10, 10);
      ctx.fillStyle = "#9aa4b5"; ctx.fillText(label, x + 14, yy + 14); x += 24 + label.length * 7;
    }
    ctx.fillText("cells: sell x buy", x, yy + 14);
  }

  function healthText() {
    const h = fp.health;
    if (!h || !h.state) return "";
    return `feed ${h.state} | last id ${h.last_id ?? "-"} | reconnects ${h.reconnects ?? 0} | gaps ${h.gaps ?? 0}` +
      ` | backfills ${h.backfills ?? 0} | page reconnects ${fp.reconnects} | backlog ${h.backlog ?? 0}`;
  }

  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.ctrlKey) fp.colWidth = Math.max(50, Math.min(300, fp.colWidth * (event.deltaY > 0 ? 0.9 : 1.1)));
    else {  // back in time by a bar a notch, by a screenful with shift (a store's past may be days of bars)
      const step = event.shiftKey ? Math.max(1, Math.floor(canvas.clientWidth / fp.colWidth) - 1) : 1;
      fp.offset = Math.max(0, Math.min(fp.bars.size - 1, fp.offset + (event.deltaY > 0 ? -step : step)));
    }
    dirty = true;
  }, { passive: false });
  document.getElementById("group").addEventListener("change", (event) => { fp.group = Number(event.target.value); dirty = true; });
  window.addEventListener("resize", () => { dirty = true; });
  function frame() { if (dirty) { dirty = false; draw(); } requestAnimationFrame(frame); }
  fp.redraw = () => { dirty = false; draw(); };
  connect();
  requestAnimationFrame(frame);
})();

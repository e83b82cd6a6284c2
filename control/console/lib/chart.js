// Time-series charts of the live room, drawn with uPlot (node_modules/uplot, `make console`).
// Every chart of a page shares one cursor (uPlot's sync), so a minute lines up across them.
import { loadStyle } from "./view.js";

let uPlotMod = null;
async function uPlot() {
  if (!uPlotMod) {
    // uPlot builds an Intl.NumberFormat(navigator.language) when it loads; a browser started
    // under a POSIX locale reports "en-US@posix", which Intl refuses: fall back to "en-US".
    try { new Intl.NumberFormat(navigator.language); }
    catch { Object.defineProperty(navigator, "language", { value: "en-US", configurable: true }); }
    loadStyle("/console/node_modules/uplot/dist/uPlot.min.css");
    uPlotMod = (await import("/console/node_modules/uplot/dist/uPlot.esm.js")).default;
  }
  return uPlotMod;
}

const COLORS = ["#d92d5b", "#2e90fa", "#079455", "#dc6803", "#7a5af8", "#667085"];

/**
 * A chart: `series` = [{label, value: (point) => number|null, scale?, color?}], x = the
 * points' minute starts. `markers` = [{t: seconds, label}] drawn as vertical lines (card
 * pushes, flash sales) as vertical lines. Returns {el, set(points, markers)}.
 */
export async function timeChart(title, series, { width = 560, height = 200, sync = "room", axes2 = null, xRange = null } = {}) {
  const U = await uPlot();
  const el = document.createElement("div");
  el.className = "chart";
  el.dataset.chart = title;
  let markers = [];
  // xRange() -> [from, to] in Unix seconds: every chart of the room spans the same window
  // (a show's first minute is one point, which uPlot alone would spread over years)
  const scales = { x: { time: true, range: (u, min, max) => (xRange ? xRange() : [min, max]) } };
  const opts = {
    title, width, height,
    cursor: { sync: { key: sync } },
    scales,
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: 2, scale: s.scale || "y", spanGaps: false, points: { show: true, size: 4 } }))],
    axes: [{}, { scale: "y" }, ...(axes2 ? [{ scale: axes2, side: 1, grid: { show: false } }] : [])],
    hooks: { draw: [(u) => {
      const { ctx } = u;
      ctx.save();
      ctx.strokeStyle = "#7a5af8"; ctx.fillStyle = "#7a5af8"; ctx.setLineDash([4, 4]);
      ctx.font = `${10 * devicePixelRatio}px system-ui`;
      markers.forEach((m, i) => {
        const x = u.valToPos(m.t, "x", true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
        ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
        // labels of cards close together go on staggered lines
        ctx.fillText(m.label, x + 3, u.bbox.top + (10 + 12 * (i % 4)) * devicePixelRatio);
      });
      ctx.restore();
    }] },
  };
  const plot = new U(opts, [[], ...series.map(() => [])], el);
  return {
    el,
    set(points, newMarkers = markers) {
      markers = newMarkers;
      const xs = points.map((p) => Date.parse(p.t) / 1000);
      plot.setData([xs, ...series.map((s) => points.map((p) => { const v = s.value(p); return v === undefined ? null : v; }))]);
    },
    resize(w) { plot.setSize({ width: w, height }); },
    plot,
  };
}

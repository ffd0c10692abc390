// Draws the page's chart with uPlot from the JSON the server put in #chart-data. Drag to zoom (uPlot's
// own cursor), double-click to zoom out; the chart follows the width of its box (phones included).
(function () {
  "use strict";
  const box = document.getElementById("chart");
  if (!box || typeof uPlot === "undefined") return;
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const labels = JSON.parse(document.getElementById("chart-labels").textContent);
  // The sites are in Vietnam: show their local time whatever the browser's zone.
  const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Asia/Ho_Chi_Minh");
  const kw = { label: labels.kw, values: (u, vals) => vals.map((v) => v.toFixed(1)) };
  // 24-hour clock; the date too when the chart spans days.
  const hours = uPlot.fmtDate("{HH}:{mm}"), days = uPlot.fmtDate("{DD}/{MM} {HH}:{mm}");
  const time = {
    values: (u, splits) => {
      const span = u.scales.x.max - u.scales.x.min;
      return splits.map((ts) => (span > 86400 ? days : hours)(tzDate(ts)));
    },
  };
  let options, series;
  if (box.dataset.kind === "site") {
    const xs = data.today.map((_, i) => data.start + i * data.step);
    series = [xs, data.today, data.typical];
    options = [
      { label: labels.today, stroke: "#0b6e4f", width: 2, fill: "rgba(11,110,79,.08)" },
      { label: labels.typical, stroke: "#8a94a0", width: 2, dash: [6, 4] },
    ];
  } else {
    const parts = [data.intervals];
    if (data.samples[0].length) parts.push(data.samples);
    series = uPlot.join(parts);
    options = [
      { label: labels.mean, stroke: "#0b6e4f", width: 2, spanGaps: true },
      { label: labels.max, stroke: "#d97706", width: 1, spanGaps: true },
    ];
    if (parts.length > 1) options.push({ label: labels.power, stroke: "rgba(29,35,41,.45)", width: 1, spanGaps: true });
  }
  const size = () => ({ width: box.clientWidth, height: Math.max(220, Math.min(360, box.clientWidth * 0.55)) });
  const plot = new uPlot(
    { ...size(), tzDate, cursor: { drag: { x: true, y: false } }, scales: { x: { time: true } },
      series: [{ value: (u, ts) => ts == null ? "--" : days(tzDate(ts)) }, ...options], axes: [time, kw] },
    series, box);
  new ResizeObserver(() => plot.setSize(size())).observe(box);
  window.kilowatchChart = plot;
})();

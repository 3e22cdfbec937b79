// Time charts drawn by uPlot (served by p3s itself, web/static/vendor/uplot): time axis in UTC,
// a grid, the unit on the value axis, and the values under the cursor in the legend.
"use strict";

(function () {
  const P = window.P3S;

  // chart({title, unit, height, series: [{name, colour, dash}]}) -> {node, update(xs, columns)}
  // xs: epoch seconds; columns: one array of values (or null) per series.
  P.chart = function chart({unit = "", height = 190, series, digits = 2}) {
    const node = P.h("div", {class: "uplot-box"});
    const format = (v) => (v === null || v === undefined ? "–" : `${+v.toFixed(digits)}${unit ? " " + unit : ""}`);
    const opts = {
      width: 480, height,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: {drag: {x: false, y: false}},
      scales: {x: {time: true}, y: {range: (_u, min, max) => [0, max > 0 ? max * 1.1 : 1]}},
      axes: [
        {stroke: "#4b5366", grid: {stroke: "#e6e9f0", width: 1}, ticks: {stroke: "#cfd5e1"}, label: "time (UTC)", labelSize: 18,
          values: (u, ticks) => {
            const span = ticks.length > 1 ? ticks[ticks.length - 1] - ticks[0] : 0;
            return ticks.map((t) => {
              const iso = new Date(t * 1000).toISOString();
              return span > 86400 ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : span >= 600 ? iso.slice(11, 16) : iso.slice(11, 19);
            });
          }},
        {stroke: "#4b5366", grid: {stroke: "#e6e9f0", width: 1}, ticks: {stroke: "#cfd5e1"}, label: unit, labelSize: 18,
          size: 56, values: (_u, ticks) => ticks.map((v) => +v.toPrecision(3))},
      ],
      series: [{label: "time", value: (_u, ts) => (ts === null ? "–" : P.clock(new Date(ts * 1000)))},
        ...series.map((s) => ({label: s.name, stroke: s.colour, width: 2, dash: s.dash, spanGaps: false,
          points: {show: true, size: 4}, value: (_u, v) => format(v)}))],
    };
    let plot = null;
    let data = [[], ...series.map(() => [])];
    const draw = () => {
      const width = Math.max(240, Math.floor(node.clientWidth || 480));
      if (!plot) { plot = new uPlot({...opts, width}, data, node); return; }
      if (Math.abs(plot.width - width) > 2) plot.setSize({width, height});
    };
    new ResizeObserver(() => { if (node.isConnected) draw(); }).observe(node);
    return {
      node,
      update(xs, columns) {
        data = [xs, ...columns];
        if (plot) plot.setData(data); else if (node.isConnected) draw();
      },
    };
  };
})();

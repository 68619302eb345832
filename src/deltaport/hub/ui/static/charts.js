// deltaport dashboard: draws every [data-chart] element with uPlot from its data-series
// JSON ({x: [unix seconds], labels: [...], y: [[...], ...]}). No inline script anywhere:
// the page's Content-Security-Policy allows scripts from the hub's /ui/static only.
(function () {
  "use strict";
  var COLOURS = ["#1f7a3d", "#b42318", "#1d5fb4", "#8a5a00"];
  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

  function bytes(n) {
    var i = 0;
    while (Math.abs(n) >= 1024 && i < UNITS.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + UNITS[i];
  }

  function draw(el) {
    var data = JSON.parse(el.getAttribute("data-series"));
    var kind = el.getAttribute("data-chart");
    var format = kind === "bytes" ? function (u, v) { return v == null ? "" : bytes(v); }
                                  : function (u, v) { return v == null ? "" : String(v); };
    var series = [{}];
    data.labels.forEach(function (label, i) {
      series.push({ label: label, stroke: COLOURS[i % COLOURS.length], width: 2, value: format });
    });
    var opts = {
      width: Math.max(320, el.clientWidth || 900), height: 240,
      scales: { x: { time: true } }, series: series,
      axes: [{}, { size: 70, values: function (u, vals) { return vals.map(function (v) { return format(u, v); }); } }],
    };
    el.textContent = "";
    new uPlot(opts, [data.x].concat(data.y), el);  // eslint-disable-line no-new, no-undef
    el.setAttribute("data-drawn", "yes");
  }

  function drawAll() {
    if (typeof uPlot === "undefined") { return; }
    document.querySelectorAll("[data-chart]").forEach(draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();

/* The dashboard's usage chart: SU charged per day, from the page's json_script "usage-data". */
(function () {
  "use strict";
  const canvas = document.getElementById("usage-chart");
  const source = document.getElementById("usage-data");
  if (!canvas || !source || !window.Chart) {
    return;
  }
  const data = JSON.parse(source.textContent);
  new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: [{ label: "SU charged", data: data.values, backgroundColor: "#3b5bdb" }],
    },
    options: {
      animation: !window.matchMedia("(prefers-reduced-motion: reduce)").matches,
      plugins: { legend: { display: false } },
      scales: { y: { beginAtZero: true } },
    },
  });
})();

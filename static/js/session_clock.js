/* GPU Commons: a session's countdowns (<dd data-countdown="seconds">, rendered by
   jobs/_session_clock.html) tick down every second between htmx's refreshes of the figures. */
(function () {
  "use strict";
  function format(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = String(s % 60).padStart(2, "0");
    return h > 0 ? h + " h " + String(m).padStart(2, "0") + " min " + rest + " s" : m + " min " + rest + " s";
  }
  function tick() {
    const now = Date.now();
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      if (!el.dataset.countdownFrom) {
        el.dataset.countdownFrom = String(now); // when this copy of the figures arrived
      }
      const elapsed = (now - Number(el.dataset.countdownFrom)) / 1000;
      el.textContent = format(Number(el.dataset.countdown) - elapsed);
    });
  }
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSwap", tick);
  window.setInterval(tick, 1000);
})();

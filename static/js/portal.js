/* GPU Commons: behaviour the pages declare with data- attributes (no inline script: the
   Content-Security-Policy allows scripts from this site only). */
(function () {
  "use strict";
  // <form data-confirm="Cancel this job?">: ask before submitting.
  document.addEventListener("submit", function (event) {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });
  // <input data-select-on-click>: a click selects the whole value (tokens to copy).
  document.addEventListener("click", function (event) {
    if (event.target.matches && event.target.matches("[data-select-on-click]")) {
      event.target.select();
    }
  });
})();

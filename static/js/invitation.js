/* The invitation link carries its code after "#" (never sent to the server, so never in a log):
   copy it into the form, drop it from the address bar and history, and post it. */
(function () {
  "use strict";
  const form = document.getElementById("invitation-open");
  const code = decodeURIComponent(window.location.hash.slice(1));
  if (!form || !code) {
    return;
  }
  form.elements.token.value = code;
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  form.submit();
})();

// The project file browser: uploads with a progress bar, new folders, renames and deletes, all
// through the REST API (session cookie + the CSRF token of <body hx-headers>).
(function () {
  "use strict";
  var root = document.getElementById("files");
  if (!root) { return; }
  var api = root.dataset.api;
  var cluster = root.dataset.cluster;
  var here = root.dataset.path;
  var status = document.getElementById("files-status");

  function csrf() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; }
    catch (e) { return ""; }
  }
  function join(name) { return here ? here + "/" + name : name; }
  function say(text) { status.textContent = text; }
  function detail(xhrText, fallback) {
    try { return JSON.parse(xhrText).detail || fallback; } catch (e) { return fallback; }
  }
  function post(action, body) {
    body.cluster = cluster;
    return fetch(api + action + "/", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify(body)
    }).then(function (r) {
      if (r.ok) { window.location.reload(); return; }
      return r.text().then(function (t) { say(detail(t, "Failed (" + r.status + ")")); });
    });
  }

  document.getElementById("upload-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = document.getElementById("upload-file");
    var file = input.files[0];
    if (!file) { return; }
    if (file.size > Number(root.dataset.max)) { say(file.name + " is larger than the limit per file."); return; }
    if (file.size > Number(root.dataset.free)) { say(file.name + " does not fit in the project's storage quota."); return; }
    var bar = document.getElementById("upload-progress");
    var data = new FormData();
    data.append("file", file, file.name);
    var xhr = new XMLHttpRequest();
    var url = api + "upload/?cluster=" + encodeURIComponent(cluster) + "&path=" + encodeURIComponent(here);
    xhr.open("POST", url);
    xhr.setRequestHeader("X-CSRFToken", csrf());
    bar.hidden = false;
    bar.value = 0;
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) { bar.value = Math.floor(100 * e.loaded / e.total); say("Uploading " + file.name + ": " + bar.value + " %"); }
    });
    xhr.addEventListener("load", function () {
      if (xhr.status === 201) { window.location.reload(); return; }
      bar.hidden = true;
      say(detail(xhr.responseText, "Upload failed (" + xhr.status + ")"));
    });
    xhr.addEventListener("error", function () { bar.hidden = true; say("The upload was interrupted: nothing was kept."); });
    xhr.send(data);
  });

  document.getElementById("mkdir-form").addEventListener("submit", function (event) {
    event.preventDefault();
    post("mkdir", { path: join(document.getElementById("mkdir-name").value) });
  });

  root.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (!button) { return; }
    var path = button.dataset.path;
    if (button.dataset.action === "rename") {
      var name = window.prompt("New name or path for " + path, path);
      if (name && name !== path) { post("rename", { path: path, new_path: name }); }
    } else if (button.dataset.action === "delete") {
      var folder = button.dataset.kind === "directory";
      if (window.confirm("Delete " + path + (folder ? " and everything in it" : "") + "?")) {
        post("delete", { path: path, recursive: folder });
      }
    }
  });
})();

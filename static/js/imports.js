// Import a dump (templates/catalog/import_form.html): sends the form with
// XMLHttpRequest, so that the upload's progress can be shown, the file last
// (the server stops an upload over the limit as it arrives; what came before
// is kept). A file over the limit is not sent at all. The server answers 201
// with the new backup's page, or the form again with what it refused.
// No inline script: the CSP forbids it.
(function () {
  function size(bytes) { // as Django's filesizeformat counts them, so that the page agrees with itself
    var units = ["bytes", "KB", "MB", "GB", "TB"], unit = 0;
    while (bytes >= 1024 && unit < units.length - 1) { bytes /= 1024; unit += 1; }
    return (unit ? bytes.toFixed(1) : bytes) + " " + units[unit];
  }

  function bind(form) {
    form.addEventListener("submit", function (event) {
      var input = form.querySelector("input[type=file][name=dump]");
      var file = input && input.files[0];
      if (!file) return; // an object of a destination: an ordinary post
      event.preventDefault();
      var box = form.querySelector("[data-upload-progress]");
      var bar = box.querySelector("progress"), status = box.querySelector("[data-upload-status]");
      var button = form.querySelector("button[type=submit]");
      box.hidden = false;
      if (Number(form.dataset.maxBytes) && file.size > Number(form.dataset.maxBytes)) {
        bar.hidden = true;
        status.textContent = "This file is " + size(file.size) + ", over the import limit of " + form.dataset.maxText + ": it was not sent.";
        return;
      }
      var data = new FormData();
      Array.prototype.forEach.call(form.elements, function (field) {
        if (field.name && field.type !== "file" && !field.disabled) data.append(field.name, field.value);
      });
      data.append("dump", file, file.name);
      var request = new XMLHttpRequest();
      request.open("POST", form.getAttribute("action") || window.location.href);
      request.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      request.upload.addEventListener("progress", function (progress) {
        if (!progress.lengthComputable) return;
        var share = Math.floor((progress.loaded / progress.total) * 100);
        bar.value = share;
        status.textContent = "Uploading: " + size(progress.loaded) + " of " + size(progress.total) + " (" + share + " %)";
      });
      request.upload.addEventListener("load", function () {
        bar.removeAttribute("value"); // indeterminate while the server checks
        status.textContent = "Uploaded. Checking the dump: it is read to its end before anything is stored…";
      });
      request.addEventListener("load", function () {
        if (request.status === 201) {
          window.location.assign(request.getResponseHeader("Location"));
          return;
        }
        var page = new DOMParser().parseFromString(request.responseText, "text/html");
        var again = page.getElementById("import-form");
        if (!again) {
          button.disabled = false;
          status.textContent = "The server answered " + request.status + " " + request.statusText + "; nothing was imported.";
          return;
        }
        var fresh = document.importNode(again, true);
        form.replaceWith(fresh);
        bind(fresh);
      });
      request.addEventListener("error", function () {
        button.disabled = false;
        status.textContent = "The upload stopped: the connection was closed before the server answered. Nothing was imported.";
      });
      button.disabled = true;
      request.send(data);
    });
  }

  document.querySelectorAll("[data-import-form]").forEach(bind);
})();

// Shows only the fields that matter for the chosen engine, storage kind or retention rule.
(function () {
  var groups = {
    engine: { postgresql: ["host", "port", "dbname", "user", "password", "dsn", "sslmode"], sqlite: ["sqlite_path"] },
    retention_mode: { gfs: ["keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"], last: ["keep_last"], days: ["keep_days"] },
    kind: { local: ["path"], s3: ["bucket", "prefix", "endpoint_url", "region", "access_key_id", "secret_access_key", "immutable_days", "lock_mode"],
            // alert channels
            email: ["email_to"], slack: ["slack_url"], webhook: ["url", "webhook_secret", "new_webhook_secret"], pagerduty: ["routing_key"] },
    // plans: the table picker is for exports only
    format: { jsonl: ["export_tables"], csv: ["export_tables"], sql: ["export_tables"] },
  };

  function sync(form, selector) {
    var choice = form.querySelector("[name=" + selector + "]");
    if (!choice) return;
    var all = [].concat.apply([], Object.values(groups[selector]));
    var shown = groups[selector][choice.value] || [];
    all.forEach(function (name) {
      var field = form.querySelector('[data-field="' + name + '"]');
      if (field) field.classList.toggle("hidden-field", shown.indexOf(name) === -1);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form").forEach(function (form) {
      ["engine", "kind", "retention_mode", "format"].forEach(function (selector) {
        var choice = form.querySelector("[name=" + selector + "]");
        if (!choice) return;
        sync(form, selector);
        choice.addEventListener("change", function () { sync(form, selector); });
      });
    });
  });
})();

// Restore wizard: ticking a schema ticks all its tables, and choosing tables selects "only these".
document.addEventListener("change", function (event) {
  var box = event.target;
  if (box.classList && box.classList.contains("schema-toggle")) {
    document.querySelectorAll('input[name=tables][data-schema="' + box.dataset.schema + '"]').forEach(function (table) {
      table.checked = box.checked;
    });
  }
  if (box.name === "tables" || (box.classList && box.classList.contains("schema-toggle"))) {
    var some = document.querySelector("input[name=scope][value=some]");
    if (some && box.checked) some.checked = true;
  }
});

// data-confirm="question" on a form or a submit button asks before submitting
// (the CSP allows no inline onsubmit/onclick handlers); Cancel submits nothing.
document.addEventListener("click", function (event) {
  var button = event.target.closest && event.target.closest("button[data-confirm], input[type=submit][data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);

// Plan form: editing an export set's pattern reloads the table picker (an
// event htmx listens for, instead of a trigger filter that would need eval).
document.addEventListener("change", function (event) {
  var input = event.target;
  if (input.classList && input.classList.contains("export-set-pattern") && window.htmx) {
    var picker = input.closest("#export-picker");
    if (picker) window.htmx.trigger(picker, "export-pattern-change");
  }
});

// Shows only the fields that matter for the chosen engine, storage kind or retention rule.
(function () {
  var groups = {
    engine: { postgresql: ["host", "port", "dbname", "user", "password", "dsn", "sslmode"], sqlite: ["sqlite_path"],
              mariadb: ["host", "port", "dbname", "user", "password", "sslmode"] },
    retention_mode: { gfs: ["keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"], last: ["keep_last"], days: ["keep_days"] },
    kind: { local: ["path", "host"], s3: ["bucket", "prefix", "endpoint_url", "region", "access_key_id", "secret_access_key", "immutable_days", "lock_mode"],
            azure: ["account_name", "bucket", "prefix", "endpoint_url", "account_key", "sas_token"],
            gcs: ["bucket", "prefix", "endpoint_url", "service_account_json"],
            sftp: ["server", "server_port", "username", "password", "private_key", "private_key_passphrase", "path"],
            // alert channels
            email: ["email_to"], slack: ["slack_url"], webhook: ["url", "webhook_secret", "new_webhook_secret"], pagerduty: ["routing_key"],
            apprise: ["apprise_url"] },
    // plans: the table picker is for exports and MariaDB dumps, the parallel jobs for the directory format
    format: { jsonl: ["export_tables"], csv: ["export_tables"], sql: ["export_tables"], mariadb: ["export_tables"], directory: ["dump_jobs"] },
    // plans: what each schedule preset asks for (catalog/forms.py SchedulePresets)
    schedule_preset: { hourly: ["schedule_minute"], daily: ["schedule_time"], weekly: ["schedule_weekday", "schedule_time"],
                       monthly: ["schedule_day", "schedule_time"], cron: ["schedule"] },
  };

  function sync(form, selector) {
    var choice = form.querySelector("[name=" + selector + "]");
    if (!choice) return;
    var all = [].concat.apply([], Object.values(groups[selector]));
    var shown = groups[selector][choice.value] || [];
    all.forEach(function (name) {
      var field = form.querySelector('[data-field="' + name + '"]');
      // A field the server refused, or whose value the browser will not submit,
      // stays in sight: hidden, it would stop the save without a word.
      var wrong = field && (field.classList.contains("has-error") || field.querySelector(":invalid"));
      if (field) field.classList.toggle("hidden-field", shown.indexOf(name) === -1 && !wrong);
    });
    // Fields that kinds share, named and explained in each kind's words (catalog/forms.py KIND_HELP).
    form.querySelectorAll("[data-kind-help], [data-kind-label]").forEach(function (field) {
      var help = JSON.parse(field.dataset.kindHelp || "{}")[choice.value];
      var label = JSON.parse(field.dataset.kindLabel || "{}")[choice.value];
      var helpText = field.querySelector(".help"), labelText = field.querySelector("label");
      if (help && helpText) helpText.textContent = help;
      if (label && labelText && labelText.firstChild) labelText.firstChild.nodeValue = label;
    });
  }

  // A server engine's own port, when the port field still holds the other's default or nothing.
  var defaultPorts = { postgresql: "5432", mariadb: "3306" };
  function switchPort(form) {
    var engine = form.querySelector("[name=engine]"), port = form.querySelector("[name=port]");
    if (!engine || !port || !defaultPorts[engine.value]) return;
    var others = Object.values(defaultPorts);
    if (port.value === "" || others.indexOf(port.value) !== -1) port.value = defaultPorts[engine.value];
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form").forEach(function (form) {
      var engine = form.querySelector("[name=engine]");
      if (engine) engine.addEventListener("change", function () { switchPort(form); });
      ["engine", "kind", "retention_mode", "format", "schedule_preset"].forEach(function (selector) {
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

// Every table scrolls sideways inside a box of its own when it is wider than
// the window (a phone), instead of widening the page: the box is added here,
// for the page and for what htmx swaps in. Without this script the stylesheet
// makes the table itself the scrolling box.
(function () {
  function boxTables(root) {
    if (!root.querySelectorAll) return;
    var tables = [].slice.call(root.querySelectorAll("table.table"));
    if (root.matches && root.matches("table.table")) tables.push(root);
    tables.forEach(function (table) {
      if (table.parentElement && table.parentElement.classList.contains("table-scroll")) return;
      var box = document.createElement("div");
      box.className = "table-scroll";
      table.parentNode.insertBefore(box, table);
      box.appendChild(table);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { boxTables(document); });
  document.addEventListener("htmx:load", function (event) { boxTables(event.target); });
})();

// Plan form: only the formats the chosen source's engine produces (each
// format's data-engines, each source's data-engine; catalog/forms.py). A format
// that no longer fits gives way to the first that does.
(function () {
  function offerFormats(form) {
    var source = form.querySelector("select[name=source]");
    var format = form.querySelector("select[name=format]");
    if (!source || !format) return;
    var chosen = source.options[source.selectedIndex];
    var engine = chosen && chosen.dataset.engine;
    [].forEach.call(format.options, function (option) {
      var fits = !engine || !option.dataset.engines || option.dataset.engines.split(" ").indexOf(engine) !== -1;
      option.hidden = option.disabled = !fits;
    });
    var selected = format.options[format.selectedIndex];
    if (selected && selected.disabled) {
      var first = [].filter.call(format.options, function (option) { return !option.disabled; })[0];
      if (first) {
        format.value = first.value;
        format.dispatchEvent(new Event("change", { bubbles: true }));
      }
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form").forEach(offerFormats);
  });
  document.addEventListener("change", function (event) {
    if (event.target.name === "source" && event.target.form) offerFormats(event.target.form);
  });
})();

// A Test button that succeeds: the form's values work, so the errors of an
// earlier save or test no longer apply (they stay until then, being true).
document.addEventListener("htmx:afterSwap", function (event) {
  var target = event.detail.target;
  if (!target || !target.querySelector(".test-result.ok")) return;
  var form = target.closest("form");
  if (!form) return;
  form.querySelectorAll(".field .error, .flash-error").forEach(function (error) { error.remove(); });
  form.querySelectorAll(".has-error").forEach(function (field) { field.classList.remove("has-error"); });
});

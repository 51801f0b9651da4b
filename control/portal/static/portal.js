// The portal's only script besides htmx: select-all per entity, and a secret generated in the browser.
(function () {
  "use strict";
  // "all" is ``KEY:*``, the three changes; the read box (a backfill's rows) is left as it is.
  var CHANGE_BOXES = 'input[name="events"]:not([data-not-in-all])';

  function syncAll(row) {
    var boxes = row.querySelectorAll(CHANGE_BOXES);
    var all = row.querySelector("input[data-select-all]");
    if (!all) return;
    all.checked = Array.prototype.every.call(boxes, function (box) { return box.checked; });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    var row = target.closest && target.closest("tr[data-entity]");
    if (!row) return;
    if (target.hasAttribute("data-select-all")) {
      row.querySelectorAll(CHANGE_BOXES).forEach(function (box) { box.checked = target.checked; });
    } else {
      syncAll(row);
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-generate-secret]");
    if (!button) return;
    var bytes = new Uint8Array(32);
    window.crypto.getRandomValues(bytes);
    var text = "";
    bytes.forEach(function (b) { text += String.fromCharCode(b); });
    document.getElementById(button.getAttribute("data-generate-secret")).value = "whsec_" + window.btoa(text);
  });

  document.addEventListener("focusin", function (event) {
    if (event.target.hasAttribute && event.target.hasAttribute("data-portal-link")) event.target.select();
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("tr[data-entity]").forEach(syncAll);
  });
})();

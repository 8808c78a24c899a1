// Waypoint's own script, kept small: the pages work without it.
(function () {
  "use strict";

  // Forms that ask "an event, or an attribute, or a conversion?" show only the fields of
  // the choice made. Without this script every field stays visible and still works.
  function applyToggles(root) {
    root.querySelectorAll("select[data-controls]").forEach(function (select) {
      // A row of a list (data-toggle-scope) has its own choice for its own fields.
      var form = select.closest("[data-toggle-scope]") || select.form;
      if (!form) return;
      form.querySelectorAll("[data-show-for]").forEach(function (element) {
        var wanted = element.getAttribute("data-show-for").split(" ");
        var box = element.matches("fieldset") ? element : element.closest(".field") || element;
        box.hidden = wanted.indexOf(select.value) === -1;
      });
    });
  }

  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-controls]")) applyToggles(event.target.form);
  });
  document.addEventListener("htmx:load", function (event) { applyToggles(event.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { applyToggles(document); });

  // A failed HTMX request would otherwise change nothing on the page and say nothing.
  function showProblem(message) {
    var box = document.getElementById("request-problem");
    if (!box) return;
    box.textContent = message;
    box.hidden = false;
  }
  // A 400 that answers with HTML is the fragment asked for, with the request's mistakes
  // shown inline (a report filter out of range): swap it in like any other answer.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    var type = xhr.getResponseHeader("Content-Type") || "";
    if (xhr.status === 400 && type.indexOf("text/html") === 0) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr.status;
    var reason = status === 403 ? "you do not have permission to do that"
      : status === 404 ? "it no longer exists (reload the page)"
      : "the server could not do it (status " + status + ")";
    showProblem("Not saved: " + reason + ".");
  });
  document.addEventListener("htmx:sendError", function () {
    showProblem("Not saved: the server could not be reached. Check the connection and try again.");
  });
  document.addEventListener("htmx:beforeRequest", function () {
    var box = document.getElementById("request-problem");
    if (box) box.hidden = true;
  });

  // A step's side panel with changes not yet saved: leaving it (another step, Close,
  // Escape, a link) asks first instead of dropping the edit without a word.
  var LEAVE = "This step has changes that are not saved. Leave them?";
  function dirtyForm() {
    return document.querySelector("form[data-guard-unsaved][data-dirty]");
  }
  function markDirty(event) {
    var form = event.target.form;
    if (form && form.hasAttribute("data-guard-unsaved")) form.setAttribute("data-dirty", "");
  }
  document.addEventListener("input", markDirty);
  document.addEventListener("change", markDirty);
  document.addEventListener("submit", function (event) {
    event.target.removeAttribute("data-dirty");
  });
  document.addEventListener("htmx:confirm", function (event) {
    var form = dirtyForm();
    var elt = event.detail.elt;
    if (!form || form.contains(elt)) return;
    // Tools beside the form that leave it in place (the preview, a test send) go on.
    var panel = form.closest("#step-panel");
    var target = event.detail.target;
    if (panel && panel.contains(elt) && !(target && target.contains(panel))) return;
    event.preventDefault();
    if (window.confirm(LEAVE)) {
      form.removeAttribute("data-dirty");
      event.detail.issueRequest(true);
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var close = document.querySelector("#step-panel [data-close-panel]");
    if (close && !document.querySelector("dialog[open]")) close.click();
  });
  window.addEventListener("beforeunload", function (event) {
    if (dirtyForm()) {
      event.preventDefault();
      event.returnValue = LEAVE;
    }
  });
})();

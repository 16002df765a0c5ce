// Postern console: the few behaviours pages need, with no inline script anywhere
// (the Content-Security-Policy forbids it). htmx does the live parts.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // A one-time link page signs in at once; the button stays for browsers without script.
  var auto = document.querySelector("form[data-autosubmit]");
  if (auto) { auto.submit(); }

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.getAttribute("data-copy"));
      var status = button.parentElement.querySelector(".copied");
      function done(text) { if (status) { status.textContent = text; } }
      field.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(function () { done("Copied."); }, function () { done("Select and copy it by hand."); });
      } else {
        done(document.execCommand("copy") ? "Copied." : "Select and copy it by hand.");
      }
    });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
});

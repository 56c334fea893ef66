// The dashboard's only script: refreshes [data-live] fragments by short polling, and copies
// shared-link URLs. No build step, no dependencies; the pages work without it (less live).
(function () {
  "use strict";
  var interval = parseInt(document.body.getAttribute("data-poll") || "2500", 10);

  function schedule(el) {
    window.setTimeout(function () { refresh(el); }, interval);
  }

  function refresh(el) {
    if (document.hidden) { schedule(el); return; }
    fetch(el.getAttribute("data-live"), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Requested-With": "fetch" }
    }).then(function (response) {
      if (response.status === 401) {
        var back = encodeURIComponent(window.location.pathname + window.location.search);
        window.location.assign((response.headers.get("X-Signin") || "/ui/login") + "?next=" + back);
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (typeof html === "string") {
        el.innerHTML = html;
        el.setAttribute("data-refreshed", String(Date.now()));
      }
    }).catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(function () { schedule(el); });
  }

  document.querySelectorAll("[data-live]").forEach(schedule);

  function copied(button, text) {
    button.textContent = text;
    window.setTimeout(function () { button.textContent = "Copy"; }, 1500);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-copy]") : null;
    if (!button) { return; }
    var value = button.getAttribute("data-copy");
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(
        function () { copied(button, "Copied"); },
        function () { copied(button, "Copy failed"); }
      );
      return;
    }
    var field = document.createElement("textarea");
    field.value = value;
    field.setAttribute("readonly", "");
    field.className = "offscreen";
    document.body.appendChild(field);
    field.select();
    try { document.execCommand("copy"); copied(button, "Copied"); } catch (e) { copied(button, "Copy failed"); }
    document.body.removeChild(field);
  });
})();

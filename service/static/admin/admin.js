// Progressive enhancement for the code2lora dashboard: every page works without this file.
// 1. [data-poll]: refresh a fragment while it reports live jobs (data-live="1");
//    with data-reload-when-done=URL, load URL once they finish so new versions appear.
// 2. form[data-confirm]: ask before destructive actions.
(function () {
  "use strict";
  var PERIOD_MS = 1000;

  function isLive(el) {
    var table = el.querySelector("[data-live]");
    return table !== null && table.getAttribute("data-live") === "1";
  }

  function poll(el) {
    var wasLive = isLive(el);
    if (!wasLive) return;
    var timer = setInterval(function () {
      if (document.hidden) return;
      fetch(el.getAttribute("data-poll"), {headers: {"Accept": "text/html"}, credentials: "same-origin"})
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) {
          el.innerHTML = html;
          if (!isLive(el)) {
            clearInterval(timer);
            // A GET of the page itself: the current document may be a POST answer (never re-post it).
            var target = el.getAttribute("data-reload-when-done");
            if (target) window.location.assign(target);
          }
        })
        .catch(function () { clearInterval(timer); });
    }, PERIOD_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  });
})();

// The console's own script: counts down approval expiry. No inline script anywhere
// (the Content-Security-Policy allows scripts from /ui/static only).
(function () {
  "use strict";
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("time.countdown[data-expires]").forEach(function (el) {
      var left = Math.max(0, Math.floor(parseFloat(el.dataset.expires) - now));
      var text = left > 0 ? Math.floor(left / 60) + "m " + String(left % 60).padStart(2, "0") + "s" : "expired";
      if (el.textContent !== text) el.textContent = text;
      if (left === 0) {
        var card = el.closest("article.approval");
        if (card) {
          card.classList.add("expired");
          card.querySelectorAll("form.decide button").forEach(function (b) { b.disabled = true; });
        }
      }
    });
  }
  document.addEventListener("DOMContentLoaded", tick);
  setInterval(tick, 1000);
})();

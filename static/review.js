// The review page's keys: `a` accepts, `r` moves to the reason (Enter then rejects).
(() => {
  "use strict";
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = e.target.closest && e.target.closest("input, textarea, select");
    if (typing) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.key === "a") {
      const form = document.getElementById("accept-form");
      if (form) {
        e.preventDefault();
        form.requestSubmit();
      }
    } else if (e.key === "r") {
      const reason = document.getElementById("reject-reason");
      if (reason) {
        e.preventDefault();
        reason.focus();
      }
    }
  });
})();

// Live run page: while a run is queued or running, re-fetch its status, charts and log tail
// (server-rendered HTML, already escaped) every three seconds.
(function () {
  const live = document.getElementById("live");
  const url = live && live.dataset.refresh;
  if (!url) return;
  async function refresh() {
    try {
      const res = await fetch(url, { credentials: "same-origin" });
      if (res.ok) {
        live.innerHTML = await res.text();
        const inner = document.getElementById("run-live");
        if (inner && !["queued", "running"].includes(inner.dataset.status)) return;
      }
    } catch (e) { /* try again */ }
    setTimeout(refresh, 3000);
  }
  setTimeout(refresh, 3000);
})();

// Live run page: while a run is queued or running, re-fetch its status, progress, charts and
// log tail (server-rendered HTML, already escaped) every three seconds, keeping the folded
// charts open or closed as the reader left them.
(function () {
  const live = document.getElementById("live");
  const url = live && live.dataset.refresh;
  if (!url) return;
  async function refresh() {
    try {
      const res = await fetch(url, { credentials: "same-origin" });
      if (res.ok) {
        const more = document.getElementById("more-charts");
        const open = more && more.open;
        live.innerHTML = await res.text();
        const again = document.getElementById("more-charts");
        if (again && open) again.open = true;
        const inner = document.getElementById("run-live");
        if (inner && !["queued", "running"].includes(inner.dataset.status)) return;
      }
    } catch (e) { /* try again */ }
    setTimeout(refresh, 3000);
  }
  setTimeout(refresh, 3000);
})();

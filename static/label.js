// The labelling page: leases a task, lets the labeller rank it with the keyboard or by
// dragging, and submits. Every text from the server is inserted with textContent, never HTML.
"use strict";
(function () {
  const config = JSON.parse(document.getElementById("config").textContent);
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  let task = null, ranking = [], tieNext = false, key = null, busy = false, started = 0;

  function api(method, path, body) {
    return fetch(path, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": config.csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  function status(text, isError) {
    const s = $("status");
    s.textContent = text;
    s.className = isError ? "error" : "";
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      return body.error.message;
    } catch (_) {
      return "the server answered " + res.status;
    }
  }

  async function loadProgress() {
    const res = await api("GET", "/api/v1/projects/" + config.slug + "/progress");
    if (res.ok) {
      const p = await res.json();
      $("progress").textContent = p.done_today + " done today · " + p.left + " left";
    }
  }

  async function next() {
    status("Loading the next task…");
    const res = await api("POST", "/api/v1/projects/" + config.slug + "/tasks/next");
    if (res.status === 204) {
      show(null);
    } else if (res.ok) {
      show(await res.json());
    } else {
      $("task").hidden = true;
      status(await errorText(res), true);
    }
  }

  // After an onboarding gold task: the reference ranking of the task just done, and why.
  function showReference(ref, done) {
    const box = $("reference");
    box.hidden = !ref;
    if (!ref) return;
    const list = $("reference-ranking");
    list.textContent = "";
    ref.ranking.forEach((tier) => {
      const li = el("li");
      tier.forEach((id, k) => {
        const r = done.responses.find((x) => x.id === id);
        li.appendChild(el("span", "", (k ? " = " : "") + (r ? r.text.slice(0, 300) : id)));
      });
      list.appendChild(li);
    });
    $("reference-explanation").textContent = ref.explanation || "";
  }

  // Shows a leased task, or the end of the queue for `null`.
  function show(next) {
    task = next;
    loadProgress();
    if (!task) {
      $("task").hidden = true;
      status("Nothing left for you in this project. Thank you!");
      return;
    }
    ranking = [];
    tieNext = false;
    key = crypto.randomUUID();
    started = Date.now();
    render();
    status("");
  }

  function renderPrompt() {
    const box = $("prompt");
    box.replaceChildren();
    for (const turn of task.prompt) {
      const t = el("div", "turn");
      t.append(el("span", "role", turn.role), ...richText(turn.content));
      box.append(t);
    }
  }

  // Plain text, with ``` fences shown as monospace blocks.
  function richText(text) {
    const parts = text.split("```");
    return parts.map((part, i) => (i % 2 ? el("pre", "code", part.replace(/^[a-zA-Z0-9_+-]*\n/, "")) : el("span", "", part)));
  }

  function renderResponses() {
    const box = $("responses");
    box.replaceChildren();
    task.responses.forEach((r, i) => {
      const card = el("article", "response");
      card.id = "response-" + (i + 1);
      const head = el("h3");
      head.append(el("span", "", "Response " + (i + 1)));
      const rank = el("span", "badge");
      rank.id = "rank-of-" + (i + 1);
      head.append(rank);
      const text = el("div", "text");
      text.append(...richText(r.text));
      card.append(head, text);
      if (r.text.length > 1200) {
        const more = el("button", "link", "Expand");
        more.type = "button";
        more.addEventListener("click", () => {
          card.classList.toggle("expanded");
          more.textContent = card.classList.contains("expanded") ? "Collapse" : "Expand";
        });
        card.append(more);
      }
      const rankBtn = el("button", "", "Rank next (" + (i + 1) + ")");
      rankBtn.type = "button";
      rankBtn.addEventListener("click", () => pick(i));
      card.append(rankBtn);
      if (config.flags.length && config.kind !== "demonstration") {
        const flags = el("details", "flags");
        flags.append(el("summary", "", "Flags"));
        for (const f of config.flags) {
          const l = el("label");
          const c = el("input");
          c.type = "checkbox";
          c.dataset.response = r.id;
          c.dataset.flag = f;
          l.append(c, document.createTextNode(" " + f));
          flags.append(l, el("br"));
        }
        card.append(flags);
      }
      box.append(card);
    });
  }

  function render() {
    $("task").hidden = false;
    const ranked = config.kind !== "demonstration";
    document.querySelector(".ranking-panel").hidden = !ranked;
    $("pairwise-extra").hidden = config.kind !== "pairwise";
    $("demo-extra").hidden = config.kind !== "demonstration";
    $("rating-extra").hidden = !config.rating_enabled;
    $("comment").value = "";
    $("demonstration").value = "";
    $("rating").value = "";
    $("both-bad").checked = false;
    renderPrompt();
    renderResponses();
    renderRanking();
  }

  function renderRanking() {
    const list = $("ranking");
    list.replaceChildren();
    ranking.forEach((tier, t) => {
      const li = el("li", "", tier.map((i) => "Response " + (i + 1)).join(" = "));
      li.draggable = true;
      li.dataset.tier = t;
      li.addEventListener("dragstart", (e) => {
        li.classList.add("dragging");
        e.dataTransfer.setData("text/plain", String(t));
      });
      li.addEventListener("dragend", () => li.classList.remove("dragging"));
      li.addEventListener("dragover", (e) => e.preventDefault());
      li.addEventListener("drop", (e) => {
        e.preventDefault();
        const from = Number(e.dataTransfer.getData("text/plain"));
        const [moved] = ranking.splice(from, 1);
        ranking.splice(t, 0, moved);
        renderRanking();
      });
      list.append(li);
    });
    if (!task) return;
    task.responses.forEach((_, i) => {
      const t = ranking.findIndex((tier) => tier.includes(i));
      $("rank-of-" + (i + 1)).textContent = t < 0 ? "" : String(t + 1);
      $("response-" + (i + 1)).classList.toggle("ranked", t >= 0);
    });
  }

  function pick(i) {
    if (!task || i >= task.responses.length) return;
    const at = ranking.findIndex((tier) => tier.includes(i));
    if (at >= 0) {
      ranking[at] = ranking[at].filter((x) => x !== i);
      ranking = ranking.filter((tier) => tier.length);
    } else if (config.kind === "pairwise") {
      ranking = [[i], [1 - i]];
    } else if (tieNext && ranking.length && config.allow_ties) {
      ranking[ranking.length - 1].push(i);
    } else {
      ranking.push([i]);
    }
    tieNext = false;
    renderRanking();
  }

  function tie() {
    if (config.kind === "pairwise") {
      ranking = [[0, 1]];
      renderRanking();
    } else if (config.allow_ties) {
      tieNext = true;
      status("Tie: press the number of the response that ties with the last one ranked.");
    } else {
      status("This project does not allow ties.", true);
    }
  }

  function undo() {
    if (!ranking.length) return;
    ranking[ranking.length - 1].pop();
    ranking = ranking.filter((tier) => tier.length);
    renderRanking();
  }

  function collect() {
    const body = { idempotency_key: key, comment: $("comment").value, flags: {} };
    for (const c of document.querySelectorAll("#responses input[type=checkbox]:checked")) {
      (body.flags[c.dataset.response] = body.flags[c.dataset.response] || []).push(c.dataset.flag);
    }
    if (config.kind === "demonstration") {
      body.demonstration = $("demonstration").value;
    } else {
      body.ranking = ranking.map((tier) => tier.map((i) => task.responses[i].id));
    }
    if (config.kind === "pairwise") {
      body.strength = Number(document.querySelector("input[name=strength]:checked").value);
      body.both_bad = $("both-bad").checked;
    }
    if (config.rating_enabled && $("rating").value) body.rating = Number($("rating").value);
    return body;
  }

  async function submit() {
    if (!task || busy) return;
    busy = true;
    status("Submitting…");
    try {
      const res = await api("POST", "/api/v1/tasks/" + task.task_id + "/judgement?next=1", collect());
      if (res.status === 201 || res.status === 200) {
        const body = await res.json();
        showReference(body.reference, task);
        if (body.paused) {
          task = null;
          $("task").hidden = true;
          status(body.paused, true);
        } else {
          show(body.next);
        }
      } else {
        // 400 and 409 keep everything the labeller did on screen.
        status(await errorText(res), true);
      }
    } catch (e) {
      status("Could not reach the server; your work is still here. Press Enter to retry.", true);
    } finally {
      busy = false;
    }
  }

  function showSkip() {
    $("skip-box").hidden = false;
    $("skip-reason").focus();
  }

  async function skip() {
    const reason = $("skip-reason").value.trim();
    if (!reason) {
      status("Say why you skip this task.", true);
      return;
    }
    const res = await api("POST", "/api/v1/tasks/" + task.task_id + "/skip", { reason });
    $("skip-box").hidden = true;
    $("skip-reason").value = "";
    if (res.ok) await next();
    else status(await errorText(res), true);
  }

  document.addEventListener("keydown", (e) => {
    const typing = e.target.closest("input, textarea, select");
    if (e.target.id === "skip-reason" && e.key === "Enter") {
      e.preventDefault();
      skip();
      return;
    }
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey || !typing)) {
      e.preventDefault();
      submit();
      return;
    }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^[1-9]$/.test(e.key)) pick(Number(e.key) - 1);
    else if (e.key === "t") tie();
    else if (e.key === "Backspace") undo();
    else if (e.key === "s") showSkip();
    else if (e.key === "g") window.open($("guidelines-link").href, "_blank", "noopener");
    else if (e.key === "x" && config.kind === "pairwise") $("both-bad").checked = !$("both-bad").checked;
    else if ("qwe".includes(e.key) && config.kind === "pairwise") {
      document.querySelector("input[name=strength][value='" + ("qwe".indexOf(e.key) + 1) + "']").checked = true;
    } else return;
    e.preventDefault();
  });
  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", showSkip);
  $("skip-confirm").addEventListener("click", skip);
  next();
})();

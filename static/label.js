// The labelling page: leases a task, lets the labeller rank it with the keyboard or by
// dragging, and submits. Text from the server is inserted with textContent; the only HTML
// inserted is what the server rendered from Markdown and sanitized (ammonia's allow-list):
// the `html` beside each prompt turn and response, and `instructions_html`.
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
  const ranked = config.kind !== "demonstration";
  let task = null, ranking = [], tieNext = false, key = null, busy = false, raw = false;

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
    const res = await api("POST", "/api/v1/projects/" + config.slug + "/tasks/next?render=1");
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
      $("panel").hidden = true;
      status("Nothing left for you in this project. Thank you!");
      return;
    }
    ranking = [];
    tieNext = false;
    key = crypto.randomUUID();
    const t0 = performance.now();
    render();
    status("");
    // Client time, for measurements: rendering a task, and from a submission to the next task
    // on screen.
    performance.measure("rl-render", { start: t0, end: performance.now() });
    if (performance.getEntriesByName("rl-submit").length) performance.measure("rl-turnaround", "rl-submit");
  }

  // How a character that would not print is shown (as the server's Markdown renderer does):
  // a C0 control as its control picture, other invisible or format characters as \u{…}.
  function shownAs(c) {
    const n = c.codePointAt(0);
    if (n === 9 || n === 10 || n === 13) return null;
    if (n < 0x20) return String.fromCodePoint(0x2400 + n);
    if (n === 0x7f) return "\u2421";
    const hidden = (n >= 0x80 && n <= 0x9f) || n === 0x200b || n === 0x200e || n === 0x200f || (n >= 0x2028 && n <= 0x202e) ||
      (n >= 0x2060 && n <= 0x2064) || (n >= 0x2066 && n <= 0x2069) || n === 0xfeff || (n >= 0xfff9 && n <= 0xfffb) || (n >= 0xfffd && n <= 0xffff);
    return hidden ? "\\u{" + n.toString(16) + "}" : null;
  }

  // Raw text as nodes, each character that would not print as a visible badge.
  function rawText(text) {
    const out = el("pre", "raw");
    let run = "";
    for (const c of text) {
      const shown = shownAs(c);
      if (shown === null) {
        run += c;
        continue;
      }
      out.append(run);
      run = "";
      const badge = el("span", "ctl", shown);
      badge.title = "U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
      out.append(badge);
    }
    out.append(run);
    return out;
  }

  // The server's sanitized HTML for rendered Markdown, or the raw text.
  function body(text, html) {
    if (raw) return rawText(text);
    const box = el("div", "md");
    box.innerHTML = html;
    return box;
  }

  function renderInstructions() {
    const box = $("instructions");
    box.hidden = !task.instructions;
    box.replaceChildren();
    if (task.instructions) box.append(body(task.instructions, task.instructions_html));
  }

  function renderPrompt() {
    const box = $("prompt");
    box.replaceChildren();
    for (const turn of task.prompt) {
      const t = el("div", "turn");
      t.append(el("span", "role", turn.role), body(turn.content, turn.html));
      box.append(t);
    }
  }

  function renderResponses() {
    const box = $("responses");
    box.replaceChildren();
    box.classList.toggle("pair", config.kind === "pairwise");
    task.responses.forEach((r, i) => {
      const card = el("article", "response");
      card.id = "response-" + (i + 1);
      const head = el("h3");
      head.append(el("span", "", "Response " + (i + 1)));
      const rank = el("span", "badge");
      rank.id = "rank-of-" + (i + 1);
      rank.hidden = true;
      head.append(rank);
      const text = el("div", "text");
      text.append(body(r.text, r.html));
      card.append(head, text);
      const actions = el("div", "actions");
      if (ranked) {
        const rankBtn = el("button", "", (config.kind === "pairwise" ? "Better (" : "Rank next (") + (i + 1) + ")");
        rankBtn.type = "button";
        rankBtn.addEventListener("click", () => pick(i));
        actions.append(rankBtn);
      }
      if (r.text.length > 1200) {
        const more = el("button", "link", "Expand");
        more.type = "button";
        more.addEventListener("click", () => {
          card.classList.toggle("expanded");
          more.textContent = card.classList.contains("expanded") ? "Collapse" : "Expand";
        });
        actions.append(more);
      }
      if (config.flags.length && ranked) {
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
        actions.append(flags);
      }
      card.append(actions);
      box.append(card);
    });
  }

  function render() {
    $("task").hidden = false;
    $("panel").hidden = false;
    document.querySelector(".ranking-panel").hidden = !ranked;
    $("pairwise-extra").hidden = config.kind !== "pairwise";
    $("demo-extra").hidden = config.kind !== "demonstration";
    $("rating-extra").hidden = !config.rating_enabled;
    $("submit").textContent = ranked ? "Submit (Enter)" : "Submit (Ctrl+Enter)";
    $("comment").value = "";
    $("demonstration").value = "";
    $("rating").value = "";
    $("both-bad").checked = false;
    const clearly = document.querySelector("input[name=strength][value='2']");
    if (clearly) clearly.checked = true;
    tieHint(false);
    renderTexts();
    renderRanking();
  }

  // Everything that shows the task's text, rendered or raw.
  function renderTexts() {
    renderInstructions();
    renderPrompt();
    renderResponses();
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
      const badge = $("rank-of-" + (i + 1));
      badge.textContent = t < 0 ? "" : String(t + 1);
      badge.hidden = t < 0;
      $("response-" + (i + 1)).classList.toggle("ranked", t >= 0);
    });
  }

  function tieHint(on) {
    tieNext = on;
    const hint = $("tie-hint");
    hint.hidden = !on;
    hint.textContent = on ? "Tie: press the number of the response that ties with the last one ranked." : "";
  }

  function pick(i) {
    if (!task || !ranked || i >= task.responses.length) return;
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
    tieHint(false);
    renderRanking();
  }

  function tie() {
    if (!ranked) return;
    if (config.kind === "pairwise") {
      ranking = [[0, 1]];
      renderRanking();
    } else if (config.allow_ties && ranking.length) {
      tieHint(true);
    } else if (config.allow_ties) {
      status("Rank a response first; t then a number ties another with it.", true);
    } else {
      status("This project does not allow ties.", true);
    }
  }

  function undo() {
    if (tieNext) return tieHint(false);
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

  // One response left unranked is the last one: Enter ranks it so (K-1 numbers and Enter).
  function completeRanking() {
    if (config.kind !== "ranking") return;
    const left = task.responses.map((_, i) => i).filter((i) => !ranking.some((tier) => tier.includes(i)));
    if (left.length === 1 && ranking.length) {
      ranking.push(left);
      renderRanking();
    }
  }

  async function submit() {
    if (!task || busy) return;
    completeRanking();
    busy = true;
    status("Submitting…");
    performance.mark("rl-submit");
    try {
      const res = await api("POST", "/api/v1/tasks/" + task.task_id + "/judgement?next=1&render=1", collect());
      if (res.status === 201 || res.status === 200) {
        if (document.activeElement && document.activeElement.closest("textarea, input")) document.activeElement.blur();
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
      status("Could not reach the server; your work is still here. Press " + (ranked ? "Enter" : "Ctrl+Enter") + " to retry.", true);
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
    $("skip-reason").blur();
    if (res.ok) await next();
    else status(await errorText(res), true);
  }

  function toggleGuidelines(open) {
    const panel = $("guidelines-panel");
    const show = open === undefined ? panel.hidden : open;
    panel.hidden = !show;
    $("layout").classList.toggle("with-guidelines", show);
    $("guidelines-toggle").setAttribute("aria-expanded", String(show));
  }

  function toggleHelp(open) {
    const overlay = $("help-overlay");
    overlay.hidden = open === undefined ? !overlay.hidden : !open;
    if (!overlay.hidden) $("help-close").focus();
  }

  function toggleRaw() {
    raw = !raw;
    $("raw-toggle").setAttribute("aria-pressed", String(raw));
    $("raw-toggle").textContent = raw ? "Rendered (r)" : "Raw text (r)";
    if (task) renderTexts();
    renderRanking();
  }

  function focusBox(id) {
    const box = $(id);
    if (box && box.offsetParent !== null) box.focus();
  }

  document.addEventListener("keydown", (e) => {
    const typing = e.target.closest && e.target.closest("input, textarea, select");
    if (e.key === "Escape") {
      if (!$("help-overlay").hidden) toggleHelp(false);
      else if (!$("guidelines-panel").hidden && !typing) toggleGuidelines(false);
      else if (typing) e.target.blur();
      else return;
      e.preventDefault();
      return;
    }
    if (!$("help-overlay").hidden) {
      if (e.key === "?") {
        toggleHelp(false);
        e.preventDefault();
      }
      return;
    }
    if (e.target.id === "skip-reason" && e.key === "Enter") {
      e.preventDefault();
      skip();
      return;
    }
    // Ctrl+Enter submits on every kind, from anywhere; Enter alone only a ranked kind, outside
    // a text box (in one it is a new line), as the button says.
    if (e.key === "Enter" && ((e.ctrlKey || e.metaKey) || (ranked && !typing && !e.target.closest("button, a, summary")))) {
      e.preventDefault();
      submit();
      return;
    }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^[1-9]$/.test(e.key)) pick(Number(e.key) - 1);
    else if (e.key === "t") tie();
    else if (e.key === "Backspace") undo();
    else if (e.key === "s" && task) showSkip();
    else if (e.key === "g") toggleGuidelines();
    else if (e.key === "?") toggleHelp(true);
    else if (e.key === "r") toggleRaw();
    else if (e.key === "p") $("prompt-box").open = !$("prompt-box").open;
    else if (e.key === "c") focusBox("comment");
    else if (e.key === "d") focusBox("demonstration");
    else if (e.key === "x" && config.kind === "pairwise") $("both-bad").checked = !$("both-bad").checked;
    else if ("qwe".includes(e.key) && config.kind === "pairwise") {
      document.querySelector("input[name=strength][value='" + ("qwe".indexOf(e.key) + 1) + "']").checked = true;
    } else return;
    e.preventDefault();
  });
  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", showSkip);
  $("skip-confirm").addEventListener("click", skip);
  $("guidelines-toggle").addEventListener("click", () => toggleGuidelines());
  $("guidelines-close").addEventListener("click", () => toggleGuidelines(false));
  $("help-toggle").addEventListener("click", () => toggleHelp(true));
  $("help-close").addEventListener("click", () => toggleHelp(false));
  $("help-overlay").addEventListener("click", (e) => {
    if (e.target === $("help-overlay")) toggleHelp(false);
  });
  $("raw-toggle").addEventListener("click", toggleRaw);
  next();
})();

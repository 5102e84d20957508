//! The labelling page in a real Chromium, at 1400×1000 and at 420 px wide: the judgement panel
//! stays in view, pairs stand side by side, Markdown renders sanitized, every keyboard path
//! works. Each test writes screenshots to `target/screenshots/` (or `$REWARDLAB_SCREENSHOTS`).

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Api, TestApp, PASSWORD};
use crate::webdriver::{Browser, BACKSPACE, CONTROL, ENTER, ESCAPE};

const WIDE: (u32, u32, &str) = (1400, 1000, "1400");
const NARROW: (u32, u32, &str) = (420, 900, "420");

async fn import(lead: &Api, slug: &str, items: impl IntoIterator<Item = Value>) {
    let body: String = items.into_iter().map(|i| format!("{i}\n")).collect();
    let res = lead.post_bytes(&format!("/api/v1/projects/{slug}/items"), body.into_bytes()).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

/// A project `slug` of `kind` (overlap 1) with a lead (returned) and the labeller `lab@<slug>.org`.
async fn project(app: &TestApp, slug: &str, kind: TaskKind) -> Api {
    app.project(slug, kind, 1).await;
    app.member(&format!("lab@{slug}.org"), slug, Role::Labeller).await;
    app.member(&format!("lead@{slug}.org"), slug, Role::Lead).await
}

/// A browser of `width` × `height` signed in as project `slug`'s labeller.
async fn labeller(app: &TestApp, slug: &str, width: u32, height: u32) -> Browser {
    let b = Browser::start().await;
    b.resize(width, height).await;
    b.sign_in(&app.addr, &format!("lab@{slug}.org")).await;
    b
}

/// A long Markdown answer with a heading, paragraphs, a list, a table and a code block.
fn long_markdown(j: usize) -> String {
    let para = "The quick brown fox jumps over the lazy dog, and then considers **why** it did so. ".repeat(8);
    format!(
        "## Answer {j}\n\n{para}\n\n- first point with `inline_code({j})`\n- second point\n\n| metric | value |\n|---|---|\n| score | {j} |\n\n```rust\nfn main() {{ println!(\"{j}\"); }}\n```\n\n{para}"
    )
}

fn chars(text: &str) -> Vec<String> {
    text.chars().map(|c| if c == '\n' { ENTER.to_string() } else { c.to_string() }).collect()
}

async fn type_keys(b: &Browser, text: &str) {
    let keys = chars(text);
    b.keys(&keys.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

async fn judgements(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM judgements WHERE source = 'labeller'").await
}

async fn wait_for_judgements(app: &TestApp, n: i64) {
    for _ in 0..100 {
        if judgements(app).await == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("never {n} judgements");
}

/// Count of `css` matches that are shown.
async fn shown(b: &Browser, css: &str) -> u64 {
    b.script(&format!("return [...document.querySelectorAll({})].filter(e => e.offsetParent !== null).length", json!(css))).await.as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_long_markdown_responses_leave_the_ranking_and_submit_in_view_at_both_widths() {
    let app = spawn_app().await;
    let lead = project(&app, "rank", TaskKind::Ranking).await;
    let prompt = "Explain, at length, how to write a program that prints a number. ".repeat(12);
    import(&lead, "rank", (0..2).map(|i| json!({"id": format!("long-{i}"), "prompt": prompt, "responses": (0..8).map(|j| json!({"model": format!("m{j}"), "text": long_markdown(j)})).collect::<Vec<_>>()})))
        .await;
    let b = labeller(&app, "rank", WIDE.0, WIDE.1).await;
    for (n, (width, height, name)) in [WIDE, NARROW].into_iter().enumerate() {
        b.resize(width, height).await;
        b.goto(&format!("{}/projects/rank/label", app.addr)).await;
        b.find("#response-8 .md table").await;
        assert!(b.in_viewport("#submit").await, "Submit in view at {name} px");
        assert!(b.in_viewport("#ranking").await, "the ranking in view at {name} px");
        assert_eq!(shown(&b, ".badge").await, 0, "no empty badges on unranked cards");
        assert!(b.text("#response-1 .md pre code").await.contains("fn main() { println!"));
        assert!(b.text("#response-1 .md li code").await.starts_with("inline_code("));
        assert_eq!(b.text("#response-1 .md table td").await, "score");
        assert_eq!(shown(&b, "#response-1 strong").await, 16, "bold text renders");

        // The prompt stays pinned while the responses scroll, and the panel stays in view.
        b.script("window.scrollTo(0, document.documentElement.scrollHeight / 2)").await;
        b.wait_until("return window.scrollY > 300").await;
        let (_, top, _, _) = b.rect("#prompt-box").await;
        assert!((-1.0..8.0).contains(&top), "the prompt is pinned at the top, at {top}");
        assert!(b.in_viewport("#submit").await && b.in_viewport("#ranking").await, "after scrolling at {name} px");

        // 3, then 5 tied with it (the hint shows, then goes), then the rest; Backspace takes 8 back.
        b.keys(&["3", "t"]).await;
        b.wait_for_text("#tie-hint", "Tie").await;
        b.keys(&["5"]).await;
        assert_eq!(shown(&b, "#tie-hint").await, 0, "the tie hint is cleared once used");
        assert!(b.text("#status").await.is_empty());
        b.keys(&["1", "2", "4", "6", "7", "8", BACKSPACE]).await;
        let list = b.text("#ranking").await;
        assert!(list.starts_with("Response 3 = Response 5") && !list.contains("Response 8"), "{list}");
        assert_eq!(shown(&b, ".badge").await, 7, "a badge on each ranked card only");
        b.keys(&["8", "p"]).await;
        assert_eq!(b.script("return document.getElementById('prompt-box').open").await, json!(false));
        b.keys(&["p"]).await;
        assert_eq!(b.script("return document.getElementById('prompt-box').open").await, json!(true));
        b.screenshot(&format!("label-ranking-8-long-{name}")).await;
        b.keys(&[ENTER]).await;
        wait_for_judgements(&app, n as i64 + 1).await;
    }
    b.wait_for_text("#status", "Nothing left").await;
    let rows: Vec<(Vec<i16>, Vec<i32>)> =
        sqlx::query_as("SELECT j.ranks, t.display_order FROM judgements j JOIN tasks t ON t.id = j.task_id ORDER BY j.seq").fetch_all(&app.pool).await.unwrap();
    for (ranks, order) in rows {
        let shown_rank = |i: usize| ranks[order[i] as usize];
        assert_eq!((shown_rank(2), shown_rank(4)), (1, 1), "the third and fifth shown tie for best");
        assert_eq!(shown_rank(7), 7, "the eighth shown ranked last");
    }
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_stands_side_by_side_wide_and_stacks_narrow() {
    let app = spawn_app().await;
    let lead = project(&app, "pair", TaskKind::Pairwise).await;
    import(
        &lead,
        "pair",
        (0..2)
            .map(|i| json!({"id": i, "prompt": "Which is better?", "responses": [{"model": "a", "text": long_markdown(1)}, {"model": "b", "text": "Short."}]})),
    )
    .await;
    let b = labeller(&app, "pair", WIDE.0, WIDE.1).await;
    for (n, (width, height, name)) in [WIDE, NARROW].into_iter().enumerate() {
        b.resize(width, height).await;
        b.goto(&format!("{}/projects/pair/label", app.addr)).await;
        b.find("#response-2 .md").await;
        let (l1, t1, w1, h1) = b.rect("#response-1").await;
        let (l2, t2, w2, _) = b.rect("#response-2").await;
        if width == WIDE.0 {
            assert!((w1 - w2).abs() <= 1.0 && (t1 - t2).abs() <= 1.0 && l2 >= l1 + w1, "side by side: {:?}", (l1, t1, w1, l2, t2, w2));
            assert!(w1 > 400.0, "each answer takes half the work area, not a third: {w1}");
        } else {
            assert!((l1 - l2).abs() <= 1.0 && t2 >= t1 + h1, "stacked: {:?}", (l1, t1, h1, l2, t2));
        }
        assert!(b.in_viewport("#submit").await && b.in_viewport("#pairwise-extra fieldset").await, "Submit and the strength in view at {name} px");
        if n == 0 {
            b.keys(&["2", "e", "x"]).await;
            assert_eq!(b.text("#ranking").await, "Response 2\nResponse 1");
        } else {
            b.keys(&["t", "q"]).await;
            assert_eq!(b.text("#ranking").await, "Response 1 = Response 2");
        }
        b.screenshot(&format!("label-pairwise-{name}")).await;
        b.keys(&[ENTER]).await;
        wait_for_judgements(&app, n as i64 + 1).await;
    }
    let rows: Vec<(i16, bool, Vec<i16>)> = sqlx::query_as("SELECT strength, both_bad, ranks FROM judgements ORDER BY seq").fetch_all(&app.pool).await.unwrap();
    assert_eq!((rows[0].0, rows[0].1), (3, true));
    assert_eq!((rows[1].0, rows[1].1, rows[1].2[0] == rows[1].2[1]), (1, false, true));
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demonstration_takes_enter_as_a_new_line_and_ctrl_enter_as_submit() {
    let app = spawn_app().await;
    let lead = project(&app, "demo", TaskKind::Demonstration).await;
    import(&lead, "demo", (0..2).map(|i| json!({"id": i, "prompt": "Write two lines.", "responses": []}))).await;
    let b = labeller(&app, "demo", WIDE.0, WIDE.1).await;
    for (n, (width, height, name)) in [WIDE, NARROW].into_iter().enumerate() {
        b.resize(width, height).await;
        b.goto(&format!("{}/projects/demo/label", app.addr)).await;
        b.wait_for_text("#submit", "Submit (Ctrl+Enter)").await;
        assert!(b.in_viewport("#submit").await);
        b.keys(&["d"]).await;
        type_keys(&b, &format!("line one {name}\nline two")).await;
        // Enter made a new line; outside the text box Enter does not submit either.
        assert_eq!(b.script("return document.getElementById('demonstration').value").await, json!(format!("line one {name}\nline two")));
        b.keys(&[ESCAPE, ENTER]).await;
        assert!(!b.text("#status").await.contains("Submitting"));
        assert_eq!(judgements(&app).await, n as i64);
        b.screenshot(&format!("label-demonstration-{name}")).await;
        b.keys(&["d"]).await;
        b.chord(CONTROL, ENTER).await;
        wait_for_judgements(&app, n as i64 + 1).await;
    }
    let texts: Vec<String> = sqlx::query_scalar("SELECT demonstration FROM judgements ORDER BY seq").fetch_all(&app.pool).await.unwrap();
    assert_eq!(texts, ["line one 1400\nline two", "line one 420\nline two"]);
    b.quit().await;
}

/// The payloads of tests/fixtures/xss-payloads.txt (as the Markdown renderer's unit test reads them).
fn xss_corpus() -> Vec<String> {
    include_str!("../fixtures/xss-payloads.txt").lines().filter(|l| !l.is_empty() && !l.starts_with("# ")).map(|l| l.replace("\\n", "\n")).collect()
}

/// Whether anything in `#task` could run script: a dangerous element, an event-handler or
/// style attribute, a link or image whose URL is not http(s) (or mailto for a link).
const INERT: &str = r#"
const bad = [];
for (const e of document.querySelectorAll('#task *')) {
  if (['SCRIPT','IFRAME','OBJECT','EMBED','SVG','MATH','STYLE','FORM','BASE','META','VIDEO','SOURCE','XSS','BODY','NOSCRIPT'].includes(e.tagName.toUpperCase())) bad.push(e.tagName);
  for (const a of e.attributes) if (/^on|^style$|^srcdoc$|^formaction$/i.test(a.name)) bad.push(e.tagName + '@' + a.name);
  if (e.tagName === 'A' && e.hasAttribute('href') && !['http:', 'https:', 'mailto:'].includes(e.protocol)) bad.push('a ' + e.href);
  if (e.tagName === 'IMG' && e.getAttribute('src') && !['http:', 'https:'].includes(new URL(e.src, location.href).protocol)) bad.push('img ' + e.src);
}
return [typeof window.__xss, bad];
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markdown_renders_sanitized_with_a_raw_toggle_and_visible_control_characters() {
    let app = spawn_app().await;
    let lead = project(&app, "md", TaskKind::Ranking).await;
    let corpus = xss_corpus();
    // The fenced payload last in its response, so it cannot hide the others.
    let chunks: Vec<String> = corpus.chunks(corpus.len().div_ceil(7)).map(|c| c.join("\n\n")).collect();
    let mut responses = vec![
        json!({"model": "md", "text": "**bold** and `x < y`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\nfn main() {}\n```"}),
        json!({"model": "ctl", "text": "bell\u{7} esc\u{1b} zero\u{200b}width bad\u{fffd}byte c1\u{85} end"}),
    ];
    responses.extend(chunks.iter().map(|t| json!({"model": "xss", "text": t})));
    assert_eq!(responses.len(), 9);
    import(&lead, "md", [json!({"id": "md", "prompt": corpus[..12].join("\n\n"), "instructions": corpus[12..24].join("\n\n"), "responses": responses})]).await;

    let b = labeller(&app, "md", WIDE.0, WIDE.1).await;
    b.goto(&format!("{}/projects/md/label", app.addr)).await;
    b.find("#response-9 .md").await;
    assert_eq!(b.script(INERT).await, json!(["undefined", []]), "the XSS corpus is inert in rendered Markdown");
    assert!(b.script("return [...document.querySelectorAll('#responses table td')].some(c => c.textContent === '1')").await == json!(true));
    assert!(b.script("return [...document.querySelectorAll('#responses pre code')].some(c => c.textContent === 'fn main() {}\\n')").await == json!(true));
    assert!(b.script("return [...document.querySelectorAll('#responses code')].some(c => c.textContent === 'x < y')").await == json!(true));
    let badges = b.script("return [...document.querySelectorAll('#responses .ctl')].map(e => e.textContent)").await;
    for c in ["\u{2407}", "\u{241b}", "\\u{200b}", "\\u{fffd}", "\\u{85}"] {
        assert!(badges.as_array().unwrap().contains(&json!(c)), "{c} shown in {badges}");
    }
    let text = b.text("#responses").await;
    assert!(!text.contains('\u{fffd}') && !text.contains('\u{7}') && !text.contains('\u{200b}'), "{text}");
    b.screenshot("label-markdown-rendered-1400").await;

    // Raw text: the Markdown source as it came, control characters still visible.
    b.keys(&["r"]).await;
    b.wait_until("return document.querySelectorAll('#responses pre.raw').length === 9").await;
    assert_eq!(shown(&b, "#responses .md").await, 0);
    assert_eq!(b.text("#raw-toggle").await, "Rendered (r)");
    assert!(
        b.script(
            "return [...document.querySelectorAll('#responses pre.raw')].some(p => p.textContent.includes('| a | b |') && p.textContent.includes('**bold**'))"
        )
        .await
            == json!(true)
    );
    assert!(shown(&b, "#responses pre.raw .ctl").await >= 5);
    assert_eq!(b.script(INERT).await, json!(["undefined", []]), "the XSS corpus is inert as raw text");
    b.screenshot("label-markdown-raw-1400").await;
    b.keys(&["r"]).await;
    b.find("#response-1 .md").await;

    // The narrow page shows the same; then the task is skipped from the keyboard.
    b.resize(NARROW.0, NARROW.1).await;
    assert!(b.in_viewport("#submit").await);
    assert_eq!(b.script(INERT).await, json!(["undefined", []]));
    b.screenshot("label-markdown-rendered-420").await;
    b.keys(&["s"]).await;
    type_keys(&b, "cannot judge\n").await;
    b.wait_for_text("#status", "Nothing left").await;
    assert_eq!(app.count("SELECT count(*) FROM tasks WHERE status = 'skipped' AND skip_reason = 'cannot judge'").await, 1);
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guidelines_panel_the_shortcut_overlay_and_the_items_instructions_at_both_widths() {
    let app = spawn_app().await;
    let lead = project(&app, "guide", TaskKind::Ranking).await;
    let instructions = "Judge **only** the tone. <script>window.__xss=1</script>";
    import(&lead, "guide", (0..2).map(|i| json!({"id": i, "prompt": "Say hello.", "instructions": instructions, "responses": [{"model": "a", "text": "Hello!"}, {"model": "b", "text": "Go away."}]})))
        .await;
    let b = labeller(&app, "guide", WIDE.0, WIDE.1).await;
    for (n, (width, height, name)) in [WIDE, NARROW].into_iter().enumerate() {
        b.resize(width, height).await;
        b.goto(&format!("{}/projects/guide/label", app.addr)).await;
        b.wait_for_text("#instructions", "Judge only the tone. <script>window.__xss=1</script>").await;
        assert_eq!(b.text("#instructions strong").await, "only");
        let (_, i_top, _, i_height) = b.rect("#instructions").await;
        let (_, p_top, _, _) = b.rect("#prompt-box").await;
        assert!(i_top + i_height <= p_top, "the instructions stand above the prompt");

        // g opens the guidelines beside the task (over it on a narrow screen); g or Esc closes.
        b.keys(&["g"]).await;
        b.wait_for_text("#guidelines-panel", "Be kind.").await;
        assert_eq!(b.text("#guidelines-panel strong").await, "kind");
        assert!(b.in_viewport("#guidelines-panel h2").await);
        if width == WIDE.0 {
            let (panel_left, ..) = b.rect("#guidelines-panel").await;
            let (task_left, _, task_width, _) = b.rect("#panel").await;
            assert!(panel_left >= task_left + task_width, "beside the judgement panel");
            assert!(b.in_viewport("#submit").await && b.in_viewport("#response-1").await, "the task stays in view");
        }
        b.screenshot(&format!("label-guidelines-{name}")).await;
        b.keys(&["g"]).await;
        assert_eq!(shown(&b, "#guidelines-panel").await, 0);
        b.keys(&["g", ESCAPE]).await;
        assert_eq!(shown(&b, "#guidelines-panel").await, 0);

        // ? lists every shortcut; while it is open other keys do nothing; Esc or ? closes it.
        b.keys(&["?"]).await;
        b.wait_for_text("#help-overlay", "Keyboard shortcuts").await;
        let keys = b.script("return [...document.querySelectorAll('#help-overlay kbd')].map(k => k.textContent)").await;
        for k in ["1", "9", "t", "Backspace", "q", "w", "e", "x", "Enter", "Ctrl", "s", "c", "d", "p", "r", "g", "?", "Esc"] {
            assert!(keys.as_array().unwrap().contains(&json!(k)), "{k} is listed in {keys}");
        }
        b.screenshot(&format!("label-shortcuts-{name}")).await;
        b.keys(&["1", ESCAPE]).await;
        assert_eq!(shown(&b, "#help-overlay").await, 0);
        assert_eq!(b.text("#ranking").await, "");
        b.keys(&["?", "?"]).await;
        assert_eq!(shown(&b, "#help-overlay").await, 0);

        // A comment, then Ctrl+Enter from inside it submits a ranking.
        b.keys(&["2", "1", "c"]).await;
        type_keys(&b, &format!("polite\n{name}")).await;
        b.chord(CONTROL, ENTER).await;
        wait_for_judgements(&app, n as i64 + 1).await;
    }
    let comments: Vec<String> = sqlx::query_scalar("SELECT comment FROM judgements ORDER BY seq").fetch_all(&app.pool).await.unwrap();
    assert_eq!(comments, ["polite\n1400", "polite\n420"]);
    assert_eq!(b.script("return typeof window.__xss").await, json!("undefined"));
    b.quit().await;
}

#[tokio::test]
async fn the_page_view_of_a_task_carries_its_instructions_and_sanitized_markdown() {
    let app = spawn_app().await;
    let lead = project(&app, "view", TaskKind::Pairwise).await;
    let pair = json!([{"model": "a", "text": "| a |\n|---|\n| 1 |"}, {"model": "b", "text": "[x](javascript:alert(1)) \u{7}"}]);
    import(&lead, "view", (0..2).map(|i| json!({"id": i, "prompt": "**Hi** <script>x</script>", "instructions": "Be *brief*", "responses": pair}))).await;
    let bad = lead.post_bytes("/api/v1/projects/view/items", format!("{}\n", json!({"prompt": "p", "instructions": 3, "responses": pair})).into_bytes()).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("field \\\"instructions\\\": expected a string"));

    let plain = lead.next_task("view").await.unwrap();
    assert!(plain.get("instructions").is_none() && plain["responses"][0].get("html").is_none(), "the API's view is unchanged: {plain}");
    assert_eq!(lead.post("/api/v1/projects/view/tasks/next?render=yes", &Value::Null).await.status(), 400);
    let res = lead.post("/api/v1/projects/view/tasks/next?render=1", &Value::Null).await;
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["task_id"], plain["task_id"], "the same live lease");
    assert_eq!((view["instructions"].as_str(), view["instructions_html"].as_str()), (Some("Be *brief*"), Some("<p>Be <em>brief</em></p>\n")));
    let prompt = view["prompt"][0]["html"].as_str().unwrap();
    assert!(prompt.contains("<strong>Hi</strong>") && prompt.contains("&lt;script&gt;"), "{prompt}");
    let html: Vec<&str> = view["responses"].as_array().unwrap().iter().map(|r| r["html"].as_str().unwrap()).collect();
    assert!(html.iter().any(|h| h.contains("<table>")), "{html:?}");
    let link = html.iter().find(|h| h.contains(">x</a>")).unwrap();
    assert!(!link.contains("javascript") && link.contains("<span class=\"ctl\" title=\"U+0007\">\u{2407}</span>"), "{link}");

    let ranking: Vec<Vec<Value>> = view["responses"].as_array().unwrap().iter().map(|r| vec![r["id"].clone()]).collect();
    let path = format!("/api/v1/tasks/{}/judgement?next=1&render=1", view["task_id"].as_str().unwrap());
    let res = lead.post(&path, &json!({"idempotency_key": "k", "ranking": ranking, "strength": 2})).await;
    assert_eq!(res.status(), 201);
    let next = &res.json::<Value>().await.unwrap()["next"];
    assert_eq!(next["instructions_html"], "<p>Be <em>brief</em></p>\n", "{next}");
    assert!(next["responses"][0]["html"].is_string());

    // The lead's item page shows them too.
    let item: uuid::Uuid = sqlx::query_scalar("SELECT id FROM items WHERE external_id = '0'").fetch_one(&app.pool).await.unwrap();
    let page = app.login("lead@view.org", PASSWORD).await.get(&format!("/projects/view/items/{item}")).await.text().await.unwrap();
    assert!(page.contains("<pre class=\"wrap\" id=\"item-instructions\">Be *brief*</pre>"), "{page}");
}

/// Prints (asserts nothing about speed) the keystrokes and the client time a judgement takes
/// for K = 2, 4, 8 at 1400×1000: K-1 numbers and Enter (the last response is ranked last by
/// itself); the page's own measures of rendering a task and of a submission's turnaround (from
/// Enter to the next task on screen, the server's answer included); and the wall time per
/// judgement as driven through WebDriver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystrokes_and_client_time_per_judgement_for_k_2_4_8() {
    const ITEMS: usize = 6;
    let app = spawn_app().await;
    let mut table = vec!["K  keys/judgement  render ms (median)  Enter->next task ms (median)  wall ms/judgement (WebDriver)".to_string()];
    for k in [2usize, 4, 8] {
        let slug = format!("k{k}");
        let lead = project(&app, &slug, TaskKind::Ranking).await;
        import(&lead, &slug, (0..ITEMS).map(|i| json!({"id": i, "prompt": format!("Question {i}"), "responses": (0..k).map(|j| json!({"model": format!("m{j}"), "text": long_markdown(j)})).collect::<Vec<_>>()})))
            .await;
        let b = labeller(&app, &slug, WIDE.0, WIDE.1).await;
        b.goto(&format!("{}/projects/{slug}/label", app.addr)).await;
        let before = judgements(&app).await;
        let keys: Vec<String> = (1..k).map(|n| n.to_string()).chain([ENTER.to_string()]).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        for _ in 0..ITEMS {
            b.find(&format!("#response-{k}")).await;
            b.wait_until("return document.getElementById('ranking').children.length === 0").await;
            b.keys(&keys).await;
            b.wait_until(
                "return document.querySelectorAll('#ranking li').length === 0 || document.getElementById('status').textContent.includes('Nothing left')",
            )
            .await;
        }
        b.wait_for_text("#status", "Nothing left").await;
        let wall = started.elapsed().as_secs_f64() * 1000.0 / ITEMS as f64;
        wait_for_judgements(&app, before + ITEMS as i64).await;
        let (render, turnaround) = (median(&b, "rl-render").await, median(&b, "rl-turnaround").await);
        table.push(format!("{k}  {:>15}  {render:>18.1}  {turnaround:>28.1}  {wall:>29.0}", keys.len()));
        b.quit().await;
    }
    let complete: i64 = app.count("SELECT count(*) FROM judgements WHERE array_length(ranks, 1) IN (2, 4, 8)").await;
    assert_eq!(complete, 3 * ITEMS as i64, "every judgement ranks all K responses");
    println!("{}", table.join("\n"));
}

/// The median duration of the page's performance measures called `name`.
async fn median(b: &Browser, name: &str) -> f64 {
    let script =
        format!("const d = performance.getEntriesByName('{name}').map(e => e.duration).sort((a, b) => a - b); return d[Math.floor(d.length / 2)] || 0");
    b.script(&script).await.as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_dark_system_setting() {
    let app = spawn_app().await;
    let lead = project(&app, "dark", TaskKind::Pairwise).await;
    import(
        &lead,
        "dark",
        [json!({"prompt": "Which is better?", "responses": [{"model": "a", "text": long_markdown(1)}, {"model": "b", "text": "Short `code`."}]})],
    )
    .await;
    let b = Browser::start_with(&["--force-dark-mode", "--blink-settings=preferredColorScheme=0"]).await;
    b.resize(WIDE.0, WIDE.1).await;
    b.sign_in(&app.addr, "lab@dark.org").await;
    b.goto(&format!("{}/projects/dark/label", app.addr)).await;
    b.find("#response-2 .md code").await;
    assert_eq!(b.script("return matchMedia('(prefers-color-scheme: dark)').matches").await, json!(true));
    let colours = b
        .script("return [document.body, document.getElementById('response-1'), document.getElementById('panel')].map(e => getComputedStyle(e).backgroundColor)")
        .await;
    assert_eq!(colours, json!(["rgb(21, 24, 30)", "rgb(30, 34, 42)", "rgb(30, 34, 42)"]));
    assert_eq!(b.script("return getComputedStyle(document.getElementById('response-1')).color").await, json!("rgb(227, 230, 236)"));
    b.screenshot("label-dark-1400").await;
    b.quit().await;
}

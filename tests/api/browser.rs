use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, PASSWORD};
use crate::webdriver::{Browser, ENTER};

const SCRIPT: &str = "<script>window.__xss = 1</script>";
const IMG: &str = "<img src=x onerror=\"window.__xss = 2\">";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labeller_ranks_with_the_keyboard_and_the_lead_downloads_the_export() {
    let app = spawn_app().await;
    app.project("web", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "web", Role::Lead).await;
    app.member("lab@example.org", "web", Role::Labeller).await;
    let item = json!({"id": "xss", "prompt": format!("Say hi {SCRIPT}"), "responses": [
        {"model": "a", "text": format!("first {SCRIPT}")},
        {"model": "b", "text": format!("second {IMG}")},
        {"model": "c", "text": "third\n```\nfn main() {}\n```"},
    ]});
    assert_eq!(lead.post_bytes("/api/v1/projects/web/items", format!("{item}\n").into_bytes()).await.status(), 200);

    let b = Browser::start().await;
    b.sign_in(&app.addr, "lab@example.org").await;
    b.goto(&format!("{}/projects/web/label", app.addr)).await;
    b.find("#response-3").await;

    // Untrusted text shows as text and runs nothing.
    let shown = b.text("#responses").await;
    assert!(shown.contains(SCRIPT) && shown.contains(IMG), "{shown}");
    assert!(b.text("#prompt").await.contains(SCRIPT));
    let probe = b.script("return [typeof window.__xss, document.querySelectorAll('#task img, #task script').length]").await;
    assert_eq!(probe, json!(["undefined", 0]));
    assert!(!shown.contains("Response a") && !b.source().await.contains("\"model\""), "model names are hidden");

    // Keyboard only: 3 best, then 1, then 2, Enter.
    b.keys(&["3", "1", "2"]).await;
    b.wait_for_text("#ranking", "Response 3").await;
    b.keys(&[ENTER]).await;
    b.wait_for_text("#status", "Nothing left").await;

    let (ranks, order): (Vec<i16>, Vec<i32>) =
        sqlx::query_as("SELECT j.ranks, t.display_order FROM judgements j JOIN tasks t ON t.id = j.task_id").fetch_one(&app.pool).await.unwrap();
    assert_eq!(ranks[order[2] as usize], 1, "the response shown third was ranked best");
    assert_eq!(ranks[order[0] as usize], 2);
    assert_eq!(ranks[order[1] as usize], 3);
    let stored: Vec<String> = sqlx::query_scalar("SELECT text FROM responses ORDER BY position").fetch_all(&app.pool).await.unwrap();
    let texts: Vec<&String> = order.iter().map(|&p| &stored[p as usize]).collect();

    // The lead signs in, takes an export snapshot and downloads it.
    b.click("header form button").await;
    b.find("#sign-in").await;
    b.type_into("#email", "lead@example.org").await;
    b.type_into("#password", PASSWORD).await;
    b.click("#sign-in").await;
    b.wait_for_text("#projects", "Test project").await;
    b.goto(&format!("{}/projects/web", app.addr)).await;
    assert_eq!(b.text("#judgements-total").await, "1");
    b.click("#tab-exports").await;
    b.click("#export-button").await;
    b.click("#export-list a.download").await;
    let file = wait_for_download(&b.download_dir).await;
    let rows: Vec<Value> = std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "C(3,2) comparisons");
    let best = texts[2];
    assert_eq!(rows.iter().filter(|r| r["chosen"] == best.as_str()).count(), 2, "the best response wins both of its pairs");
    assert!(rows.iter().any(|r| r["chosen"] == texts[0].as_str() && r["rejected"] == texts[1].as_str()));
    b.quit().await;
}

async fn wait_for_download(dir: &std::path::Path) -> std::path::PathBuf {
    for _ in 0..100 {
        let done: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "jsonl")).collect();
        if let Some(f) = done.into_iter().next() {
            return f;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no download arrived in {}", dir.display());
}

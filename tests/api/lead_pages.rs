//! The lead's project in tabs (each its own URL), the Exports tab's manifest, the Settings
//! form, and the item browser; over HTTP and in Chromium at 1400 and 420 px (screenshots in
//! target/screenshots/).

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, PASSWORD};
use crate::webdriver::Browser;

/// (tab id, path after /projects/{slug}, an id its content carries).
const TABS: [(&str, &str, &str); 7] = [
    ("overview", "", "items-total"),
    ("labellers", "/labellers", "member-list"),
    ("models", "/models", "leaderboard-table"),
    ("items", "/items", "item-list"),
    ("exports", "/exports", "export-form"),
    ("runs", "/runs", "start-run"),
    ("settings", "/settings", "settings-form"),
];

/// A ranking project `tabs` with a lead, a labeller and 6 judged items.
async fn judged_project(app: &TestApp) {
    app.lead_with_items("tabs", TaskKind::Ranking, 1, 6, 3).await;
    let labeller = app.member("lab@tabs.org", "tabs", Role::Labeller).await;
    let mut n = 0;
    while let Some(task) = labeller.next_task("tabs").await {
        assert_eq!(labeller.submit_in_order(&task, &format!("k{n}")).await.status(), 201);
        n += 1;
    }
    assert_eq!(n, 6);
}

#[tokio::test]
async fn each_tab_of_a_lead_s_project_is_its_own_url_and_labellers_get_none_of_them() {
    let app = spawn_app().await;
    judged_project(&app).await;
    let lead = app.login("lead@tabs.org", PASSWORD).await;
    for (id, path, content) in TABS {
        let res = lead.get(&format!("/projects/tabs{path}")).await;
        assert_eq!(res.status(), 200, "{path}");
        let html = res.text().await.unwrap();
        assert!(html.contains(&format!("id=\"{content}\"")), "{path} shows {content}");
        assert!(html.contains(&format!("id=\"tab-{id}\" href=\"/projects/tabs{path}\" class=\"active\" aria-current=\"page\"")), "{path}: {id} is active");
        assert_eq!(html.matches("aria-current=\"page\"").count(), 1, "{path}: one tab is active");
        for (other, other_path, _) in TABS {
            assert!(html.contains(&format!("id=\"tab-{other}\" href=\"/projects/tabs{other_path}\"")), "{path} links {other}");
        }
    }
    let overview = lead.get("/projects/tabs").await.text().await.unwrap();
    assert!(overview.contains("id=\"judgements-total\">6<"), "{overview}");
    let models = lead.get("/projects/tabs/models").await.text().await.unwrap();
    assert_eq!(models.matches("<table").count(), 1, "one table of models, not two");
    assert!(models.contains("<td>m0") && models.contains("<th>Wins</th>") && models.contains("<th>Elo</th>"));
    let labellers = lead.get("/projects/tabs/labellers").await.text().await.unwrap();
    assert!(labellers.contains("<td>lab@tabs.org</td><td>6</td>"), "{labellers}");

    let labeller = app.login("lab@tabs.org", PASSWORD).await;
    let own = labeller.get("/projects/tabs").await.text().await.unwrap();
    assert!(own.contains("id=\"start-labelling\"") && !own.contains("project-tabs") && !own.contains("judgements-total"));
    for (_, path, _) in TABS.iter().skip(1) {
        assert_eq!(labeller.get(&format!("/projects/tabs{path}")).await.status(), 403, "{path}");
    }
}

#[tokio::test]
async fn the_exports_tab_offers_every_option_and_the_manifest_beside_the_files() {
    let app = spawn_app().await;
    judged_project(&app).await;
    app.project("other", TaskKind::Ranking, 1).await;
    let stranger = app.member("lead@other.org", "other", Role::Lead).await;
    let lead = app.login("lead@tabs.org", PASSWORD).await;
    let page = lead.get("/projects/tabs/exports").await.text().await.unwrap();
    for field in [
        "name=\"format\"",
        "name=\"margin\"",
        "name=\"include_ties\"",
        "name=\"include_both_bad\"",
        "name=\"test_percent\"",
        "name=\"exclude_paused\"",
        "name=\"min_agreement\"",
        "name=\"aggregate\"",
    ] {
        assert!(page.contains(field), "{field}");
    }
    let fields = [("csrf", lead.csrf.as_str()), ("format", "preferences"), ("margin", "true"), ("test_percent", "50")];
    let res = lead.post_form("/projects/tabs/exports", &fields).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/projects/tabs/exports");
    let bad = lead.post_form("/projects/tabs/exports", &[("csrf", lead.csrf.as_str()), ("format", "preferences"), ("test_percent", "95")]).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("test_percent"));
    let page = lead.get("/projects/tabs/exports").await.text().await.unwrap();
    let id: String = sqlx::query_scalar("SELECT id::text FROM exports").fetch_one(&app.pool).await.unwrap();
    assert!(page.contains(&format!("/api/v1/exports/{id}/download?part=train")) && page.contains(&format!("/api/v1/exports/{id}/download?part=test")));
    assert!(page.contains(&format!("href=\"/api/v1/exports/{id}/manifest\"")) && page.contains("margin, test 50%"), "{page}");
    let res = lead.get(&format!("/api/v1/exports/{id}/manifest")).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-disposition"].to_str().unwrap().contains("manifest-"));
    let manifest: Value = res.json().await.unwrap();
    assert_eq!((manifest["export_id"].as_str(), manifest["format"].as_str()), (Some(id.as_str()), Some("preferences")));
    assert_eq!(manifest["options"]["test_percent"], 50);
    assert_eq!(manifest["options"]["margin"], true);
    assert_eq!(manifest["files"].as_array().unwrap().len(), 2);
    assert!(manifest["features"]["margin"].is_object(), "{manifest}");
    assert_eq!(stranger.get(&format!("/api/v1/exports/{id}/manifest")).await.status(), 404);
    assert_eq!(stranger.get("/api/v1/exports/not-an-id/manifest").await.status(), 404);

    // The quality options, as the API takes them.
    let fields =
        [("csrf", lead.csrf.as_str()), ("format", "comparisons"), ("exclude_paused", "true"), ("min_agreement", "0.25"), ("aggregate", "bradley_terry")];
    assert_eq!(lead.post_form("/projects/tabs/exports", &fields).await.status(), 303);
    let options: Value = sqlx::query_scalar("SELECT options FROM exports WHERE format = 'comparisons'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(
        (options["exclude_paused"].as_bool(), options["min_agreement"].as_f64(), options["aggregate"].as_str()),
        (Some(true), Some(0.25), Some("bradley_terry"))
    );
    let page = lead.get("/projects/tabs/exports").await.text().await.unwrap();
    assert!(page.contains("agreement ≥ 0.25") && page.contains("aggregated by Bradley–Terry"), "{page}");
    for (field, value) in [("aggregate", "median"), ("min_agreement", "most")] {
        let bad = lead.post_form("/projects/tabs/exports", &[("csrf", lead.csrf.as_str()), ("format", "comparisons"), (field, value)]).await;
        assert_eq!(bad.status(), 400);
        assert!(bad.text().await.unwrap().contains(field), "{field}");
    }
}

#[tokio::test]
async fn the_settings_tab_saves_and_shows_the_settings_again() {
    let app = spawn_app().await;
    judged_project(&app).await;
    let lead = app.login("lead@tabs.org", PASSWORD).await;
    let fields =
        [("csrf", lead.csrf.as_str()), ("name", "Renamed"), ("overlap", "2"), ("rating", "true"), ("flags", "too long\nrude"), ("guidelines", "Be *brief*.")];
    let res = lead.post_form("/projects/tabs/settings", &fields).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/projects/tabs/settings");
    let page = lead.get("/projects/tabs/settings").await.text().await.unwrap();
    assert!(page.contains("value=\"Renamed\"") && page.contains("value=\"2\"") && page.contains("too long\nrude"));
    assert!(page.contains("id=\"settings-rating\" value=\"true\" checked") && !page.contains("id=\"settings-ties\" value=\"true\" checked"));
    let bad = lead.post_form("/projects/tabs/settings", &[("csrf", lead.csrf.as_str()), ("name", "x"), ("overlap", "0")]).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("overlap"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tab_renders_in_chromium_wide_and_narrow() {
    let app = spawn_app().await;
    judged_project(&app).await;
    let b = Browser::start().await;
    b.sign_in(&app.addr, "lead@tabs.org").await;
    for width in [1400, 420] {
        b.resize(width, 1000).await;
        b.goto(&format!("{}/projects/tabs", app.addr)).await;
        for (id, path, content) in TABS {
            b.click(&format!("#tab-{id}")).await;
            b.find(&format!("#{content}")).await;
            let url = b.script("return location.pathname").await;
            assert_eq!(url, json!(format!("/projects/tabs{path}")));
            assert_eq!(b.script("return document.querySelector('nav.tabs a.active').id").await, json!(format!("tab-{id}")));
            // Nothing but the tab bar and wide tables (which scroll in their own box) is wider than the window.
            let overflow = b.script("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
            assert!(overflow.as_f64().unwrap() <= 1.0, "{path} at {width} px overflows by {overflow}");
            b.screenshot(&format!("lead-{id}-{width}")).await;
        }
        // The settings checkboxes sit beside their labels, on the same line.
        b.click("#tab-settings").await;
        let geometry = b
            .script(
                "const i = document.querySelector('#settings-ties'), t = i.nextElementSibling;
                 const a = i.getBoundingClientRect(), s = t.getBoundingClientRect();
                 return [a.right <= s.left, Math.abs((a.top + a.bottom) / 2 - (s.top + s.bottom) / 2) < 8, a.left < 60 + document.querySelector('#settings-form').getBoundingClientRect().left]",
            )
            .await;
        assert_eq!(geometry, json!([true, true, true]), "at {width} px");
    }
    b.quit().await;
}

#[tokio::test]
async fn members_are_added_from_the_labellers_tab() {
    let app = spawn_app().await;
    judged_project(&app).await;
    app.user("new@tabs.org", false).await;
    let lead = app.login("lead@tabs.org", PASSWORD).await;
    let res = lead.post_form("/projects/tabs/members", &[("csrf", lead.csrf.as_str()), ("email", "new@tabs.org"), ("role", "labeller")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/projects/tabs/labellers#members");
    let page = lead.get("/projects/tabs/labellers").await.text().await.unwrap();
    assert!(page.contains("<td>new@tabs.org</td><td>labeller</td>"), "{page}");
    let res = lead.post_form("/projects/tabs/members", &[("csrf", lead.csrf.as_str()), ("email", "nobody@tabs.org"), ("role", "labeller")]).await;
    assert_eq!(res.status(), 400, "an unknown account");
    let res = lead.post_form("/projects/tabs/members", &[("csrf", lead.csrf.as_str()), ("email", "new@tabs.org"), ("role", "boss")]).await;
    assert_eq!(res.status(), 400, "an unknown role");
}

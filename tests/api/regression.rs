//! Frozen regression sets: a lead freezes the test split of a preferences export (API and
//! page), one set is active, every rm run is measured on it by the real worker and trainer, and
//! the figures are plotted across runs (page) and listed (API) with drops flagged. Also: a PPO
//! run asking for a conservative ensemble reward over a single reward model is refused when it
//! is created.

use std::time::Duration;

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::forgetting::pairs;
use crate::helpers::{spawn_app, Api, PASSWORD};
use crate::runs::{log_of, run_json, scratch, tiny, wait_final, Worker};
use crate::webdriver::Browser;

async fn export(lead: &Api, slug: &str, body: Value) -> String {
    let res = lead.post(&format!("/api/v1/projects/{slug}/exports"), &body).await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

async fn error_of(res: reqwest::Response, status: u16) -> String {
    assert_eq!(res.status(), status);
    res.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rm_run_is_measured_on_the_active_regression_set_and_plotted_across_runs() {
    let app = spawn_app().await;
    app.project("reg", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "reg", Role::Lead).await;
    assert_eq!(lead.post_bytes("/api/v1/projects/reg/items", pairs("a", 40)).await.status(), 200);
    let held_out = export(&lead, "reg", json!({"format": "preferences", "test_percent": 30})).await;

    let res = lead.post("/api/v1/projects/reg/regression-sets", &json!({"name": "round 1", "export_id": held_out})).await;
    assert_eq!(res.status(), 201);
    let set: Value = res.json().await.unwrap();
    assert_eq!(set["active"], true, "the first set is the active one: {set}");
    let frozen = set["pairs"].as_i64().unwrap();
    assert!(frozen > 0 && frozen < 40, "the test split only: {set}");
    assert_eq!(set["prompts"].as_i64(), Some(frozen), "one pair per prompt here");
    // Frozen means frozen, down to the database.
    let changed = sqlx::query("UPDATE regression_pairs SET chosen = 'changed'").execute(&app.pool).await;
    assert!(changed.unwrap_err().to_string().contains("cannot change"));

    let store = scratch("store-reg");
    let _worker = Worker::start(&app, &store, "w-reg", 20.0);
    let mut runs: Vec<String> = Vec::new();
    for step in 0..2 {
        // The second run sweeps merges with the first at three α and keeps the best on the set.
        let config = match runs.first() {
            None => tiny(json!({"epochs": 1, "lr": 0.003})),
            Some(first) => tiny(json!({"epochs": 1, "lr": 0.001, "merge_with": format!("runs/{first}/attempt-1/model"), "merge_sweep": "0, 0.5, 1"})),
        };
        assert_eq!(config["merge_sweep"].is_null(), step == 0);
        let res = lead.post("/api/v1/projects/reg/runs", &json!({"kind": "rm", "config": config})).await;
        assert_eq!(res.status(), 201);
        let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let run = wait_final(&app, &lead, &id, Duration::from_secs(180)).await;
        assert_eq!(run["status"], "succeeded", "{}", log_of(&app, &id).await);
        let figure = &run["summary"]["regression"]["figures"]["rm_accuracy"];
        assert_eq!(figure["n"].as_i64(), Some(frozen), "{run}");
        assert!((0.0..=1.0).contains(&figure["value"].as_f64().unwrap()), "{run}");
        assert_eq!(run["summary"]["regression"]["set"], "round 1");
        assert!(log_of(&app, &id).await.contains("[worker] regression set \"round 1\": rm_accuracy"));
        if step == 1 {
            let sweep = &run["summary"]["merge_sweep"];
            assert_eq!(run["config"]["merge_sweep"], "0,0.5,1", "stored canonical");
            let results = sweep["results"].as_array().unwrap();
            assert_eq!(results.iter().map(|r| r["alpha"].as_f64().unwrap()).collect::<Vec<_>>(), [0.0, 0.5, 1.0], "{sweep}");
            assert_eq!(sweep["set"], "round 1");
            assert_eq!(sweep["pairs"].as_i64(), Some(frozen));
            // The rule: the highest accuracy, the smallest α on a tie.
            let best = results.iter().map(|r| r["accuracy"].as_f64().unwrap()).fold(f64::MIN, f64::max);
            let kept = results.iter().find(|r| r["accuracy"].as_f64().unwrap() == best).unwrap()["alpha"].clone();
            assert_eq!(sweep["best_alpha"], kept, "{sweep}");
            // Measured again after publishing (batched differently): the kept merge's figure.
            assert!((figure["value"].as_f64().unwrap() - best).abs() <= 1.0 / frozen as f64 + 1e-9, "the published model is the kept merge: {run}");
            let dir = std::path::PathBuf::from(run["model_dir"].as_str().unwrap());
            assert!(dir.join("unmerged.safetensors").exists(), "the trained weights are kept beside");
            let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
            assert_eq!(config["rewardlab"]["merge"]["alpha"], kept, "{config}");
            let session = app.login("lead@example.org", PASSWORD).await;
            let page = session.get(&format!("/projects/reg/runs/{id}")).await.text().await.unwrap();
            assert!(page.contains("<h2>Merge sweep</h2>") && page.matches("<tr class=\"kept\">").count() == 1, "{page}");
            assert!(page.contains("id=\"run-regression\"") && page.contains("<code>rm_accuracy</code>"), "{page}");
        }
        runs.push(id);
    }

    let report: Value = lead.get("/api/v1/projects/reg/regression").await.json().await.unwrap();
    assert_eq!(report["threshold"], 0.05);
    let series = &report["sets"][0]["series"];
    assert_eq!(series.as_array().unwrap().len(), 1, "{report}");
    assert_eq!(series[0]["metric"], "rm_accuracy");
    let points = series[0]["points"].as_array().unwrap();
    assert_eq!(points.iter().map(|p| p["run_id"].as_str().unwrap()).collect::<Vec<_>>(), runs, "creation order");
    assert!(points[0]["change"].is_null());
    let change = points[1]["value"].as_f64().unwrap() - points[0]["value"].as_f64().unwrap();
    assert!((points[1]["change"].as_f64().unwrap() - change).abs() < 1e-9);
    assert_eq!(points[1]["flagged"], -change > 0.05 + 1e-12, "{report}");
    // A threshold of 0 flags any drop; one that is not a share is refused, naming it.
    let strict: Value = lead.get("/api/v1/projects/reg/regression?threshold=0").await.json().await.unwrap();
    assert_eq!(strict["sets"][0]["series"][0]["points"][1]["flagged"], change < -1e-12);
    assert!(error_of(lead.get("/api/v1/projects/reg/regression?threshold=2").await, 400).await.starts_with("threshold: expected a number from 0 to 1"));
    assert!(error_of(lead.get("/api/v1/projects/reg/regression?threshold=abc").await, 400).await.starts_with("threshold:"));

    // The page plots the figure across the runs, with its table (in a real browser).
    let b = Browser::start().await;
    b.sign_in(&app.addr, "lead@example.org").await;
    b.goto(&format!("{}/projects/reg/runs/regression", app.addr)).await;
    let seen = b
        .script(
            "const f = document.querySelector('.regression-figure[data-metric=rm_accuracy]');
             return [f.querySelector('figcaption').textContent, f.querySelector('svg polyline').getAttribute('points').trim().split(' ').length,
                     Array.from(f.querySelectorAll('tbody tr')).map(r => r.textContent), document.querySelector('.regression-set h2').textContent]",
        )
        .await;
    assert_eq!(seen[0], "rm_accuracy");
    assert_eq!(seen[1], 2, "a point per run: {seen}");
    let rows = seen[2].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{seen}");
    assert!(rows[1].as_str().unwrap().contains(&runs[1][..8]), "{seen}");
    assert_eq!(seen[3], "round 1 (active)");
    b.quit().await;
    let session = app.login("lead@example.org", PASSWORD).await;
    assert_eq!(session.get("/projects/reg/runs/regression?threshold=-1").await.status(), 400);
    // The runs page leads there.
    let list = session.get("/projects/reg/runs").await.text().await.unwrap();
    assert!(list.contains("href=\"/projects/reg/runs/regression\""));
}

#[tokio::test]
async fn a_lead_freezes_and_activates_regression_sets_and_bad_requests_are_refused_naming_the_field() {
    let app = spawn_app().await;
    app.project("sets", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "sets", Role::Lead).await;
    let labeller = app.member("lab@example.org", "sets", Role::Labeller).await;
    assert_eq!(lead.post_bytes("/api/v1/projects/sets/items", pairs("s", 20)).await.status(), 200);
    let prefs = export(&lead, "sets", json!({"format": "preferences", "test_percent": 50})).await;
    let comparisons = export(&lead, "sets", json!({"format": "comparisons"})).await;
    let no_test = export(&lead, "sets", json!({"format": "preferences", "test_percent": 0})).await;

    let freeze = |body: Value| {
        let lead = lead.clone();
        async move { lead.post("/api/v1/projects/sets/regression-sets", &body).await }
    };
    for (body, starts) in [
        (json!({"name": " ", "export_id": prefs}), "name: expected 1 to 80 characters"),
        (json!({"name": "x".repeat(81), "export_id": prefs}), "name:"),
        (json!({"name": "a", "export_id": "not-an-id"}), "export_id: expected the id of one of this project's preferences exports"),
        (json!({"name": "a", "export_id": uuid::Uuid::new_v4()}), "export_id: expected the id of one of this project's"),
        (json!({"name": "a", "export_id": comparisons}), "export_id: expected a preferences export"),
        (json!({"name": "a", "export_id": no_test}), "export_id: its test split is empty"),
    ] {
        let m = error_of(freeze(body.clone()).await, 400).await;
        assert!(m.starts_with(starts), "{body}: {m}");
    }
    assert_eq!(freeze(json!({"name": "a"})).await.status(), 400, "export_id is required");
    assert_eq!(labeller.post("/api/v1/projects/sets/regression-sets", &json!({"name": "a", "export_id": prefs})).await.status(), 403);
    assert_eq!(labeller.get("/api/v1/projects/sets/regression").await.status(), 403);
    assert_eq!(labeller.get("/api/v1/projects/sets/regression-sets").await.status(), 403);

    // A merge sweep is measured on the active set: refused until there is one, and its α checked.
    let sweep = |extra: Value| {
        let mut config = json!({"merge_with": "shared/gpt2", "merge_sweep": "0,0.5,1"});
        config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"kind": "rm", "config": config})
    };
    for (body, starts) in [
        (sweep(json!({})), "config.merge_sweep: each α is measured on the project's active regression set"),
        (sweep(json!({"merge_sweep": "0.5"})), "config.merge_sweep: expected 2 to 11 distinct comma-separated α from 0 to 1"),
        (sweep(json!({"merge_sweep": "0,1.5"})), "config.merge_sweep: expected 2 to 11"),
        (sweep(json!({"merge_sweep": "0,0"})), "config.merge_sweep: expected 2 to 11"),
        (sweep(json!({"merge_sweep": "a,b"})), "config.merge_sweep: expected 2 to 11"),
        (sweep(json!({"merge_alpha": 0.5})), "config.merge_sweep: not with merge_alpha"),
        (sweep(json!({"merge_with": null})), "config.merge_with: expected the earlier model to sweep against"),
    ] {
        let m = error_of(lead.post("/api/v1/projects/sets/runs", &body).await, 400).await;
        assert!(m.starts_with(starts), "{body}: {m}");
    }

    let first: Value = freeze(json!({"name": "first", "export_id": prefs})).await.json().await.unwrap();
    assert_eq!(lead.post("/api/v1/projects/sets/runs", &sweep(json!({"merge_sweep": [0, 0.25, 1]}))).await.status(), 201, "with a set, queued");
    assert_eq!(first["active"], true);
    assert!(error_of(freeze(json!({"name": "first", "export_id": prefs})).await, 409).await.contains("already has a regression set called \"first\""));

    // The page freezes another (CSRF checked), which stays inactive until asked.
    let session = app.login("lead@example.org", PASSWORD).await;
    let page = session.get("/projects/sets/runs/regression").await.text().await.unwrap();
    assert!(page.contains(&format!("<option value=\"{prefs}\">")) && !page.contains(&format!("<option value=\"{no_test}\">")), "{page}");
    let form = [("csrf", session.csrf.as_str()), ("name", "second"), ("export_id", prefs.as_str())];
    assert_eq!(session.post_form("/projects/sets/runs/regression", &[("csrf", "forged"), ("name", "x"), ("export_id", prefs.as_str())]).await.status(), 403);
    let res = session.post_form("/projects/sets/runs/regression", &form).await;
    assert_eq!(res.status(), 303);
    let bad =
        session.post_form("/projects/sets/runs/regression", &[("csrf", session.csrf.as_str()), ("name", "third"), ("export_id", comparisons.as_str())]).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("export_id: expected a preferences export"));
    let sets: Value = lead.get("/api/v1/projects/sets/regression-sets").await.json().await.unwrap();
    let sets = sets["sets"].as_array().unwrap().clone();
    assert_eq!(sets.len(), 2);
    let second = sets.iter().find(|s| s["name"] == "second").unwrap();
    assert_eq!((second["active"].as_bool(), second["pairs"].as_i64()), (Some(false), first["pairs"].as_i64()), "{sets:?}");

    // Activating one deactivates the other: by the page, then by the API.
    let id = second["id"].as_str().unwrap();
    assert_eq!(session.post_form(&format!("/projects/sets/runs/regression/{id}/activate"), &[("csrf", session.csrf.as_str())]).await.status(), 303);
    let page = session.get("/projects/sets/runs/regression").await.text().await.unwrap();
    assert!(page.contains("second (active)") && !page.contains("first (active)"), "{page}");
    let res = lead.post(&format!("/api/v1/projects/sets/regression-sets/{}/activate", first["id"].as_str().unwrap()), &json!({})).await;
    assert_eq!(res.status(), 200);
    let sets: Value = res.json().await.unwrap();
    let active: Vec<&str> = sets["sets"].as_array().unwrap().iter().filter(|s| s["active"] == true).map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(active, ["first"]);
    assert_eq!(lead.post(&format!("/api/v1/projects/sets/regression-sets/{}/activate", uuid::Uuid::new_v4()), &json!({})).await.status(), 404);
    assert_eq!(lead.post("/api/v1/projects/sets/regression-sets/nope/activate", &json!({})).await.status(), 404);

    // No run measured yet: the report lists the sets without figures.
    let report: Value = lead.get("/api/v1/projects/sets/regression").await.json().await.unwrap();
    assert_eq!(report["sets"].as_array().unwrap().len(), 2);
    assert!(report["sets"].as_array().unwrap().iter().all(|s| s["series"].as_array().unwrap().is_empty()));
    assert!(page.contains("No run has been measured on this set yet."));
}

#[tokio::test]
async fn a_ppo_run_asking_for_a_conservative_ensemble_over_a_single_reward_model_is_refused_at_creation() {
    let app = spawn_app().await;
    app.project("ens", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "ens", Role::Lead).await;
    assert_eq!(lead.post_bytes("/api/v1/projects/ens/items", pairs("e", 10)).await.status(), 200);
    let start = |body: Value| {
        let lead = lead.clone();
        async move { lead.post("/api/v1/projects/ens/runs", &body).await }
    };
    let single = start(json!({"kind": "rm"})).await.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let policy = json!({"policy_path": "shared/gpt2"});
    for how in ["min", "mean-minus-std"] {
        // The project's newest reward model, and the one named, are single models.
        let m = error_of(start(json!({"kind": "ppo", "config": {"reward_ensemble": how}, "input": policy})).await, 400).await;
        assert!(m.starts_with(&format!("config.reward_ensemble: {how} needs an ensemble reward model")), "{m}");
        assert!(m.contains("the project's newest rm run"), "{m}");
        let input = json!({"policy_path": "shared/gpt2", "reward_model_run": single});
        let m = error_of(start(json!({"kind": "ppo", "config": {"reward_ensemble": how}, "input": input})).await, 400).await;
        assert!(m.contains(&format!("rm run {}", &single.replace('-', "")[..8])), "{m}");
    }
    // The mean of a single model is its reward.
    assert_eq!(start(json!({"kind": "ppo", "config": {"reward_ensemble": "mean"}, "input": policy})).await.status(), 201);
    // An ensemble reward model makes it acceptable, named or newest.
    let ensemble = start(json!({"kind": "rm", "config": {"ensemble": 3}})).await.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(start(json!({"kind": "ppo", "config": {"reward_ensemble": "min"}, "input": policy})).await.status(), 201);
    let input = json!({"policy_path": "shared/gpt2", "reward_model_run": ensemble});
    assert_eq!(start(json!({"kind": "ppo", "config": {"reward_ensemble": "mean-minus-std"}, "input": input})).await.status(), 201);
    // A chain's own rm step decides for its ppo step.
    let chain = json!({"min_new_comparisons": 5, "chain": [{"kind": "rm"}, {"kind": "ppo", "config": {"reward_ensemble": "min"}, "input": policy}]});
    let m = error_of(lead.post("/api/v1/projects/ens/schedules", &chain).await, 400).await;
    assert!(m.starts_with("chain[1].config.reward_ensemble: min needs an ensemble reward model") && m.contains("the chain's rm step"), "{m}");
    let chain = json!({"min_new_comparisons": 5, "chain": [{"kind": "rm", "config": {"ensemble": 2}}, {"kind": "ppo", "config": {"reward_ensemble": "min"}, "input": policy}]});
    assert_eq!(lead.post("/api/v1/projects/ens/schedules", &chain).await.status(), 201);
    // A merge would reach an ensemble's first member only.
    let m = error_of(start(json!({"kind": "rm", "config": {"ensemble": 3, "merge_with": "shared/gpt2", "merge_sweep": "0,0.5"}})).await, 400).await;
    assert!(m.starts_with("config.merge_with: not with ensemble above 1"), "{m}");
    assert!(run_json(&lead, &single).await["status"] == "queued", "nothing ran");
}

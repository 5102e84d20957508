//! Runs from a form: typed fields with the trainer's defaults, the runs list grouped by chain
//! with each failed run's error, and a run's progress, time left and folded charts; over HTTP
//! and in Chromium at 1400 and 420 px (screenshots in target/screenshots/).

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, PASSWORD};
use crate::webdriver::Browser;

/// A ranking project `runs` with a lead and 4 judged items.
async fn project(app: &TestApp) {
    app.lead_with_items("runs", TaskKind::Ranking, 2, 4, 2).await;
    let labeller = app.member("lab@runs.org", "runs", Role::Labeller).await;
    let mut n = 0;
    while let Some(task) = labeller.next_task("runs").await {
        assert_eq!(labeller.submit_in_order(&task, &format!("k{n}")).await.status(), 201);
        n += 1;
    }
}

async fn config_of(app: &TestApp, run: &str) -> Value {
    sqlx::query_scalar("SELECT config FROM runs WHERE id = $1::uuid").bind(run).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn a_run_starts_from_typed_fields_that_show_the_trainer_s_defaults() {
    let app = spawn_app().await;
    project(&app).await;
    let lead = app.login("lead@runs.org", PASSWORD).await;
    let page = lead.get("/projects/runs/runs").await.text().await.unwrap();
    assert!(page.contains("id=\"kind-rm\" href=\"/projects/runs/runs?kind=rm#start-run\" class=\"active\""), "rm is the default for rankings");
    assert!(page.contains("name=\"c.epochs\" type=\"number\" step=\"1\" min=\"1\" max=\"10000\" placeholder=\"1\""), "{page}");
    assert!(page.contains("name=\"c.schedule\"><option value=\"\">default (cosine)</option>"));
    assert!(page.contains("name=\"c.lr\" type=\"number\" step=\"any\" max=\"1\" placeholder=\"unset\""));
    assert!(page.contains("passes over the training split; a whole number from 1 to 10000; default 1"));
    let ppo = lead.get("/projects/runs/runs?kind=ppo").await.text().await.unwrap();
    assert!(ppo.contains("name=\"c.kl_coef\"") && ppo.contains("placeholder=\"0.05\"") && !ppo.contains("name=\"c.epochs\""));
    assert!(ppo.contains("name=\"i.policy_run\"") && ppo.contains("name=\"i.reward_model_run\""));
    assert_eq!(lead.get("/projects/runs/runs?kind=rn").await.status(), 400);

    let csrf = lead.csrf.as_str();
    let form = [("csrf", csrf), ("kind", "rm"), ("c.epochs", "2"), ("c.schedule", "linear"), ("c.lr", ""), ("i.export_id", ""), ("config", ""), ("input", "")];
    let res = lead.post_form("/projects/runs/runs", &form).await;
    assert_eq!(res.status(), 303);
    let run = res.headers()["location"].to_str().unwrap().rsplit('/').next().unwrap().to_string();
    let config = config_of(&app, &run).await;
    assert_eq!((config["epochs"].clone(), config["schedule"].clone(), config["seed"].clone()), (json!(2), json!("linear"), json!(42)), "{config}");
    assert!(config["lr"].is_null());

    // The advanced JSON overrides a field.
    let form = [("csrf", csrf), ("kind", "sft"), ("c.epochs", "2"), ("config", "{\"epochs\": 3}")];
    let res = lead.post_form("/projects/runs/runs", &form).await;
    assert_eq!(res.status(), 303);
    let run = res.headers()["location"].to_str().unwrap().rsplit('/').next().unwrap().to_string();
    assert_eq!(config_of(&app, &run).await["epochs"], 3);

    for (field, value, message) in [
        ("c.epochs", "two", "config.epochs: expected a whole number from 1 to 10000, got &#34;two&#34;"),
        ("c.epochs", "0", "config.epochs: expected a whole number from 1 to 10000, got 0"),
        ("c.warmup_ratio", "1.5", "config.warmup_ratio: expected a number from 0 to 1"),
        ("c.iterations", "3", "config.iterations: not a parameter of rm runs"),
        ("i.export_id", "nope", "input.export_id: expected an id"),
    ] {
        let res = lead.post_form("/projects/runs/runs", &[("csrf", csrf), ("kind", "rm"), (field, value)]).await;
        assert_eq!(res.status(), 400, "{field}={value}");
        let body = res.text().await.unwrap();
        assert!(body.contains(message), "{field}={value}: {body}");
    }
    let res = lead.post_form("/projects/runs/runs", &[("csrf", "stale"), ("kind", "rm")]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 2);

    // A schedule's chain is chosen as kinds in order, without JSON.
    assert!(page.contains("name=\"step1\"") && page.contains("name=\"step4\""));
    let form = [("csrf", csrf), ("min_new_comparisons", "100"), ("step1", "rm"), ("step2", ""), ("step3", "sft"), ("step4", ""), ("chain", "")];
    assert_eq!(lead.post_form("/projects/runs/schedules", &form).await.status(), 303);
    let chain: Value = sqlx::query_scalar("SELECT chain FROM schedules").fetch_one(&app.pool).await.unwrap();
    assert_eq!(chain.as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["rm", "sft"]);
    let res = lead.post_form("/projects/runs/schedules", &[("csrf", csrf), ("min_new_comparisons", "100"), ("step1", "")]).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("chain: expected 1 to 8 runs"));
    let res = lead.post_form("/projects/runs/schedules", &[("csrf", csrf), ("min_new_comparisons", "100"), ("step1", "rn")]).await;
    assert_eq!(res.status(), 400);
    assert_eq!(app.count("SELECT count(*) FROM schedules").await, 1);
}

/// Metric lines of a running run: `steps` of `planned`, one a second, ending now.
async fn running_with_metrics(app: &TestApp, run: &str, steps: i64, planned: i64) {
    sqlx::query("UPDATE runs SET status = 'running', started_at = now() - interval '1 minute', fence = 1 WHERE id = $1::uuid")
        .bind(run)
        .execute(&app.pool)
        .await
        .unwrap();
    for s in 1..=steps {
        let data = json!({"event": "step", "step": s, "epoch": 0, "loss": 1.0 / s as f64, "accuracy": 0.5, "lr": 1e-3, "grad_norm": 1.0,
            "tokens_per_s": 100.0, "examples": 4, "elapsed_s": s as f64, "rss_mb": 50.0, "total_steps": planned});
        sqlx::query("INSERT INTO run_metrics (run_id, fence, event, step, data, at) VALUES ($1::uuid, 1, 'step', $2, $3, now() - make_interval(secs => $4))")
            .bind(run)
            .bind(s)
            .bind(&data)
            .bind((steps - s) as f64)
            .execute(&app.pool)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_grouped_by_chain_and_a_run_shows_its_progress_and_time_left() {
    let app = spawn_app().await;
    project(&app).await;
    let lead_api = app.member("api@runs.org", "runs", Role::Lead).await;
    let res = lead_api.post("/api/v1/projects/runs/schedules", &json!({"min_new_comparisons": 1, "chain": [{"kind": "rm"}, {"kind": "sft"}]})).await;
    assert_eq!(res.status(), 201);
    // The labeller's comparisons count from the schedule's creation: two more arrive.
    let labeller = app.member("lab2@runs.org", "runs", Role::Labeller).await;
    for n in 0..2 {
        let task = labeller.next_task("runs").await.unwrap();
        assert_eq!(labeller.submit_in_order(&task, &format!("m{n}")).await.status(), 201);
    }
    assert_eq!(rewardlab::jobs::schedule::tick(&app.pool).await.unwrap().len(), 1);
    let alone: Value = lead_api.post("/api/v1/projects/runs/runs", &json!({"kind": "sft"})).await.json().await.unwrap();
    let alone = alone["id"].as_str().unwrap().to_string();
    sqlx::query("UPDATE runs SET status = 'failed', finished_at = now(), error = 'the export is empty: nothing to train on\nmore detail' WHERE id = $1::uuid")
        .bind(&alone)
        .execute(&app.pool)
        .await
        .unwrap();
    let rm: String = sqlx::query_scalar("SELECT id::text FROM runs WHERE kind = 'rm'").fetch_one(&app.pool).await.unwrap();
    running_with_metrics(&app, &rm, 20, 80).await;

    let lead = app.login("lead@runs.org", PASSWORD).await;
    let page = lead.get("/projects/runs/runs").await.text().await.unwrap();
    let heading = page.find("Schedule firing").expect("the firing's heading");
    assert!(page[heading..].contains("≥ 1 new comparisons): rm → sft"), "{page}");
    let (rm_at, sft_at) = (page.find(&rm.replace('-', "")[..8]).unwrap(), page[heading..].find("in-chain").unwrap() + heading);
    assert!(heading < rm_at && rm_at < sft_at, "the chain's runs follow its heading, oldest first");
    assert!(page.contains("class=\"run-error\">the export is empty: nothing to train on</td>"), "the failed run's error, first line");

    let run_page = lead.get(&format!("/projects/runs/runs/{rm}")).await.text().await.unwrap();
    assert!(run_page.contains("id=\"run-progress-bar\" max=\"1000\" value=\"250\""), "{run_page}");
    assert!(run_page.contains("20 of 80 steps (25%)") && run_page.contains("about 1 min left"), "60 steps at one a second");
    let charts = &run_page[run_page.find("id=\"charts\"").unwrap()..run_page.find("id=\"more-charts\"").unwrap()];
    assert!(charts.contains("aria-label=\"loss\"") && charts.contains("aria-label=\"accuracy\"") && !charts.contains("aria-label=\"lr\""));
    let more = &run_page[run_page.find("id=\"more-charts\"").unwrap()..];
    assert!(more.contains("aria-label=\"lr\"") && more.contains("aria-label=\"rss_mb\"") && more.contains("aria-label=\"elapsed_s\""));
    let live = lead.get(&format!("/projects/runs/runs/{rm}/live")).await.text().await.unwrap();
    assert!(live.contains("20 of 80 steps"));

    // In the browser, wide and narrow: the list, the form, a run's page with its progress.
    let b = Browser::start().await;
    b.sign_in(&app.addr, "lead@runs.org").await;
    for width in [1400, 420] {
        b.resize(width, 1000).await;
        b.goto(&format!("{}/projects/runs/runs", app.addr)).await;
        b.wait_for_text("#runs", "Schedule firing").await;
        let overflow = b.script("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        assert!(overflow.as_f64().unwrap() <= 1.0, "the runs tab at {width} px overflows by {overflow}");
        b.screenshot(&format!("runs-list-{width}")).await;
        b.click("#kind-sft").await;
        // Polled by script: the rm form is replaced by the sft one.
        let mut kind = Value::Null;
        for _ in 0..100 {
            kind = b.script("const k = document.querySelector('#run-kind'); return k ? k.value : ''").await;
            if kind == json!("sft") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(kind, json!("sft"));
        b.type_into("#param-epochs", "4").await;
        b.script("document.querySelector('#param-schedule').value = 'constant'").await;
        b.script("document.querySelector('#start-run').scrollIntoView()").await;
        b.screenshot(&format!("runs-form-{width}")).await;
        b.click("#start-run-button").await;
        b.wait_for_text("#run-status", "queued").await;
        let config = b.text("#run-config").await;
        assert!(config.contains("\"epochs\": 4") && config.contains("\"schedule\": \"constant\""), "{config}");
        b.goto(&format!("{}/projects/runs/runs/{rm}", app.addr)).await;
        b.wait_for_text("#run-progress-text", "20 of 80 steps").await;
        assert_eq!(b.script("return document.querySelector('#more-charts').open").await, json!(false), "the rest of the charts are folded");
        let overflow = b.script("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        assert!(overflow.as_f64().unwrap() <= 1.0, "a run's page at {width} px overflows by {overflow}");
        b.screenshot(&format!("run-progress-{width}")).await;
    }
    b.quit().await;
}

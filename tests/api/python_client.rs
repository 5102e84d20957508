//! The Python client (clients/python) against a real server and a real worker: its pytest
//! suite imports items, labels them, loads the export into `datasets`, trains a tiny reward
//! model, follows its metrics and downloads it; receives a real webhook delivery and verifies
//! its signature; makes and revokes a token.

use std::path::PathBuf;
use std::process::Command;

use rewardlab::settings::WebOptions;

use crate::helpers::spawn_app_with;
use crate::openapi::python;
use crate::runs::{scratch, tiny, Worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_clients_suite_passes_against_a_real_server() {
    let Some(python) = python() else { return };
    // Webhooks to the suite's receiver on 127.0.0.1, delivered in the background as `serve` does.
    let app = spawn_app_with(WebOptions { webhooks: crate::webhooks::fast(true), ..WebOptions::default() }).await;
    tokio::spawn(rewardlab::jobs::webhooks::run(app.pool.clone(), app.state.quality.clone(), crate::webhooks::fast(true)));
    let admin = app.user("admin@py.org", true).await;
    let token = app.token(admin).await;
    let store = scratch("python-client");
    let _worker = Worker::start(&app, &store, "py-worker", 10.0);
    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let config = tiny(serde_json::json!({"epochs": 1, "batch_size": 4}));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
            .current_dir(&client)
            // The source under test first, whatever version the environment has installed.
            .env("PYTHONPATH", client.join("src"))
            .env("REWARDLAB_URL", &app.addr)
            .env("REWARDLAB_TOKEN", &token)
            .env("REWARDLAB_RUN_CONFIG", config.to_string())
            .env("HF_DATASETS_OFFLINE", "1")
            .env("HF_HOME", store.join("hf"))
            .output()
            .expect("pytest runs")
    })
    .await
    .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client's tests failed:\n{text}");
    assert!(text.contains(" passed") && !text.contains("skipped"), "{text}");
}

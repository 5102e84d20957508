//! A new team's first steps: the login page says how the first account is made, and `serve
//! --help` says how to serve the local network.

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_login_page_says_how_the_first_account_is_made_until_one_exists() {
    let app = spawn_app().await;
    let page = reqwest::get(format!("{}/login", app.addr)).await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"first-run\"") && page.contains("rewardlab user add --email you@example.org --admin"), "{page}");
    app.user("first@example.org", true).await;
    let page = reqwest::get(format!("{}/login", app.addr)).await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"sign-in\"") && !page.contains("first-run"), "no note once an account exists");
}

#[test]
fn serve_help_says_how_to_serve_the_local_network() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rewardlab")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("0.0.0.0:8080 serves the local network"), "{help}");
}

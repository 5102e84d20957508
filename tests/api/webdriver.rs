//! A small W3C WebDriver client over HTTP, enough to drive headless Chromium through
//! chromedriver: navigate, find, click, type, press keys, read text, run a script, size the
//! window and take screenshots. Screenshots go to `$REWARDLAB_SCREENSHOTS` (default
//! `target/screenshots/`); a test that panics while its browser is open leaves one there too,
//! named after the test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    base: String,
    driver: Child,
    profile: std::path::PathBuf,
    pub download_dir: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.screenshot_on_failure();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_dir_all(&self.download_dir);
    }
}

/// Where screenshots are written: `$REWARDLAB_SCREENSHOTS`, else `target/screenshots/`.
pub fn screenshot_dir() -> std::path::PathBuf {
    std::env::var_os("REWARDLAB_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/tmp has a parent").join("screenshots"))
}

fn write_screenshot(name: &str, value: &Value) -> Option<std::path::PathBuf> {
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(value.as_str()?).ok()?;
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).ok()?;
    let file = dir.join(format!("{}.png", name.replace("::", "-")));
    std::fs::write(&file, png).ok()?;
    Some(file)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        Self::start_with(&[]).await
    }

    /// Starts one with extra Chromium flags (e.g. `--host-resolver-rules`).
    pub async fn start_with(extra_args: &[&str]) -> Browser {
        let port = free_port();
        let driver = Command::new(std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (.ci/run installs Debian's chromium-driver)");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let download_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("downloads-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&download_dir).unwrap();
        let profile = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chrome-{}", uuid::Uuid::new_v4().simple()));
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
        ]
        .iter()
        .chain(extra_args)
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": args,
            "prefs": {"download.default_directory": download_dir.display().to_string(), "download.prompt_for_download": false}
        }}}});
        let mut browser = Browser { http, base, driver, profile, download_dir };
        let res = browser.http.post(format!("{}/session", browser.base)).json(&caps).send().await.unwrap();
        let body: Value = res.json().await.unwrap();
        let id = body["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {body}")).to_string();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(err) = res["value"].get("error") {
            panic!("webdriver {path}: {err} {}", res["value"]["message"]);
        }
        res["value"].clone()
    }

    /// Ends the browser session (closing Chromium) before chromedriver goes.
    /// Signs in through the login page at `addr` and waits for the project list.
    pub async fn sign_in(&self, addr: &str, email: &str) {
        self.goto(&format!("{addr}/login")).await;
        self.type_into("#email", email).await;
        self.type_into("#password", crate::helpers::PASSWORD).await;
        self.click("#sign-in").await;
        self.wait_for_text("#projects", "Test project").await;
    }

    /// Sizes the window so that the page's viewport is `width` × `height` CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
        let inner = self.script("return [window.innerWidth, window.innerHeight]").await;
        let (w, h) = (inner[0].as_u64().unwrap_or(0) as u32, inner[1].as_u64().unwrap_or(0) as u32);
        if (w, h) != (width, height) {
            let (outer_w, outer_h) = (2 * width - w, 2 * height - h);
            self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": outer_w, "height": outer_h}))).await;
        }
    }

    /// Writes a PNG of the viewport as `<screenshot_dir>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let shot = self.call(reqwest::Method::GET, "/screenshot", None).await;
        write_screenshot(name, &shot).unwrap_or_else(|| panic!("could not write screenshot {name} to {}", screenshot_dir().display()))
    }

    /// From `Drop` while a test panics: a screenshot named after the test, on a thread and
    /// runtime of its own (the test's runtime is unwinding).
    fn screenshot_on_failure(&self) {
        let name = format!("failed-{}", std::thread::current().name().unwrap_or("test"));
        let url = format!("{}/screenshot", self.base);
        let taken = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            let shot: Value = rt.block_on(async { reqwest::Client::new().get(url).timeout(Duration::from_secs(10)).send().await.ok()?.json().await.ok() })?;
            write_screenshot(&name, &shot["value"])
        })
        .join();
        if let Ok(Some(file)) = taken {
            eprintln!("screenshot of the failure: {}", file.display());
        }
    }

    /// Presses `key` while `modifier` (e.g. [`CONTROL`]) is held.
    pub async fn chord(&self, modifier: &str, key: &str) {
        let actions = json!([{"type": "keyDown", "value": modifier}, {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}, {"type": "keyUp", "value": modifier}]);
        self.call(reqwest::Method::POST, "/actions", Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}))).await;
    }

    /// The first element matching `css`: its box in the viewport (left, top, width, height).
    pub async fn rect(&self, css: &str) -> (f64, f64, f64, f64) {
        self.find(css).await;
        let r =
            self.script(&format!("const r = document.querySelector({}).getBoundingClientRect(); return [r.left, r.top, r.width, r.height]", json!(css))).await;
        let n = |i: usize| r[i].as_f64().unwrap();
        (n(0), n(1), n(2), n(3))
    }

    /// Whether the first element matching `css` is shown and lies wholly inside the viewport.
    pub async fn in_viewport(&self, css: &str) -> bool {
        self.find(css).await;
        let script = format!(
            "const e = document.querySelector({}); const r = e.getBoundingClientRect(); \
             return e.offsetParent !== null && r.width > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth",
            json!(css)
        );
        self.script(&script).await == json!(true)
    }

    /// Waits up to 10 s until `script` returns true.
    pub async fn wait_until(&self, script: &str) {
        for _ in 0..100 {
            if self.script(script).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never true: {script}");
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    /// Waits up to 10 s for an element matching `css`.
    pub async fn find(&self, css: &str) -> String {
        for _ in 0..100 {
            let res: Value = self
                .http
                .post(format!("{}/element", self.base))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(id) = res["value"][ELEMENT].as_str() {
                return id.to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no element matches {css}; page: {}", self.source().await);
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({"text": text}))).await;
    }

    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None).await.as_str().unwrap().to_string()
    }

    /// Presses keys on the keyboard, one after another, wherever the focus is.
    pub async fn keys(&self, keys: &[&str]) {
        let actions: Vec<Value> = keys.iter().flat_map(|k| [json!({"type": "keyDown", "value": k}), json!({"type": "keyUp", "value": k})]).collect();
        self.call(reqwest::Method::POST, "/actions", Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}))).await;
    }

    pub async fn script(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None).await.as_str().unwrap_or_default().to_string()
    }

    /// Waits up to 10 s until `css`'s text contains `needle`.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            last = self.text(css).await;
            if last.contains(needle) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never showed {needle:?}; it shows {last:?}");
    }
}

pub const ENTER: &str = "\u{E007}";
pub const CONTROL: &str = "\u{E009}";
pub const ESCAPE: &str = "\u{E00C}";
pub const BACKSPACE: &str = "\u{E003}";

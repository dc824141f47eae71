//! A minimal WebDriver client for browser tests: starts Debian's `chromedriver` on a free port
//! with headless Chromium, and drives it over JSON/HTTP (new session, navigate, find by CSS,
//! click, type, read text, run scripts, screenshots). Stopped when dropped: chromedriver runs in
//! its own process group, which is killed with the browser in it, and the profile is removed.
//!
//! A missing `chromedriver` or `chromium` is an error saying how to install them (tests never
//! skip).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long `wait_*` look before failing.
pub const WAIT: Duration = Duration::from_secs(15);

/// A found element (its WebDriver reference).
#[derive(Debug, Clone)]
pub struct Element(String);

/// A headless Chromium driven through chromedriver.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    client: reqwest::Client,
    profile: tempfile::TempDir,
}

fn find_binary(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

impl Browser {
    /// Starts chromedriver and opens a browser session (1366×900, headless).
    pub async fn start() -> Browser {
        let driver_bin = find_binary("CHROMEDRIVER", &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
            .expect("chromedriver not found: install Debian's chromium and chromium-driver (scripts/test.sh does) or set CHROMEDRIVER");
        let chromium = find_binary("CHROMIUM", &["/usr/bin/chromium", "/usr/lib/chromium/chromium"])
            .expect("chromium not found: install Debian's chromium (scripts/test.sh does) or set CHROMIUM");
        let port = crate::free_port();
        let mut command = Command::new(&driver_bin);
        command.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().unwrap_or_else(|e| panic!("start {}: {e}", driver_bin.display()));
        let profile = tempfile::tempdir().expect("a profile directory");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client");
        let mut browser = Browser { driver, base: format!("http://127.0.0.1:{port}"), client, profile };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser.client.get(format!("{}/status", browser.base)).send().await;
            if let Ok(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == json!(true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1366,900".into(),
            "--no-first-run".into(),
            format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let session = browser.raw("POST", "/session", Some(caps)).await;
        let id = session["sessionId"].as_str().expect("a session id").to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.client.get(&url),
            "DELETE" => self.client.delete(&url),
            _ => self.client.post(&url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = req.send().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON: {e}"));
        assert!(status.is_success(), "WebDriver {method} {path}: {status} {}", v["value"]);
        v.get("value").cloned().unwrap_or(Value::Null)
    }

    /// A WebDriver command on the session; panics on an error answer.
    pub async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.raw(method, path, body).await
    }

    /// Opens `url` and waits for the page load.
    pub async fn goto(&self, url: &str) {
        self.raw("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The current address.
    pub async fn url(&self) -> String {
        self.raw("GET", "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// The element matching `css` now, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let resp = self
            .client
            .post(format!("{}/element", self.base))
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .await
            .ok()?;
        let v: Value = resp.json().await.ok()?;
        v["value"][ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))
    }

    /// Waits up to [`WAIT`] for an element matching `css`.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            assert!(Instant::now() < deadline, "no element matches {css:?} at {}", self.url().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to [`WAIT`] for the text of the element matching `css` to contain `needle`;
    /// answers the text. The element is looked up afresh each time (pages re-render).
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;";
        loop {
            let text = self.execute(script, json!([css])).await;
            if let Some(text) = text.as_str()
                && text.contains(needle)
            {
                return text.to_owned();
            }
            assert!(Instant::now() < deadline, "{css:?} says {text}, not {needle:?}, at {}", self.url().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to [`WAIT`] for the address's path to be `path`.
    pub async fn wait_path(&self, path: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.url().await;
            let here = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_default();
            if here.split('?').next() == Some(path) {
                return;
            }
            assert!(Instant::now() < deadline, "at {url}, not {path}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, e: &Element) {
        self.raw("POST", &format!("/element/{}/click", e.0), None).await;
    }

    /// Finds `css` (waiting) and clicks it.
    pub async fn click_on(&self, css: &str) {
        let e = self.find(css).await;
        self.click(&e).await;
    }

    /// Clears the field and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.raw("POST", &format!("/element/{}/clear", e.0), None).await;
        self.raw("POST", &format!("/element/{}/value", e.0), Some(json!({ "text": text }))).await;
    }

    /// Chooses the local file `path` in the `<input type=file>` matching `css`, as a person
    /// picking it would (no clearing first: a file input has nothing typed to clear).
    pub async fn choose_file(&self, css: &str, path: &Path) {
        let e = self.find(css).await;
        let text = path.to_str().expect("a UTF-8 path");
        self.raw("POST", &format!("/element/{}/value", e.0), Some(json!({ "text": text }))).await;
    }

    pub async fn text(&self, e: &Element) -> String {
        self.raw("GET", &format!("/element/{}/text", e.0), None).await.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and answers its return value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.raw("POST", "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Runs `script` asynchronously: it calls `arguments[arguments.length - 1](value)` when done.
    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.raw("POST", "/execute/async", Some(json!({ "script": script, "args": args }))).await
    }

    /// Accepts the open `confirm()`/`alert()` dialog.
    pub async fn accept_dialog(&self) {
        self.raw("POST", "/alert/accept", None).await;
    }

    /// The browser console's entries (level, source, message) since the last call.
    pub async fn console_log(&self) -> Vec<(String, String, String)> {
        let v = self.raw("POST", "/se/log", Some(json!({"type": "browser"}))).await;
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        let field = |k: &str| e[k].as_str().unwrap_or("").to_owned();
                        (field("level"), field("source"), field("message"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a PNG screenshot of the window to `path` (directories created).
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.raw("GET", "/screenshot", None).await;
        let png = decode_base64(b64.as_str().expect("base64 PNG")).expect("valid base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Ends the session (closing the browser) and stops chromedriver.
    pub async fn quit(self) {
        let _ = self.client.delete(&self.base).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The process group holds chromedriver and the browser it started.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = &self.profile;
    }
}

/// Standard base64 (with padding) → bytes; `None` on a character outside the alphabet.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_the_rfc_4648_vectors() {
        for (text, plain) in
            [("", ""), ("Zg==", "f"), ("Zm8=", "fo"), ("Zm9v", "foo"), ("Zm9vYmE=", "fooba"), ("Zm9vYmFy", "foobar")]
        {
            assert_eq!(super::decode_base64(text).as_deref(), Some(plain.as_bytes()), "{text}");
        }
        assert_eq!(super::decode_base64("Zm9v!"), None);
    }
}

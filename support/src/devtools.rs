//! Headless Chromium driven over the DevTools protocol, for tests of pages that need more than
//! one load: a login first, then waiting for a single-page application (Superset) to draw.
//!
//! Chromium runs with `--remote-debugging-pipe`: commands go to its file descriptor 3 and
//! answers come from 4, as NUL-terminated JSON. A shell maps them onto the child's piped
//! stdin and stdout (no `unsafe` file-descriptor juggling here). As in [`crate::browser`], a
//! fresh profile is used and the whole process group is killed on drop.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::browser::{chromium_path, spawn_group, BrowserError, GroupGuard, BASE_FLAGS};

/// How long one command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A page in a running headless Chromium.
pub struct Page {
    guard: Option<GroupGuard>,
    input: ChildStdin,
    answers: mpsc::Receiver<Value>,
    session: String,
    next_id: u64,
    profile: PathBuf,
    /// What the page logged (its console, and the browser's own reports such as a blocked
    /// script), in order.
    console: Vec<String>,
}

impl Page {
    /// Starts Chromium with a window of `width` × `height` and opens a blank page.
    pub fn open(width: u32, height: u32) -> Result<Self, BrowserError> {
        let program = chromium_path()?;
        let profile = std::env::temp_dir().join(format!(
            "brewlytics-devtools-{}-{}",
            std::process::id(),
            crate::browser::next_run()
        ));
        std::fs::create_dir_all(&profile)?;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec \"$0\" \"$@\" 3<&0 4>&1 0</dev/null 1>/dev/null"])
            .arg(&program)
            .args(BASE_FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut guard = spawn_group(cmd, &program)?;
        let input = guard.0.stdin.take().expect("piped");
        let mut output = guard.0.stdout.take().expect("piped");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 64 * 1024];
            while let Ok(n) = output.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|b| *b == 0) {
                    let message: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&message[..end]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut page = Self {
            guard: Some(guard),
            input,
            answers,
            session: String::new(),
            next_id: 0,
            profile,
            console: Vec::new(),
        };
        let target = page.send(
            None,
            "Target.createTarget",
            json!({"url": "about:blank"}),
            COMMAND_TIMEOUT,
        )?;
        let target_id = target["targetId"].clone();
        let attached = page.send(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
            COMMAND_TIMEOUT,
        )?;
        page.session = attached["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        page.call("Page.enable", json!({}))?;
        page.call("Log.enable", json!({}))?;
        page.call("Runtime.enable", json!({}))?;
        Ok(page)
    }

    /// A command to the page; its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        let session = self.session.clone();
        self.send(Some(&session), method, params, COMMAND_TIMEOUT)
    }

    fn send(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, BrowserError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.input.write_all(&bytes)?;
        self.input.flush()?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .answers
                .recv_timeout(left)
                .map_err(|_| BrowserError::Timeout(timeout))?;
            if answer["id"] != id {
                // an event, or the answer to a command given up on
                self.keep_console(&answer);
                continue;
            }
            if let Some(error) = answer.get("error") {
                return Err(BrowserError::Failed {
                    status: method.to_owned(),
                    stderr: error.to_string(),
                });
            }
            return Ok(answer["result"].clone());
        }
    }

    fn keep_console(&mut self, event: &Value) {
        let params = &event["params"];
        let text = match event["method"].as_str() {
            Some("Log.entryAdded") => params["entry"]["text"].as_str().map(str::to_owned),
            Some("Runtime.consoleAPICalled") => Some(
                params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["value"].as_str().or(a["description"].as_str()))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Some("Runtime.exceptionThrown") => Some(params["exceptionDetails"].to_string()),
            _ => None,
        };
        self.console.extend(text);
    }

    /// Everything the page and the browser logged so far (console messages, exceptions,
    /// blocked loads).
    pub fn console(&mut self) -> Vec<String> {
        while let Ok(event) = self.answers.try_recv() {
            self.keep_console(&event);
        }
        self.console.clone()
    }

    /// The logged Content-Security-Policy violations.
    pub fn csp_violations(&mut self) -> Vec<String> {
        self.console()
            .into_iter()
            .filter(|m| m.contains("Content Security Policy"))
            .collect()
    }

    /// The browser's cookies for `url`, as DevTools describes them (`name`, `value`,
    /// `httpOnly`, `secure`, `sameSite`, `path`, `expires`).
    pub fn cookies(&mut self, url: &str) -> Result<Vec<Value>, BrowserError> {
        let answer = self.call("Network.getCookies", json!({"urls": [url]}))?;
        Ok(answer["cookies"].as_array().cloned().unwrap_or_default())
    }

    /// Loads `url` and waits for its `load` event (at most `timeout`).
    pub fn navigate(&mut self, url: &str, timeout: Duration) -> Result<(), BrowserError> {
        self.call("Page.navigate", json!({"url": url}))?;
        self.wait_for("document.readyState === 'complete'", timeout)
            .map(|_| ())
    }

    /// The value of a JavaScript expression (promises awaited).
    pub fn evaluate(&mut self, expression: &str) -> Result<Value, BrowserError> {
        let answer = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
        )?;
        if let Some(e) = answer.get("exceptionDetails") {
            return Err(BrowserError::Failed {
                status: "Runtime.evaluate".into(),
                stderr: e.to_string(),
            });
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Fills the fields of the form with id `form` (each field by its id) and submits it, as a
    /// user typing and pressing Enter would (waits for the form first).
    pub fn submit(
        &mut self,
        form: &str,
        fields: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        self.wait_for(
            &format!("document.getElementById({form:?}) !== null"),
            timeout,
        )?;
        let mut script = String::new();
        for (id, value) in fields {
            script.push_str(&format!(
                "document.getElementById({id:?}).value = {};",
                serde_json::to_string(value).unwrap_or_default()
            ));
        }
        script.push_str(&format!("document.getElementById({form:?}).submit(); true"));
        self.evaluate(&script).map(|_| ())
    }

    /// Evaluates `expression` every 250 ms until it is truthy; its last value either way
    /// (`Err(Timeout)` when it never was). An expression that throws (the page is still
    /// loading: an element not there yet) counts as not yet; its exception is the error when
    /// it still throws at the deadline.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> Result<Value, BrowserError> {
        let deadline = Instant::now() + timeout;
        loop {
            let thrown = match self.evaluate(expression) {
                Ok(v) => {
                    if !matches!(v, Value::Null | Value::Bool(false))
                        && v != json!(0)
                        && v != json!("")
                    {
                        return Ok(v);
                    }
                    None
                }
                Err(e @ BrowserError::Failed { .. }) => Some(e),
                Err(e) => return Err(e),
            };
            if Instant::now() > deadline {
                return Err(thrown.unwrap_or(BrowserError::Timeout(timeout)));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Saves a PNG of the window at `file` (open the page with a window as tall as what
    /// should be in it: capturing beyond it leaves some pages, Superset's, blank).
    pub fn screenshot(&mut self, file: &Path) -> Result<(), BrowserError> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .map_err(|e| BrowserError::Io(std::io::Error::other(e)))?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, png)?;
        Ok(())
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.send(None, "Browser.close", json!({}), Duration::from_secs(5));
        // Whatever is left of the group is killed before its profile is removed.
        drop(self.guard.take());
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

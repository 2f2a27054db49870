//! The log lines of a test binary, captured in memory.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Log lines written by the test binary's subscriber.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log of this test binary, filtered by `filter` (an `EnvFilter` directive; the first
/// call's filter holds for the binary). The subscriber is the process's default, not one set
/// for this test's thread: tracing caches whether a callsite is enabled, and a test running
/// the same code on another thread without a subscriber could leave it disabled here.
pub fn captured(filter: &str) -> Captured {
    static LOG: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer({
                let log = log.clone();
                move || log.clone()
            })
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        log
    })
    .clone()
}

impl Captured {
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

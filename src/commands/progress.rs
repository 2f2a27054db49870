//! Progress of long copies on a terminal: one line redrawn in place (nothing when stderr is
//! not a terminal — the log says it instead).

use std::io::{IsTerminal, Write};

/// Draws `[#####     ]  42.0% table: rows (rate/s, ETA)` on stderr when it is a terminal.
pub struct Bar {
    tty: bool,
    drawn: bool,
}

impl Bar {
    pub fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// Whether the bar shows (else progress goes to the log).
    pub fn shows(&self) -> bool {
        self.tty
    }

    pub fn draw(&mut self, label: &str, rows: u64, estimate: Option<i64>, rate: f64) {
        if !self.tty {
            return;
        }
        let pct = estimate
            .filter(|e| *e > 0)
            .map(|e| (rows as f64 / e as f64 * 100.0).min(100.0));
        let bar = pct.map_or(String::new(), |pct| {
            let filled = ((pct / 5.0).round() as usize).min(20);
            format!(
                "[{}{}] {pct:5.1}% ",
                "#".repeat(filled),
                " ".repeat(20 - filled)
            )
        });
        let eta = match estimate {
            Some(e) if rate > 0.0 && (e as f64) > rows as f64 => {
                format!(", ETA {:.0}s", (e as f64 - rows as f64) / rate)
            }
            _ => String::new(),
        };
        eprint!("\r{bar}{label}: {rows} rows ({rate:.0}/s{eta})\x1b[K");
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    /// Ends the line (before anything else is printed).
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

//! Progress of long copies on a terminal: one line redrawn in place (nothing when stderr is
//! not a terminal — the log says it instead).

use std::io::{IsTerminal, Write};

use brewlytics_replicator::source::snapshot::CopyProgress;

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

    /// A line of its own above the bar (the bar is drawn again by the next `draw`).
    pub fn note(&mut self, line: &str) {
        if !self.tty {
            return;
        }
        eprintln!("\r{line}\x1b[K");
        self.drawn = false;
    }
}

/// Tables copied at the same time, shown as one bar: their rows, estimates and rates added
/// up; a line for each table when it is done.
#[derive(Default)]
pub struct CopyBars {
    live: std::collections::BTreeMap<String, (u64, Option<i64>, f64)>,
}

impl CopyBars {
    pub fn update(&mut self, bar: &mut Bar, p: &CopyProgress) {
        if p.done {
            self.live.remove(&p.table);
            bar.note(&format!("{}: {} rows copied", p.table, p.rows));
            if self.live.is_empty() {
                bar.finish();
                return;
            }
        } else {
            self.live
                .insert(p.table.clone(), (p.rows, p.estimate, p.rows_per_second));
        }
        let rows = self.live.values().map(|v| v.0).sum();
        let estimate = self
            .live
            .values()
            .map(|v| v.1)
            .sum::<Option<i64>>()
            .map(|e| e.max(rows as i64));
        let rate = self.live.values().map(|v| v.2).sum();
        let label = self.live.keys().cloned().collect::<Vec<_>>().join(", ");
        bar.draw(&label, rows, estimate, rate);
    }
}

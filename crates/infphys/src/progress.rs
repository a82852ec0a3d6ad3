//! Progress lines for long runs, with an estimate of the time left.

use std::io::Write;
use std::time::{Duration, Instant};

/// Where progress lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Print nothing.
    #[default]
    Silent,
    /// Print to stderr, as the CLI does.
    Stderr,
    /// Print to stdout, which a Jupyter kernel streams into the cell's output as it runs.
    Stdout,
}

/// How often a progress line is printed at most.
const PRINT_EVERY: Duration = Duration::from_secs(2);

/// Counts finished requests of one run and prints a line now and then.
pub(crate) struct Meter {
    sink: Progress,
    label: String,
    total: usize,
    done: usize,
    failed: usize,
    started: Instant,
    last_print: Option<Instant>,
}

impl Meter {
    pub(crate) fn new(sink: Progress, label: String, total: usize) -> Self {
        Self {
            sink,
            label,
            total,
            done: 0,
            failed: 0,
            started: Instant::now(),
            last_print: None,
        }
    }

    /// Returns the number of requests the run will send.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Records one finished request and prints when a line is due or the run is complete.
    pub(crate) fn tick(&mut self, ok: bool) {
        self.done += 1;
        if !ok {
            self.failed += 1;
        }

        let now = Instant::now();
        let due = self.last_print.is_none_or(|last| now - last >= PRINT_EVERY);
        if self.done == self.total || due {
            self.last_print = Some(now);
            self.print(now - self.started);
        }
    }

    fn print(&self, elapsed: Duration) {
        let line = format_line(&self.label, self.done, self.total, self.failed, elapsed);
        match self.sink {
            Progress::Silent => {}
            Progress::Stderr => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            Progress::Stdout => {
                let mut out = std::io::stdout();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }
}

/// Formats one progress line in wall-clock seconds, which differ from the tables' server time
/// against a sped-up simulator. The time left assumes later requests take the mean so far.
pub(crate) fn format_line(
    label: &str,
    done: usize,
    total: usize,
    failed: usize,
    elapsed: Duration,
) -> String {
    let elapsed_s = elapsed.as_secs_f64();
    let mut line =
        format!("{label}: {done}/{total} done, {failed} failed, wall clock {elapsed_s:.1} s");
    if done == total {
        line.push_str(", finished");
    } else if done > 0 {
        let left = elapsed_s / done as f64 * (total - done) as f64;
        line.push_str(&format!(", about {left:.0} s left"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_estimates_time_left() {
        let line = format_line("sweep c=4", 20, 80, 1, Duration::from_secs(10));
        assert_eq!(
            line,
            "sweep c=4: 20/80 done, 1 failed, wall clock 10.0 s, about 30 s left"
        );
    }

    #[test]
    fn line_says_finished_at_the_end() {
        let line = format_line("baseline", 12, 12, 0, Duration::from_secs(3));
        assert!(line.ends_with(", finished"), "{line}");
    }
}

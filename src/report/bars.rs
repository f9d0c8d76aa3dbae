//! One progress bar per battle scenario on a terminal (calls done against calls planned, or
//! elapsed against the plan's duration); plain start and end lines in CI (`CI` set) or when
//! stderr is not a terminal. `NO_COLOR` turns colours off.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a scenario's bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Calls completed out of this many planned (every group stops after its request count).
    Calls(u64),
    /// Milliseconds elapsed out of the plan's bound.
    Millis(u64),
}

pub struct ScenarioBars {
    multi: Option<MultiProgress>,
    color: bool,
}

impl ScenarioBars {
    /// Chooses bars or plain lines from the environment.
    pub fn new() -> Self {
        let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        ScenarioBars {
            multi: interactive
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// Plain lines whatever the terminal.
    pub fn plain() -> Self {
        ScenarioBars {
            multi: None,
            color: false,
        }
    }

    pub fn is_plain(&self) -> bool {
        self.multi.is_none()
    }

    /// A bar for scenario `k` of `n` (or its plain start line).
    pub fn start(&self, k: usize, n: usize, name: &str, measure: Measure) -> ScenarioBar {
        let (total, unit) = match measure {
            Measure::Calls(c) => (c, "calls"),
            Measure::Millis(ms) => (ms, "ms"),
        };
        let label = format!("{k}/{n} {name}");
        let Some(multi) = &self.multi else {
            eprintln!("tk-conform: battle {label}: planned {total} {unit} …");
            return ScenarioBar { bar: None, measure };
        };
        let template = if self.color {
            "{prefix:<32} [{bar:30.cyan/blue}] {pos:>6}/{len:6} {msg} {elapsed:.dim}"
        } else {
            "{prefix:<32} [{bar:30}] {pos:>6}/{len:6} {msg} {elapsed}"
        };
        let bar = multi.add(ProgressBar::new(total.max(1)));
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label);
        bar.set_message(unit);
        bar.enable_steady_tick(Duration::from_millis(200));
        ScenarioBar {
            bar: Some(bar),
            measure,
        }
    }

    /// A line above the bars (or a plain line).
    pub fn line(&self, message: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(format!("tk-conform: {message}"));
            }
            None => eprintln!("tk-conform: {message}"),
        }
    }
}

impl Default for ScenarioBars {
    fn default() -> Self {
        Self::new()
    }
}

pub struct ScenarioBar {
    bar: Option<ProgressBar>,
    measure: Measure,
}

impl ScenarioBar {
    pub fn measure(&self) -> Measure {
        self.measure
    }

    /// Moves the bar (never past its end: a plan's bound is an upper bound, not a promise).
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done.min(bar.length().unwrap_or(done)));
        }
    }

    /// Leaves the bar full with the scenario's verdict (plain mode prints nothing: the caller's
    /// result line follows).
    pub fn finish(&self, verdict: &str) {
        if let Some(bar) = &self.bar {
            if let Some(len) = bar.length() {
                bar.set_position(len);
            }
            bar.disable_steady_tick();
            bar.finish_with_message(verdict.to_owned());
        }
    }
}

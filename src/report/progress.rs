//! Progress on stderr: an indicatif spinner on a terminal, plain lines in CI (`CI` set) or when
//! stderr is not a terminal. `NO_COLOR` turns colours off.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Chooses the mode from the environment.
    pub fn new() -> Self {
        let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        if !interactive {
            return Progress { bar: None };
        }
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let template = if color {
            "{spinner:.cyan} {msg} {elapsed:.dim}"
        } else {
            "{spinner} {msg} {elapsed}"
        };
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar: Some(bar) }
    }

    /// Plain lines only, whatever the terminal (for tests and nested use).
    pub fn plain() -> Self {
        Progress { bar: None }
    }

    /// Shows what is happening now.
    pub fn phase(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_owned()),
            None => eprintln!("tk-conform: {message}"),
        }
    }

    /// Prints a line that stays (above the spinner on a terminal).
    pub fn line(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("tk-conform: {message}")),
            None => eprintln!("tk-conform: {message}"),
        }
    }

    /// Removes the spinner (before other output such as the trial list takes the terminal).
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

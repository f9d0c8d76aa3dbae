//! Everything a run leaves under `logs/`: one folder per run, `logs/latest` pointing at it,
//! `summary.json` (rewritten as trials finish, so an interrupted run still leaves a valid one),
//! `junit.xml`, `run.log` and `report.html` (the page people look at). Every file is written atomically (temp file + rename).
//!
//! Reusable by any command that runs named trials (the conformance runner, the battle runner):
//! start a [`RunRecorder`] on a [`RunDir`], [`RunRecorder::record`] each trial, then [`RunRecorder::finish`].

mod atomic;
mod bars;
pub mod html;
mod junit;
pub mod matrix;
mod progress;
mod recorder;
mod run_dir;
pub mod seed_text;
mod summary;

pub use atomic::{stop_writes, write_atomic};
pub use bars::{Measure, ScenarioBar, ScenarioBars};
pub use junit::junit_xml;
pub use progress::Progress;
pub use recorder::RunRecorder;
pub use run_dir::RunDir;
pub use summary::{Counts, RunStatus, Summary, TrialOutcome, TrialRecord, process_start_ticks};

//! The live record of a run: `summary.json` and `report.html` rewritten after every trial,
//! `run.log` appended, `junit.xml` written at the end. Everything written passes through
//! `infra::redact_text`, so no store password reaches a run folder, whatever message quoted its URL.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::atomic::write_atomic;
use super::html;
use super::junit::junit_xml;
use super::run_dir::RunDir;
use super::summary::{RunStatus, Summary, TrialRecord, now_rfc3339};
use crate::infra::redact_text;

pub struct RunRecorder {
    dir: RunDir,
    summary: Mutex<Summary>,
    /// Extra `report.html` sections (one per battle scenario), in order.
    sections: Mutex<Vec<String>>,
    log: Mutex<File>,
    /// Set by [`RunRecorder::finish`]: the record is final (an interrupted run's trials that end
    /// after the interrupt, killed by it, are not added).
    closed: AtomicBool,
}

impl RunRecorder {
    /// Opens `run.log` and writes the first `summary.json` (status `running`).
    pub fn start(dir: RunDir, summary: Summary) -> io::Result<RunRecorder> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.file("run.log"))?;
        let recorder = RunRecorder {
            dir,
            summary: Mutex::new(summary),
            sections: Mutex::new(Vec::new()),
            log: Mutex::new(log),
            closed: AtomicBool::new(false),
        };
        recorder.write_summary()?;
        Ok(recorder)
    }

    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// Appends a timestamped line to `run.log`.
    pub fn log(&self, line: &str) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        // A failed log write must not fail the run; the summary is the record that matters.
        let _ = writeln!(log, "{} {}", now_rfc3339(), redact_text(line));
    }

    /// Changes the summary and rewrites `summary.json`.
    pub fn update(&self, change: impl FnOnce(&mut Summary)) -> io::Result<()> {
        {
            let mut summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
            if self.closed.load(Ordering::SeqCst) {
                return Ok(());
            }
            change(&mut summary);
        }
        self.write_summary()
    }

    /// Adds a finished trial (and a `run.log` line) and rewrites `summary.json`.
    pub fn record(&self, trial: TrialRecord) -> io::Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut line = format!(
            "trial {} {:?} in {:.1} ms",
            trial.name, trial.outcome, trial.duration_ms
        );
        if let Some(message) = &trial.message {
            line.push_str(": ");
            line.push_str(message);
        }
        // Into the summary first: a trial in run.log is always in summary.json too.
        {
            let mut summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
            if self.closed.load(Ordering::SeqCst) {
                return Ok(());
            }
            summary.push(trial);
        }
        self.log(&line);
        self.write_summary()
    }

    /// Appends a section to `report.html` (and rewrites it).
    pub fn add_section(&self, html: String) -> io::Result<()> {
        self.sections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(html);
        self.write_summary()
    }

    /// A copy of the summary as it stands.
    pub fn snapshot(&self) -> Summary {
        self.summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets the final status and exit code, writes `summary.json` and `junit.xml`.
    /// Only the first call counts: an interrupt's `finish` is not overwritten by the main thread's.
    pub fn finish(&self, status: RunStatus, exit_code: i32) -> io::Result<()> {
        {
            let mut s = self.summary.lock().unwrap_or_else(|e| e.into_inner());
            if self.closed.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            s.status = status;
            s.exit_code = Some(exit_code);
            s.finished_at = Some(now_rfc3339());
        }
        self.write_summary()?;
        let xml = junit_xml(&self.snapshot()).map_err(io::Error::other)?;
        write_atomic(&self.dir.file("junit.xml"), redact_text(&xml).as_bytes())?;
        self.log(&format!("finished: {status:?}, exit code {exit_code}"));
        Ok(())
    }

    fn write_summary(&self) -> io::Result<()> {
        // Hold the lock while writing so concurrent trials cannot write an older summary last.
        let summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        let json = serde_json::to_string_pretty(&*summary).map_err(io::Error::other)?;
        write_atomic(
            &self.dir.file("summary.json"),
            redact_text(&json).as_bytes(),
        )?;
        let sections = self.sections.lock().unwrap_or_else(|e| e.into_inner());
        write_atomic(
            &self.dir.file("report.html"),
            redact_text(&html::page(&summary, &sections)).as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{TrialOutcome, TrialRecord};

    #[test]
    fn the_summary_is_valid_after_every_trial() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::create(root.path(), "model").unwrap();
        let recorder = RunRecorder::start(dir, Summary::new("run", "contract", 1)).unwrap();
        let read = || -> Summary {
            serde_json::from_slice(&std::fs::read(recorder.dir().file("summary.json")).unwrap())
                .unwrap()
        };
        assert_eq!(read().status, RunStatus::Running);
        recorder
            .record(TrialRecord {
                name: "rateLimit::x".into(),
                kind: "vectors".into(),
                outcome: TrialOutcome::Passed,
                duration_ms: 2.0,
                message: None,
            })
            .unwrap();
        // An interrupted run stops here: the summary on disk already lists the finished trial.
        let mid = read();
        assert_eq!(mid.counts.passed, 1);
        let page = std::fs::read_to_string(recorder.dir().file("report.html")).unwrap();
        assert!(
            page.contains("rateLimit::x") && page.contains(">running<"),
            "{page}"
        );
        assert_eq!(mid.status, RunStatus::Running);
        recorder.finish(RunStatus::Finished, 0).unwrap();
        assert_eq!(read().exit_code, Some(0));
        assert!(recorder.dir().file("junit.xml").exists());
        let log = std::fs::read_to_string(recorder.dir().file("run.log")).unwrap();
        assert!(log.contains("trial rateLimit::x Passed"), "{log}");
    }
}

//! Per-worker histories: JSON lines, one event per line, written as the calls happen.
//!
//! Like Jepsen, a call is two events: `invoke` before it leaves, and `ok` / `fail` /
//! `indeterminate` when it is known how it ended. A worker killed mid-call leaves an invoke
//! without a completion, which the reader turns into an indeterminate call: it may or may not
//! have taken effect. Times are epoch microseconds from the machine's one wall clock, which every
//! worker, server and Redis on this host share.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::Decision;

/// Epoch microseconds now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// What a call asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    Check {
        cost: u64,
    },
    Debit {
        tokens: u64,
    },
    #[serde(rename_all = "camelCase")]
    Admit {
        cost: u64,
    },
    #[serde(rename_all = "camelCase")]
    Heartbeat {
        lease_ids: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    Release {
        lease_id: String,
    },
    Reserve {
        wants: u64,
        has: u64,
    },
    /// A local spend of lease credits (no network call).
    Spend {
        cost: u64,
    },
}

/// What a call that completed normally answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "camelCase")]
pub enum Reply {
    Decision {
        decision: Decision,
    },
    #[serde(rename_all = "camelCase")]
    Admit {
        decision: Decision,
        lease_id: String,
        lease_expires_at: i64,
    },
    #[serde(rename_all = "camelCase")]
    Heartbeat {
        live: Vec<String>,
        reclaimed: Vec<String>,
        next_deadline: i64,
    },
    Released,
    #[serde(rename_all = "camelCase")]
    Grant {
        capacity: i64,
        expiry_ms: i64,
        retry_after_ms: i64,
        limit: i64,
    },
    /// The spender had no credit left: a `Reserve` comes next. Not a decision.
    NeedsRefresh,
    /// A protocol-2 adapter's decision (exec door): `allowed`, and what the kind exposes.
    Decided {
        decision: crate::backend::exec::v2::DecisionV2,
        /// The `now` sent (explicit-clock kinds), in epoch µs: the instant the engine decided at.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        now_us: Option<i64>,
    },
}

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    #[serde(rename_all = "camelCase")]
    Start {
        group: String,
        index: u32,
        pid: u32,
        /// When the barrier opened (the same for every worker of the run).
        t0_us: i64,
    },
    #[serde(rename_all = "camelCase")]
    Invoke {
        seq: u64,
        at_us: i64,
        #[serde(flatten)]
        op: Op,
        /// Where the call went (`redis 127.0.0.1:6379`, `server 1 127.0.0.1:4001`, `local`).
        server: String,
    },
    #[serde(rename_all = "camelCase")]
    Ok {
        seq: u64,
        at_us: i64,
        #[serde(flatten)]
        reply: Reply,
    },
    /// Definitely did not take effect (refused before it was sent, or an error reply).
    #[serde(rename_all = "camelCase")]
    Fail { seq: u64, at_us: i64, error: String },
    /// May or may not have taken effect (timeout, connection lost mid-call).
    #[serde(rename_all = "camelCase")]
    Indeterminate { seq: u64, at_us: i64, error: String },
    /// The worker finished its plan and exited normally.
    #[serde(rename_all = "camelCase")]
    End { at_us: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum CallOutcome {
    Ok(Reply),
    Fail { error: String },
    Indeterminate { error: String },
}

/// One call, invoke and completion merged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub seq: u64,
    pub op: Op,
    pub server: String,
    pub invoke_us: i64,
    /// `None` when the worker died before the call completed.
    pub complete_us: Option<i64>,
    pub outcome: CallOutcome,
}

impl Call {
    /// The decision of a completed call, if it carried one.
    pub fn decision(&self) -> Option<&Decision> {
        match &self.outcome {
            CallOutcome::Ok(Reply::Decision { decision } | Reply::Admit { decision, .. }) => {
                Some(decision)
            }
            _ => None,
        }
    }

    pub fn is_indeterminate(&self) -> bool {
        matches!(self.outcome, CallOutcome::Indeterminate { .. })
    }

    /// When the call is known to have ended (its invoke time if it never completed: the worker
    /// died, so only the invoke bounds it from below).
    pub fn end_us(&self) -> i64 {
        self.complete_us.unwrap_or(self.invoke_us)
    }
}

/// Everything one worker recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerHistory {
    pub group: String,
    pub index: u32,
    pub pid: u32,
    pub t0_us: i64,
    pub calls: Vec<Call>,
    /// The worker wrote its `end` event (it was not killed and did not crash).
    pub finished: bool,
}

impl WorkerHistory {
    pub fn label(&self) -> String {
        format!("{}[{}]", self.group, self.index)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot open history {file}: {source}")]
    Open {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write history {file}: {source}")]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Malformed {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// Appends events to a worker's history file, one `write` per line so that a kill never leaves
/// half a line behind a complete one.
pub struct HistoryWriter {
    file: File,
    path: PathBuf,
    line: Vec<u8>,
}

impl HistoryWriter {
    pub fn create(path: &Path) -> Result<HistoryWriter, HistoryError> {
        let file = File::create(path).map_err(|source| HistoryError::Open {
            file: path.to_path_buf(),
            source,
        })?;
        Ok(HistoryWriter {
            file,
            path: path.to_path_buf(),
            line: Vec::with_capacity(256),
        })
    }

    pub fn write(&mut self, event: &Event) -> Result<(), HistoryError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, event).expect("events always serialize");
        self.line.push(b'\n');
        self.file
            .write_all(&self.line)
            .map_err(|source| HistoryError::Write {
                file: self.path.clone(),
                source,
            })
    }
}

/// Reads a history file back into calls. A torn last line (the worker was killed while writing
/// it) is dropped; a bad line anywhere else is an error naming the file and line.
pub fn read(path: &Path) -> Result<WorkerHistory, HistoryError> {
    let file = File::open(path).map_err(|source| HistoryError::Open {
        file: path.to_path_buf(),
        source,
    })?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| HistoryError::Open {
            file: path.to_path_buf(),
            source,
        })?;
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(e) => events.push(e),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => {
                return Err(HistoryError::Malformed {
                    file: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    assemble(path, events)
}

/// Pairs invokes with their completions.
pub fn assemble(path: &Path, events: Vec<Event>) -> Result<WorkerHistory, HistoryError> {
    let malformed = |message: String| HistoryError::Malformed {
        file: path.to_path_buf(),
        line: 0,
        message,
    };
    let mut iter = events.into_iter();
    let Some(Event::Start {
        group,
        index,
        pid,
        t0_us,
    }) = iter.next()
    else {
        return Err(malformed("the first event must be `start`".into()));
    };
    let mut history = WorkerHistory {
        group,
        index,
        pid,
        t0_us,
        calls: Vec::new(),
        finished: false,
    };
    // Index of the open call by seq; workers issue calls one at a time, but allow overlap.
    let mut open: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for event in iter {
        let (seq, at_us, outcome) = match event {
            Event::Invoke {
                seq,
                at_us,
                op,
                server,
            } => {
                open.insert(seq, history.calls.len());
                history.calls.push(Call {
                    seq,
                    op,
                    server,
                    invoke_us: at_us,
                    complete_us: None,
                    outcome: CallOutcome::Indeterminate {
                        error: "no completion recorded (the worker died mid-call)".into(),
                    },
                });
                continue;
            }
            Event::Ok { seq, at_us, reply } => (seq, at_us, CallOutcome::Ok(reply)),
            Event::Fail { seq, at_us, error } => (seq, at_us, CallOutcome::Fail { error }),
            Event::Indeterminate { seq, at_us, error } => {
                (seq, at_us, CallOutcome::Indeterminate { error })
            }
            Event::End { .. } => {
                history.finished = true;
                continue;
            }
            Event::Start { .. } => return Err(malformed("a second `start` event".into())),
        };
        let Some(ix) = open.remove(&seq) else {
            return Err(malformed(format!(
                "completion of call {seq} without an invoke"
            )));
        };
        history.calls[ix].complete_us = Some(at_us);
        history.calls[ix].outcome = outcome;
    }
    Ok(history)
}

/// How a service-door call names its server in a history: `server 1 127.0.0.1:4001`.
pub fn server_label(index: usize, addr: &str) -> String {
    format!("server {index} {addr}")
}

/// The server index of a label made by [`server_label`].
pub fn server_index(label: &str) -> Option<usize> {
    label
        .strip_prefix("server ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(allowed: bool, remaining: i64) -> Decision {
        Decision {
            allowed,
            limit: 10,
            remaining,
            reset_at: 1_000,
            retry_after_ms: 0,
        }
    }

    #[test]
    fn round_trips_and_marks_a_torn_call_indeterminate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.jsonl");
        let mut w = HistoryWriter::create(&path).unwrap();
        let start = Event::Start {
            group: "g".into(),
            index: 2,
            pid: 42,
            t0_us: 100,
        };
        w.write(&start).unwrap();
        let invoke = |seq, at_us| Event::Invoke {
            seq,
            at_us,
            op: Op::Check { cost: 1 },
            server: "redis".into(),
        };
        w.write(&invoke(1, 110)).unwrap();
        w.write(&Event::Ok {
            seq: 1,
            at_us: 120,
            reply: Reply::Decision {
                decision: decision(true, 9),
            },
        })
        .unwrap();
        w.write(&invoke(2, 130)).unwrap();
        drop(w);
        // A torn line, as a SIGKILL mid-write could leave.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"type":"ok","seq":2,"at"#).unwrap();
        drop(f);

        let h = read(&path).unwrap();
        assert_eq!(h.label(), "g[2]");
        assert!(!h.finished);
        assert_eq!(h.calls.len(), 2);
        assert_eq!(h.calls[0].decision(), Some(&decision(true, 9)));
        assert_eq!(h.calls[0].complete_us, Some(120));
        assert!(h.calls[1].is_indeterminate());
        assert_eq!(h.calls[1].complete_us, None);
    }

    #[test]
    fn a_bad_line_in_the_middle_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.jsonl");
        std::fs::write(
            &path,
            "{\"type\":\"start\",\"group\":\"g\",\"index\":0,\"pid\":1,\"t0Us\":0}\nnot json\n{\"type\":\"end\",\"atUs\":5}\n",
        )
        .unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("w.jsonl:2"), "{err}");
    }
}

//! Child processes the harness owns.
//!
//! Every child starts in its own process group, so a kill reaches the whole tree (a server and
//! whatever it forked) and a Ctrl-C at the terminal does not reach it behind our back. It also
//! gets `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it if the harness itself is killed.
//! The death signal fires when the *thread* that forked the child exits, not the process; so
//! every spawn happens on one dedicated thread that lives as long as the process, whatever
//! thread (a test thread, a tokio worker, `spawn_blocking`) asked for it.
//!
//! A descendant that calls `setsid` leaves the group (and a double fork leaves the parent
//! chain), so each child is also marked with an environment variable its descendants inherit,
//! `TK_CONFORM_OWNED_<harness pid>_<n>=1`; a kill also kills every live process carrying it.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("could not start {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: String,
        source: io::Error,
    },
    #[error("could not signal {name} (pid {pid}) with {signal}: {source}")]
    Signal {
        name: String,
        pid: u32,
        signal: Signal,
        source: Errno,
    },
}

/// Process-group ids of every owned child still alive, for [`kill_all_owned`].
static LIVE: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
/// Numbers the environment marks of the children.
static MARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The long-lived spawner thread's inbox.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("tk-conform-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the process-spawner thread");
        Mutex::new(tx)
    })
}

/// A child process the harness owns: killed with its whole process group on drop.
#[derive(Debug)]
pub struct OwnedChild {
    name: String,
    child: Child,
    exit: Option<ExitStatus>,
    /// The environment variable every descendant of this child inherits.
    mark: String,
}

impl OwnedChild {
    /// Starts `command` as an owned child. `name` is how messages refer to it (e.g. `redis-server`).
    /// Stdio is whatever the caller configured on `command`.
    pub fn spawn(name: impl Into<String>, mut command: Command) -> Result<Self, ChildError> {
        let name = name.into();
        let program = command.get_program().to_string_lossy().into_owned();
        let harness = std::process::id();
        let mark = format!(
            "TK_CONFORM_OWNED_{harness}_{}",
            MARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        command.env(&mark, "1");
        command.process_group(0);
        // SAFETY: the closure runs between fork and exec; it only makes async-signal-safe
        // syscalls (prctl, getppid) and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // If the harness died between fork and prctl, no signal will ever come.
                if nix::unistd::getppid().as_raw() as u32 != harness {
                    return Err(io::Error::from(Errno::ESRCH));
                }
                Ok(())
            });
        }
        let spawn_error = |source| ChildError::Spawn {
            name: name.clone(),
            program: program.clone(),
            source,
        };
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((command, reply_tx))
            .map_err(|_| spawn_error(io::Error::other("the spawner thread is gone")))?;
        let child = reply_rx
            .recv()
            .map_err(|_| spawn_error(io::Error::other("the spawner thread is gone")))?
            .map_err(spawn_error)?;
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(child.id() as i32);
        LIVE_MARKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mark.clone());
        Ok(OwnedChild {
            name,
            child,
            exit: None,
            mark,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's stdin pipe, once, when `command` was given `Stdio::piped()` for it.
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// The child's stderr pipe, once, when `command` was given `Stdio::piped()` for it.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// The child's stdout pipe, once, when `command` was given `Stdio::piped()` for it.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the child's whole process group (e.g. SIGSTOP / SIGCONT to freeze it).
    pub fn signal(&self, signal: Signal) -> Result<(), ChildError> {
        if self.exit.is_some() {
            return Ok(());
        }
        killpg(Pid::from_raw(self.pid() as i32), signal).map_err(|source| ChildError::Signal {
            name: self.name.clone(),
            pid: self.pid(),
            signal,
            source,
        })
    }

    /// The exit status if the child has exited (without blocking).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some(status);
            // The leader is gone; the group may still hold grandchildren: kill them too.
            let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
            kill_marked(&[self.mark.as_str()]);
            forget(self.pid(), &self.mark);
        }
        self.exit
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the whole process group with SIGKILL and reaps the child. Idempotent.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
            kill_marked(&[self.mark.as_str()]);
            // SIGKILL cannot be caught: the wait is short.
            if let Ok(status) = self.child.wait() {
                self.exit = Some(status);
            }
            forget(self.pid(), &self.mark);
        }
        self.exit
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Marks of the owned children not killed or reaped yet, for [`kill_all_owned`].
static LIVE_MARKS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn forget(pid: u32, mark: &str) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(pid as i32));
    LIVE_MARKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(mark);
}

/// SIGKILLs every live process (of any session) whose environment carries one of `marks`.
fn kill_marked(marks: &[&str]) {
    if marks.is_empty() {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let wanted: Vec<Vec<u8>> = marks
        .iter()
        .map(|m| format!("{m}=1").into_bytes())
        .collect();
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        // Only our own user's processes are readable; the others cannot carry our mark.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| wanted.iter().any(|w| var == w.as_slice()))
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Pids (= process-group ids) of the owned children that have not been killed or reaped yet.
pub fn live_owned_pids() -> Vec<u32> {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|p| *p as u32)
        .collect()
}

/// Kills every owned child's process group. For an interrupt handler that is about to exit the
/// process without running destructors.
pub fn kill_all_owned() {
    let groups = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    let marks = std::mem::take(&mut *LIVE_MARKS.lock().unwrap_or_else(|e| e.into_inner()));
    kill_marked(&marks.iter().map(String::as_str).collect::<Vec<_>>());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        nix::sys::signal::kill(Pid::from_raw(pid as i32), None).is_ok()
    }

    #[test]
    fn drop_kills_the_whole_group() {
        // A shell that forks a grandchild: both must be gone after the drop.
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("sleep 30 & echo $! ; wait")
            .stdout(std::process::Stdio::piped());
        let mut child = OwnedChild::spawn("sleeper", command).unwrap();
        let mut line = String::new();
        let stdout = child.child.stdout.take().unwrap();
        io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line).unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        let pid = child.pid();
        assert!(alive(grandchild));
        assert!(live_owned_pids().contains(&pid));
        drop(child);
        assert!(!live_owned_pids().contains(&pid));
        // SIGKILL was sent to the group; the kernel finishes the grandchild's exit shortly
        // after (then init reaps it, or it is a zombie until then). Poll, bounded.
        let stat =
            || std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(stat().is_empty() || stat().contains(") Z")) {
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild still running: {}",
                stat()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_descendant_in_its_own_session_dies_with_the_child() {
        // `setsid -f` forks: the sleeper leaves the group and its parent exits (an orphan).
        let tag = format!("86{}.5", std::process::id() % 10_000);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("setsid -f sleep {tag}; exec sleep 30"));
        let child = OwnedChild::spawn("session-leaver", command).unwrap();
        let find = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| {
                    let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    (String::from_utf8_lossy(&cmd).replace('\0', " ").trim()
                        == format!("sleep {tag}")
                        && alive(pid)
                        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                            .unwrap_or_default()
                            .contains(") Z"))
                    .then_some(pid)
                })
                .collect::<Vec<_>>()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while find().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the sleeper never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !find().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the setsid sleeper outlived its owned ancestor: {:?}",
                find()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn exit_status_is_observed() {
        let mut command = Command::new("sh");
        command.arg("-c").arg("exit 3");
        let mut child = OwnedChild::spawn("quitter", command).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let status = rt
            .block_on(child.wait_exit(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn spawn_failure_names_the_program() {
        let err = OwnedChild::spawn("ghost", Command::new("/nonexistent/tk-ghost")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ghost") && text.contains("/nonexistent/tk-ghost"),
            "{text}"
        );
    }
}

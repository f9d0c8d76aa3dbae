//! A gRPC server started and owned by the harness (an `infra::OwnedChild`: own process group,
//! killed with its group on drop, by the kernel if the harness dies, and by the runner's
//! interrupt handler). Its stdout and stderr go to files, which readiness is read from and
//! error messages quote. `run --server-cmd` and `battle --server-cmd` both start servers here,
//! from one template vocabulary ([`fill_template`]) and with one start-up bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::infra::{ChildError, OwnedChild};

/// How long a server may take to start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server may take to drain before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the server's stderr quoted in error messages.
const STDERR_TAIL: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start server `{command}`: {message}")]
    Spawn { command: String, message: String },
    #[error(
        "server `{command}` exited before it was ready ({status}); its stderr ends with:\n{stderr}"
    )]
    EarlyExit {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "server `{command}` was not listening after {timeout:?} (waited for `listening on <addr>` on stdout{port}); its stderr ends with:\n{stderr}"
    )]
    NotReady {
        command: String,
        timeout: Duration,
        port: String,
        stderr: String,
    },
}

/// What a `--server-cmd` template is filled with. The vocabulary: `{port}` (a free loopback
/// port), `{policy}` (the policy file), `{redis}` (the Redis URL), `{index}` (the server's
/// 0-based place in the fleet), `{contract}` (the contract folder), `{lease_ttl_ms}`, and
/// `{exe}` (this binary), `{key_prefix}` (put every Redis key under `<key_prefix>:`) and `{fail}`
/// (`open` or `closed`: what Check does while the store is unreachable). `{config}` and
/// `{redis_url}` are accepted for `{policy}` and `{redis}`.
#[derive(Debug, Clone)]
pub struct Placeholders {
    pub exe: String,
    pub port: Option<u16>,
    pub policy: String,
    pub redis: Option<String>,
    pub index: usize,
    pub contract: String,
    pub lease_ttl_ms: u64,
    pub key_prefix: String,
    pub fail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("--server-cmd `{template}` is not valid shell words")]
    Words {
        template: String,
        #[source]
        source: shell_words::ParseError,
    },
    #[error("--server-cmd is empty")]
    Empty,
    #[error("--server-cmd `{template}` uses {{redis}} but no Redis was given")]
    NoRedis { template: String },
}

/// Whether the template asks for a port (then the caller picks a free one).
pub fn wants_port(template: &str) -> bool {
    template.contains("{port}")
}

/// Splits the template like a shell would and fills in every placeholder.
pub fn fill_template(template: &str, values: &Placeholders) -> Result<Vec<String>, TemplateError> {
    let words = shell_words::split(template).map_err(|source| TemplateError::Words {
        template: template.to_owned(),
        source,
    })?;
    if words.is_empty() {
        return Err(TemplateError::Empty);
    }
    let uses_redis = template.contains("{redis}") || template.contains("{redis_url}");
    if uses_redis && values.redis.is_none() {
        return Err(TemplateError::NoRedis {
            template: template.to_owned(),
        });
    }
    let port = values.port.map(|p| p.to_string()).unwrap_or_default();
    let redis = values.redis.clone().unwrap_or_default();
    let pairs = [
        ("{exe}", values.exe.clone()),
        ("{port}", port),
        ("{policy}", values.policy.clone()),
        ("{config}", values.policy.clone()),
        ("{redis_url}", redis.clone()),
        ("{redis}", redis),
        ("{index}", values.index.to_string()),
        ("{contract}", values.contract.clone()),
        ("{lease_ttl_ms}", values.lease_ttl_ms.to_string()),
        ("{key_prefix}", values.key_prefix.clone()),
        ("{fail}", values.fail.clone()),
    ];
    Ok(words
        .into_iter()
        .map(|w| pairs.iter().fold(w, |acc, (k, v)| acc.replace(k, v)))
        .collect())
}

pub struct ServerProcess {
    child: OwnedChild,
    pub addr: SocketAddr,
    command: String,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Holds the output files; removed with the process handle.
    _logs: crate::infra::cleanup::TempFolder,
}

impl ServerProcess {
    /// Starts `argv` and waits until it listens: on `listening on <addr>` in its stdout, or
    /// when `port` (if the command was given one) accepts a connection.
    pub async fn start(argv: &[String], port: Option<u16>) -> Result<ServerProcess, ProcessError> {
        Self::start_logged(argv, port, None).await
    }

    /// [`start`](Self::start), with stdout and stderr together in `log` when given (a battle
    /// keeps each server's log in its run folder) instead of a temporary folder.
    pub async fn start_logged(
        argv: &[String],
        port: Option<u16>,
        log: Option<PathBuf>,
    ) -> Result<ServerProcess, ProcessError> {
        Self::start_with_env(argv, port, log, &[]).await
    }

    /// [`start_logged`](Self::start_logged) with extra environment variables (a battle's
    /// skewed server clock preloads libfaketime).
    pub async fn start_with_env(
        argv: &[String],
        port: Option<u16>,
        log: Option<PathBuf>,
        env: &[(String, String)],
    ) -> Result<ServerProcess, ProcessError> {
        // For messages only: a `--redis` URL in it keeps its password out of them.
        let command = crate::infra::redact_text(&shell_words::join(argv));
        let spawn_error = |message: String| ProcessError::Spawn {
            command: command.clone(),
            message,
        };
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| spawn_error("empty command".into()))?;
        let logs = crate::infra::cleanup::TempFolder::new("tk-conform-server-")
            .map_err(|e| spawn_error(format!("cannot create a folder for its output: {e}")))?;
        let file = |path: &PathBuf| {
            std::fs::File::create(path)
                .map_err(|e| spawn_error(format!("cannot create {}: {e}", path.display())))
        };
        let (stdout, stderr, out, err) = match log {
            Some(log) => {
                let out = file(&log)?;
                let err = out
                    .try_clone()
                    .map_err(|e| spawn_error(format!("cannot share {}: {e}", log.display())))?;
                (log.clone(), log, out, err)
            }
            None => {
                let stdout = logs.path().join("stdout.log");
                let stderr = logs.path().join("stderr.log");
                let (out, err) = (file(&stdout)?, file(&stderr)?);
                (stdout, stderr, out, err)
            }
        };
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let name = std::path::Path::new(program)
            .file_name()
            .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
        let child =
            OwnedChild::spawn(name, cmd).map_err(|e: ChildError| spawn_error(e.to_string()))?;

        let mut process = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0))),
            command,
            stdout,
            stderr,
            _logs: logs,
        };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(addr) = std::fs::read_to_string(&process.stdout)
                .ok()
                .and_then(|text| text.lines().find_map(listening_addr))
            {
                process.addr = addr;
                return Ok(process);
            }
            if let Some(port) = port
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                return Ok(process);
            }
            if let Some(status) = process.child.try_exit() {
                return Err(ProcessError::EarlyExit {
                    command: process.command.clone(),
                    status: status.to_string(),
                    stderr: process.stderr_tail(),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProcessError::NotReady {
                    command: process.command.clone(),
                    timeout: READY_TIMEOUT,
                    port: port
                        .map(|p| format!(" or a connection to port {p}"))
                        .unwrap_or_default(),
                    stderr: process.stderr_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The exit status, if the server has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_exit()
    }

    /// SIGKILLs the server's whole process group now.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.child.kill()
    }

    /// Sends `signal` to the group, saying when that failed (a fault must know it missed).
    pub fn try_signal(&self, signal: Signal) -> Result<(), ChildError> {
        self.child.signal(signal)
    }

    /// The last lines the server wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(STDERR_TAIL)..].join("\n")
    }

    /// Sends `signal` to the server's whole process group (SIGSTOP / SIGCONT / SIGTERM ...).
    pub fn signal(&self, signal: Signal) {
        // A server that already exited has nothing left to signal.
        let _ = self.child.signal(signal);
    }

    /// SIGTERM, wait for the drain, then SIGKILL the group. Returns the exit status text.
    pub async fn stop(mut self) -> String {
        self.signal(Signal::SIGTERM);
        match self.child.wait_exit(STOP_TIMEOUT).await {
            Some(status) => status.to_string(),
            None => {
                self.child.kill();
                format!("did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed")
            }
        }
    }
}

/// Finds `listening on <addr>` in a line of a server's stdout.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace()
        .next()?
        .trim_end_matches([',', ')'])
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_readiness_line() {
        assert_eq!(
            listening_addr("tk-conform serve: listening on 127.0.0.1:4567 (store: memory)"),
            Some("127.0.0.1:4567".parse().unwrap())
        );
        assert_eq!(
            listening_addr("listening on [::1]:80"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(listening_addr("starting"), None);
    }

    fn values(redis: Option<&str>) -> Placeholders {
        Placeholders {
            exe: "/bin/tk".into(),
            port: Some(4001),
            policy: "/p.yaml".into(),
            redis: redis.map(String::from),
            index: 2,
            contract: "/c".into(),
            lease_ttl_ms: 900,
            key_prefix: "tkc-1".into(),
            fail: "closed".into(),
        }
    }

    #[test]
    fn both_spellings_fill_the_same_words() {
        let new = fill_template(
            "{exe} serve --config {policy} --redis {redis} --port {port} --node-id tk-{index} \
             --contract {contract} --lease-ttl-ms {lease_ttl_ms}",
            &values(Some("redis://127.0.0.1:7")),
        )
        .unwrap();
        assert_eq!(
            new,
            [
                "/bin/tk",
                "serve",
                "--config",
                "/p.yaml",
                "--redis",
                "redis://127.0.0.1:7",
                "--port",
                "4001",
                "--node-id",
                "tk-2",
                "--contract",
                "/c",
                "--lease-ttl-ms",
                "900"
            ]
        );
        let old = fill_template(
            "s --config {config} --redis {redis_url}",
            &values(Some("redis://127.0.0.1:7")),
        )
        .unwrap();
        assert_eq!(
            old,
            ["s", "--config", "/p.yaml", "--redis", "redis://127.0.0.1:7"]
        );
    }

    #[test]
    fn bad_templates_are_named() {
        let err = fill_template("s --redis {redis_url}", &values(None)).unwrap_err();
        assert!(matches!(err, TemplateError::NoRedis { .. }), "{err}");
        let err = fill_template("s 'unclosed", &values(None)).unwrap_err();
        assert!(err.to_string().contains("'unclosed"), "{err}");
        assert!(matches!(
            fill_template("  ", &values(None)),
            Err(TemplateError::Empty)
        ));
    }

    #[tokio::test]
    async fn a_server_that_exits_early_is_reported_with_its_stderr() {
        let argv = ["sh", "-c", "echo 'bad config: policy `x`' >&2; exit 3"].map(String::from);
        let error = ServerProcess::start(&argv, None)
            .await
            .err()
            .expect("fails");
        let text = error.to_string();
        assert!(
            text.contains("exited before it was ready") && text.contains("bad config: policy `x`"),
            "{text}"
        );
    }
}

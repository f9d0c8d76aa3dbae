//! `redis-benchmark`, the yardstick of the bench commands, run as an owned child (own process
//! group, killed with the harness) with a time bound, its output in files, and its EVALSHA
//! rate read from `--csv` output.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::infra::OwnedChild;

/// One redis-benchmark run of `EVALSHA sha 1 <key pattern> argv...`.
pub struct Run<'a> {
    /// A redis:// URL (its host and port are used).
    pub url: &'a str,
    pub sha: &'a str,
    /// Keys are `<key_prefix>:__rand_int__`, with `-r keys` distinct values.
    pub key_prefix: &'a str,
    pub argv: &'a [String],
    pub connections: u64,
    pub pipeline: u64,
    pub requests: u64,
    pub keys: u64,
    /// Killed (and an error) when it runs longer.
    pub bound: Duration,
}

/// The first `redis-benchmark` on PATH.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-benchmark"))
        .find(|p| p.is_file())
}

/// Runs redis-benchmark from `binary` and returns its requests per second.
pub async fn rate(binary: &std::path::Path, run: &Run<'_>) -> anyhow::Result<f64> {
    let info = redis::Client::open(run.url)?.get_connection_info().clone();
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        other => bail!("redis-benchmark needs a TCP address, not {other:?}"),
    };
    let out_dir = tempfile::tempdir().context("cannot create a folder for redis-benchmark")?;
    let (out_file, err_file) = (out_dir.path().join("stdout"), out_dir.path().join("stderr"));
    let mut command = Command::new(binary);
    command
        .args(["-h", &host, "-p", &port.to_string()])
        .args(["-c", &run.connections.to_string()])
        .args(["-P", &run.pipeline.to_string()])
        .args(["-n", &run.requests.to_string()])
        .args(["-r", &run.keys.to_string(), "--csv"]);
    if let Some(password) = info.redis_settings().password() {
        // redis-benchmark reads a password only from its arguments (never written anywhere by
        // tk-conform; its output goes to files that are never shown but for a missing rate).
        command.args(["-a", password]);
    }
    command
        .args([
            "EVALSHA",
            run.sha,
            "1",
            &format!("{}:__rand_int__", run.key_prefix),
        ])
        .args(run.argv)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file)?)
        .stderr(std::fs::File::create(&err_file)?);
    let mut child = OwnedChild::spawn("redis-benchmark", command)?;
    if child.wait_exit(run.bound).await.is_none() {
        child.kill();
        bail!(
            "redis-benchmark did not finish within {} s: killed",
            run.bound.as_secs()
        );
    }
    let stdout = std::fs::read_to_string(&out_file).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    stdout
        .lines()
        .filter(|l| l.starts_with("\"EVALSHA"))
        .find_map(|l| l.split("\",\"").nth(1)?.parse::<f64>().ok())
        .with_context(|| {
            crate::infra::redact_text(&format!(
                "no rate in redis-benchmark's output: {stdout} {stderr}"
            ))
        })
}

//! The command-line options of `--backend exec`, flattened into the commands that pick a backend.

use std::path::Path;
use std::time::Duration;

use super::ExecConfig;

/// The file, in a run's log folder, that collects the adapter's stderr.
pub const STDERR_LOG: &str = "adapter.stderr.log";

#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// The adapter command line for `--backend exec`, split like a shell would (no shell is run),
    /// e.g. "python3 adapters/python/throttlekit_py.py". See docs/adapter-protocol.md.
    #[arg(long, value_name = "COMMAND LINE")]
    pub adapter: Option<String>,

    /// How long the adapter may take to answer one request before it is killed.
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub adapter_timeout_ms: u64,

    /// How many times a crashed or hung adapter is restarted in one run; after that every
    /// remaining trial fails as "adapter unavailable".
    #[arg(long, value_name = "N", default_value_t = ExecConfig::DEFAULT_MAX_RESTARTS)]
    pub adapter_restarts: u32,

    /// Let replies carry fields the protocol schema does not list (strict by default).
    #[arg(long)]
    pub adapter_lenient: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("--backend exec needs --adapter \"<command line>\" (see docs/adapter-protocol.md)")]
pub struct MissingAdapter;

impl ExecArgs {
    /// The backend configuration for a run whose logs go to `log_dir` and whose Redis (if the
    /// run provisioned one) is at `redis_url`.
    pub fn config(
        &self,
        log_dir: &Path,
        redis_url: Option<String>,
    ) -> Result<ExecConfig, MissingAdapter> {
        let command = self.adapter.clone().ok_or(MissingAdapter)?;
        let mut config = ExecConfig::new(command, log_dir.join(STDERR_LOG));
        config.request_timeout = Duration::from_millis(self.adapter_timeout_ms);
        config.max_restarts = self.adapter_restarts;
        config.strict = !self.adapter_lenient;
        config.redis_url = redis_url;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        exec: ExecArgs,
    }

    #[test]
    fn flags_map_onto_the_config() {
        let cli = Cli::parse_from([
            "x",
            "--adapter",
            "python3 'my adapter.py' --fast",
            "--adapter-timeout-ms",
            "250",
            "--adapter-restarts",
            "1",
            "--adapter-lenient",
        ]);
        let config = cli
            .exec
            .config(Path::new("/logs/run-1"), Some("redis://127.0.0.1:1".into()))
            .unwrap();
        assert_eq!(config.command, "python3 'my adapter.py' --fast");
        assert_eq!(config.request_timeout, Duration::from_millis(250));
        assert_eq!(config.max_restarts, 1);
        assert!(!config.strict);
        assert_eq!(
            config.stderr_log,
            Path::new("/logs/run-1/adapter.stderr.log")
        );
        assert_eq!(config.redis_url.as_deref(), Some("redis://127.0.0.1:1"));
    }

    #[test]
    fn defaults_and_a_missing_adapter() {
        let cli = Cli::parse_from(["x"]);
        assert_eq!(cli.exec.adapter_timeout_ms, 5000);
        assert_eq!(cli.exec.adapter_restarts, 3);
        let err = cli.exec.config(Path::new("/tmp"), None).unwrap_err();
        assert!(err.to_string().contains("--adapter"));
        assert!(Cli::try_parse_from(["x", "--adapter-timeout-ms", "0"]).is_err());
    }
}

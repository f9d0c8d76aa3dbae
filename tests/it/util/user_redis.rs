//! `tk-conform run` as a child process, and a Redis the harness did not start (a user's own
//! server behind `--redis-url`) holding keys of the user's that every run must leave as they are.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Redis, bin};

/// `tk-conform run --contract <contract> --logs <logs> <extra>`, with plain progress lines.
pub fn run_command(contract: &Path, logs: &Path, extra: &[&str]) -> Command {
    let mut command = bin();
    command
        .arg("run")
        .arg("--contract")
        .arg(contract)
        .arg("--logs")
        .arg(logs)
        .args(extra)
        .env("CI", "1");
    command
}

/// [`run_command`] started with its stdout and stderr piped (read them with [`stderr_of`]).
pub fn spawn_run(contract: &Path, logs: &Path, extra: &[&str]) -> Child {
    run_command(contract, logs, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit, killing it (and failing) if it takes longer than `limit`: a hang
/// is a defect, and the test must never hang itself.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tk-conform did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a piped child wrote to stderr.
pub fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut text).unwrap();
    text
}

/// A redis-server the test starts, standing for a user's own server (`--redis-url`): it holds
/// a key of someone else's and keys with the names the harness and server used to write
/// without a prefix.
pub struct UserRedis(Redis);

impl UserRedis {
    pub fn start() -> UserRedis {
        let redis = Redis::start();
        let () = redis.cmd(&["SET", "someone-else:data", "precious"]);
        let () = redis.cmd(&["SET", "federated#reserve", "mine"]);
        let () = redis.cmd(&["SADD", "tk-conform-server#slot-keys", "users-member"]);
        UserRedis(redis)
    }

    pub fn url(&self) -> String {
        self.0.url()
    }

    pub fn cmd<T: redis::FromRedisValue + Send + 'static>(&self, args: &[&str]) -> T {
        self.0.cmd(args)
    }

    /// [`spawn_run`] on this Redis (`--redis-url` first, then `extra`).
    pub fn spawn_run(&self, contract: &Path, logs: &Path, extra: &[&str]) -> Child {
        let url = self.url();
        let mut args = vec!["--redis-url", url.as_str()];
        args.extend(extra);
        spawn_run(contract, logs, &args)
    }

    /// Fails unless only the user's own keys are there, untouched.
    pub fn assert_only_the_users_keys(&self, what: &str) {
        assert_eq!(
            self.0.keys(),
            [
                "federated#reserve",
                "someone-else:data",
                "tk-conform-server#slot-keys"
            ],
            "{what}: keys left behind"
        );
        let kept: String = self.cmd(&["GET", "someone-else:data"]);
        assert_eq!(kept, "precious", "{what}");
        let kept: String = self.cmd(&["GET", "federated#reserve"]);
        assert_eq!(kept, "mine", "{what}");
        let members: Vec<String> = self.cmd(&["SMEMBERS", "tk-conform-server#slot-keys"]);
        assert_eq!(members, ["users-member"], "{what}");
    }
}

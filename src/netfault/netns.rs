//! A real partition, where the run is root and `ip netns` works: a network namespace of the
//! harness's own with a veth pair to the host, a process (e.g. `redis-server`) started inside
//! it, and iptables rules inside the namespace that drop its traffic and flush to heal.
//!
//! Only the namespace's own tables are touched, never the host's. A namespace outlives a
//! SIGKILLed harness (the kernel keeps it mounted under `/run/netns`), so names carry the
//! harness's pid (`tkc-<pid>-<n>`) and [`sweep_stale`] deletes those whose harness is gone;
//! [`NetnsHost`] deletes its own on drop.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where `ip netns add` mounts namespaces.
const NETNS_DIR: &str = "/run/netns";
const PREFIX: &str = "tkc-";

static NEXT: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespaces need root and `ip netns` (iproute2): {0}")]
    Unavailable(String),
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
}

fn run(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetnsError::Unavailable(format!("{}: {e}", args[0])))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether this process can make namespaces here (root, `ip` and `iptables` on PATH).
pub fn available() -> Result<(), NetnsError> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        return Err(NetnsError::Unavailable("not running as root".into()));
    }
    for tool in ["ip", "iptables"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Err(NetnsError::Unavailable(format!("`{tool}` is not on PATH")));
        }
    }
    Ok(())
}

/// A namespace of this harness with one address reachable from the host.
#[derive(Debug)]
pub struct NetnsHost {
    name: String,
    host_if: String,
    /// The namespace side's address (the host side is `.1` of the same /30).
    addr: std::net::Ipv4Addr,
    partitioned: bool,
}

impl NetnsHost {
    /// Creates `tkc-<pid>-<n>`, a veth pair, and addresses 10.213.x.y/30 on both ends.
    pub fn create() -> Result<NetnsHost, NetnsError> {
        available()?;
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}{pid}-{n}");
        // Interface names are at most 15 bytes.
        let tag = (pid % 100_000) * 10 + n % 10;
        let (host_if, ns_if) = (format!("tkc{tag}a"), format!("tkc{tag}b"));
        // A /30 per namespace, spread by pid so two harnesses rarely pick the same one.
        let block = (pid.wrapping_mul(31).wrapping_add(n)) % 16_384;
        let (third, fourth) = ((block / 64) as u8, ((block % 64) * 4) as u8);
        let host = std::net::Ipv4Addr::new(10, 213, third, fourth + 1);
        let addr = std::net::Ipv4Addr::new(10, 213, third, fourth + 2);
        let me = NetnsHost {
            name: name.clone(),
            host_if: host_if.clone(),
            addr,
            partitioned: false,
        };
        // From here on, dropping `me` undoes whatever was made.
        run(&["ip", "netns", "add", &name])?;
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        run(&["ip", "link", "set", &ns_if, "netns", &name])?;
        run(&["ip", "addr", "add", &format!("{host}/30"), "dev", &host_if])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", name.as_str()];
            all.extend_from_slice(args);
            run(&all)
        };
        inside(&["ip", "addr", "add", &format!("{addr}/30"), "dev", &ns_if])?;
        inside(&["ip", "link", "set", &ns_if, "up"])?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        Ok(me)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address a process inside should bind, reachable from the host.
    pub fn addr(&self) -> std::net::Ipv4Addr {
        self.addr
    }

    /// A command that runs `program` inside the namespace (`ip netns exec` execs it: the pid
    /// is the program's own, so the owner's kill and pdeathsig reach it).
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Drops every packet into the namespace: connects hang, open connections stall.
    pub fn partition(&mut self) -> Result<(), NetnsError> {
        if !self.partitioned {
            run(&[
                "ip", "netns", "exec", &self.name, "iptables", "-A", "INPUT", "-j", "DROP",
            ])?;
            self.partitioned = true;
        }
        Ok(())
    }

    /// Removes the namespace's rules.
    pub fn heal(&mut self) -> Result<(), NetnsError> {
        run(&["ip", "netns", "exec", &self.name, "iptables", "-F", "INPUT"])?;
        self.partitioned = false;
        Ok(())
    }

    /// The namespace's INPUT rules, as `iptables -S` prints them (for the record and tests).
    pub fn rules(&self) -> Result<String, NetnsError> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "iptables", "-S", "INPUT"])
            .output()
            .map_err(|e| NetnsError::Unavailable(e.to_string()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for NetnsHost {
    fn drop(&mut self) {
        // Deleting the namespace takes its rules and the veth pair (both ends) with it.
        let _ = run(&["ip", "netns", "del", &self.name]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

/// This project's namespaces (`tkc-<pid>-<n>`) whose harness is no longer alive.
pub fn stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                return false;
            };
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            !alive
        })
        .collect()
}

/// Deletes the namespaces a SIGKILLed harness left behind; returns their names.
pub fn sweep_stale() -> Vec<String> {
    stale()
        .into_iter()
        .filter(|name| run(&["ip", "netns", "del", name]).is_ok())
        .collect()
}

/// A `redis-server` inside its own namespace, bound to the namespace's address: what a real
/// partition cuts off. Dropping it kills Redis and deletes the namespace.
pub struct NetnsRedis {
    // Field order: Redis dies before its namespace goes.
    child: crate::infra::OwnedChild,
    host: NetnsHost,
    url: String,
    _dir: tempfile::TempDir,
}

impl NetnsRedis {
    pub async fn start(binary: &Path) -> Result<NetnsRedis, NetnsError> {
        let host = NetnsHost::create()?;
        let dir = tempfile::Builder::new()
            .prefix("tk-conform-netns-redis-")
            .tempdir()
            .map_err(|e| NetnsError::Unavailable(e.to_string()))?;
        let port = 6379u16;
        let mut command = host.command(binary);
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                &host.addr().to_string(),
            ])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child =
            crate::infra::OwnedChild::spawn(format!("redis in {}", host.name()), command)
                .map_err(|e| NetnsError::Unavailable(e.to_string()))?;
        let addr = std::net::SocketAddr::new(host.addr().into(), port);
        let started = std::time::Instant::now();
        loop {
            let probe = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) =
                tokio::time::timeout(std::time::Duration::from_millis(200), probe).await
            {
                break;
            }
            if child.try_exit().is_some() || started.elapsed() > std::time::Duration::from_secs(10)
            {
                return Err(NetnsError::Command {
                    command: format!("redis-server in {}", host.name()),
                    stderr: format!("not accepting connections on {addr}"),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(NetnsRedis {
            child,
            url: format!("redis://{addr}"),
            host,
            _dir: dir,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn host(&mut self) -> &mut NetnsHost {
        &mut self.host
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

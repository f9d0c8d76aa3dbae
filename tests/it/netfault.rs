//! The fault proxy against a real `redis-server` on loopback: each rule's effect, seen from a
//! client through the proxy and from a direct connection that bypasses it.

use std::net::SocketAddr;
use std::time::Duration;

use tk_conform::infra::{LocalRedis, find_redis_binary};
use tk_conform::netfault::{Direction, NetAction, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::util::have_redis;

/// How long a client here waits for a reply before calling the call indeterminate.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(400);

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    out.into_bytes()
}

/// Sends one command and reads one line of reply (enough for INCR, GET of a number, PING).
async fn call(con: &mut TcpStream, args: &[&str]) -> Result<String, String> {
    con.write_all(&resp(args))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        loop {
            let n = con
                .read(&mut byte)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed".to_string());
            }
            reply.push(byte[0]);
            if reply.ends_with(b"\r\n") {
                if reply.starts_with(b"$") && reply != b"$-1\r\n" {
                    // A bulk string: one more line holds the value.
                    let mut value = Vec::new();
                    loop {
                        con.read_exact(&mut byte)
                            .await
                            .map_err(|e| format!("read: {e}"))?;
                        value.push(byte[0]);
                        if value.ends_with(b"\r\n") {
                            return Ok(String::from_utf8_lossy(&value).trim_end().to_string());
                        }
                    }
                }
                return Ok(String::from_utf8_lossy(&reply).trim_end().to_string());
            }
        }
    };
    timeout(CLIENT_TIMEOUT, read)
        .await
        .map_err(|_| "timed out".to_string())?
}

struct Rig {
    _redis: LocalRedis,
    redis: SocketAddr,
    proxy: Proxy,
    through: SocketAddr,
}

async fn rig() -> Option<Rig> {
    if !have_redis() {
        return None;
    }
    let redis = LocalRedis::start(&find_redis_binary().unwrap())
        .await
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", redis.port()).parse().unwrap();
    let mut proxy = Proxy::new();
    let through = proxy.add("worker->redis", addr).await.unwrap();
    Some(Rig {
        _redis: redis,
        redis: addr,
        proxy,
        through,
    })
}

impl Rig {
    async fn client(&self) -> TcpStream {
        TcpStream::connect(self.through).await.unwrap()
    }

    async fn direct(&self, args: &[&str]) -> String {
        let mut con = TcpStream::connect(self.redis).await.unwrap();
        call(&mut con, args).await.unwrap()
    }

    fn apply(&self, action: NetAction) {
        let events = self.proxy.apply(|_| true, action);
        assert_eq!(events.len(), 1);
    }
}

#[tokio::test]
async fn passes_commands_through_when_no_rule_is_set() {
    let Some(rig) = rig().await else { return };
    let mut con = rig.client().await;
    assert_eq!(call(&mut con, &["INCR", "k"]).await.unwrap(), ":1");
    assert_eq!(call(&mut con, &["INCR", "k"]).await.unwrap(), ":2");
    assert_eq!(rig.direct(&["GET", "k"]).await, "2");
}

#[tokio::test]
async fn drop_replies_commits_the_call_but_the_client_times_out() {
    let Some(rig) = rig().await else { return };
    let mut con = rig.client().await;
    assert_eq!(call(&mut con, &["INCR", "k"]).await.unwrap(), ":1");
    rig.apply(NetAction::DropReplies);
    assert_eq!(
        call(&mut con, &["INCR", "k"]).await.unwrap_err(),
        "timed out"
    );
    // The request reached Redis: the increment committed although no reply came back.
    assert_eq!(rig.direct(&["GET", "k"]).await, "2");
    rig.apply(NetAction::Heal);
    // A stream that lost a reply is reset when the rule ends, never reused out of step.
    let after = call(&mut con, &["INCR", "k"]).await.unwrap_err();
    assert!(
        after.contains("closed") || after.contains("reset") || after.contains("read"),
        "{after}"
    );
    let mut fresh = rig.client().await;
    assert_eq!(call(&mut fresh, &["INCR", "k"]).await.unwrap(), ":3");
}

#[tokio::test]
async fn blackhole_forwards_nothing() {
    let Some(rig) = rig().await else { return };
    let mut con = rig.client().await;
    rig.apply(NetAction::Blackhole {
        direction: Direction::Both,
    });
    assert_eq!(
        call(&mut con, &["INCR", "k"]).await.unwrap_err(),
        "timed out"
    );
    assert_eq!(rig.direct(&["EXISTS", "k"]).await, ":0");
}

#[tokio::test]
async fn reset_closes_open_connections_and_new_ones() {
    let Some(rig) = rig().await else { return };
    let mut con = rig.client().await;
    assert_eq!(call(&mut con, &["PING"]).await.unwrap(), "+PONG");
    let events = rig.proxy.apply(|_| true, NetAction::Reset);
    assert_eq!(events[0].closed, 1);
    assert!(call(&mut con, &["PING"]).await.is_err());
    let mut during = rig.client().await;
    assert!(call(&mut during, &["INCR", "k"]).await.is_err());
    assert_eq!(rig.direct(&["EXISTS", "k"]).await, ":0");
    rig.apply(NetAction::Heal);
    let mut after = rig.client().await;
    assert_eq!(call(&mut after, &["PING"]).await.unwrap(), "+PONG");
}

#[tokio::test]
async fn partition_refuses_new_connections_and_stalls_open_ones() {
    let Some(rig) = rig().await else { return };
    let mut con = rig.client().await;
    assert_eq!(call(&mut con, &["PING"]).await.unwrap(), "+PONG");
    rig.apply(NetAction::Partition);
    // Give the accept loop its turn to close the listener.
    let mut refused = None;
    for _ in 0..100 {
        match TcpStream::connect(rig.through).await {
            // Connections already in the backlog when the listener closes are reset.
            Err(e) if e.kind() != std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                refused = Some(e.kind());
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(
        call(&mut con, &["INCR", "k"]).await.unwrap_err(),
        "timed out"
    );
    assert_eq!(rig.direct(&["EXISTS", "k"]).await, ":0");
    rig.apply(NetAction::Heal);
    // The stalled request goes through after the heal, on the same port.
    let mut reconnected = None;
    for _ in 0..100 {
        if let Ok(c) = TcpStream::connect(rig.through).await {
            reconnected = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = reconnected.expect("the link listens again after the heal");
    assert_eq!(call(&mut again, &["PING"]).await.unwrap(), "+PONG");
    let mut seen = String::new();
    for _ in 0..100 {
        seen = rig.direct(&["GET", "k"]).await;
        if seen == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen, "1",
        "the stalled INCR is delivered once the partition heals: {seen:?}"
    );
}

#[tokio::test]
async fn delay_holds_each_direction_at_least_the_fixed_time() {
    let Some(rig) = rig().await else { return };
    let mut con = rig.client().await;
    rig.apply(NetAction::Delay {
        fixed_ms: 150,
        jitter_ms: 20,
        direction: Direction::Request,
    });
    let started = Instant::now();
    assert_eq!(call(&mut con, &["INCR", "k"]).await.unwrap(), ":1");
    // A lower bound only: the request cannot arrive before its delay has passed.
    assert!(started.elapsed() >= Duration::from_millis(150));
    rig.apply(NetAction::Heal);
    assert_eq!(call(&mut con, &["INCR", "k"]).await.unwrap(), ":2");
}

#[tokio::test]
async fn every_change_is_logged_with_its_time_in_order() {
    let Some(rig) = rig().await else { return };
    rig.apply(NetAction::DropReplies);
    rig.apply(NetAction::Heal);
    rig.apply(NetAction::Partition);
    rig.apply(NetAction::Heal);
    let log = rig.proxy.log();
    let names: Vec<&str> = log.iter().map(|e| e.action.name()).collect();
    assert_eq!(names, ["drop-replies", "heal", "partition", "heal"]);
    assert!(log.windows(2).all(|w| w[0].at_us <= w[1].at_us));
    assert!(log.iter().all(|e| e.link == "worker->redis" && e.at_us > 0));
    assert!(log[2].rules.refuse_new);
}

/// Whether network namespaces can be made here; under `TK_CONFORM_REQUIRE_ALL=1` they must.
fn have_netns() -> bool {
    match tk_conform::netfault::netns::available() {
        Ok(()) => true,
        Err(e) if std::env::var("TK_CONFORM_REQUIRE_ALL").as_deref() == Ok("1") => {
            panic!("TK_CONFORM_REQUIRE_ALL=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

#[tokio::test]
async fn a_namespace_partition_with_iptables_stalls_redis_and_heals() {
    use tk_conform::infra::OwnedChild;
    use tk_conform::netfault::netns::NetnsHost;

    if !have_redis() || !have_netns() {
        return;
    }
    let mut host = NetnsHost::create().unwrap();
    let name = host.name().to_string();
    let port = 6379;
    let dir = tempfile::tempdir().unwrap();
    let mut command = host.command(&find_redis_binary().unwrap());
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            &host.addr().to_string(),
        ])
        .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _redis = OwnedChild::spawn("redis in a namespace", command).unwrap();
    let addr = SocketAddr::new(host.addr().into(), port);
    let mut con = None;
    for _ in 0..200 {
        if let Ok(Ok(c)) = timeout(CLIENT_TIMEOUT, TcpStream::connect(addr)).await {
            con = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut con = con.expect("redis in the namespace answers from the host");
    assert_eq!(call(&mut con, &["INCR", "k"]).await.unwrap(), ":1");

    host.partition().unwrap();
    assert!(host.rules().unwrap().contains("-A INPUT -j DROP"));
    assert_eq!(
        call(&mut con, &["INCR", "k"]).await.unwrap_err(),
        "timed out"
    );
    assert!(
        timeout(CLIENT_TIMEOUT, TcpStream::connect(addr))
            .await
            .is_err(),
        "a connect into a partitioned namespace hangs"
    );

    host.heal().unwrap();
    assert!(!host.rules().unwrap().contains("DROP"));
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    assert_eq!(call(&mut fresh, &["PING"]).await.unwrap(), "+PONG");
    // TCP retransmits the stalled INCR once the rule is gone (within a few RTOs).
    let mut seen = String::new();
    for _ in 0..100 {
        seen = call(&mut fresh, &["GET", "k"]).await.unwrap();
        if seen == "2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, "2", "the stalled INCR arrives after the heal");

    drop(host);
    assert!(!std::path::Path::new("/run/netns").join(&name).exists());
}

#[test]
fn namespaces_left_by_a_dead_harness_are_swept() {
    use tk_conform::netfault::netns;

    if !have_netns() {
        return;
    }
    // A pid that is surely gone: a child that has exited and been reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let name = format!("tkc-{dead}-0");
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(netns::stale().contains(&name));
    let swept = netns::sweep_stale();
    assert!(swept.contains(&name), "{swept:?}");
    assert!(!std::path::Path::new("/run/netns").join(&name).exists());
    // A live harness's namespace is never swept.
    let mine = format!("tkc-{}-99", std::process::id());
    assert!(!netns::stale().contains(&mine));
}

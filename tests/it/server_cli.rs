//! `tk-conform serve` as a process: bad policy files fail at start with the file, policy and key
//! named; SIGTERM drains in-flight calls (and open Watch streams) and exits 0; Fleet and Monitor
//! require the configured secret.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use tk_conform::backend::service_process::ServerProcess;
use tk_conform::proto;
use tk_conform::service_suites;

fn exe() -> String {
    env!("CARGO_BIN_EXE_tk-conform").to_owned()
}

fn policies() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(service_suites::POLICY_FILE)
        .display()
        .to_string()
}

async fn serve(extra: &[&str]) -> ServerProcess {
    let mut argv = vec![
        exe(),
        "serve".into(),
        "--config".into(),
        policies(),
        "--port".into(),
        "0".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    ServerProcess::start(&argv, None)
        .await
        .expect("server starts")
}

#[test]
fn a_bad_policy_file_fails_at_start_naming_file_policy_and_key() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "version: 1\nlimiters:\n  api: {{ strategy: gcra, limit: 5, period: 5 parsecs }}"
    )
    .unwrap();
    let out = std::process::Command::new(exe())
        .args(["serve", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}: policy `api`: key `period`: expected a duration",
        file.path().display()
    );
    assert!(stderr.contains(&expected), "stderr: {stderr}");
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_call_and_exits_zero() {
    // `slow-check` makes every Check take a second, so one is surely in flight at SIGTERM.
    let server = serve(&["--fault", "slow-check"]).await;
    let clients = service_suites::connect(&server.addr.to_string(), None, None)
        .await
        .unwrap();
    let (mut monitor, watch) = clients.monitor(proto::WatchRequest::default());
    let mut denials = monitor.watch(watch).await.unwrap().into_inner();
    let mut rate = clients.rate();
    let in_flight = tokio::spawn(async move {
        rate.check(proto::CheckRequest {
            policy: "burst5".into(),
            key: "drain".into(),
            cost: 1,
        })
        .await
    });
    // Bounded wait until the server says the Check is being held.
    for _ in 0..500 {
        if server.stderr_tail().contains("slow-check: holding a Check") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.stderr_tail().contains("slow-check: holding a Check"),
        "{}",
        server.stderr_tail()
    );
    server.signal(Signal::SIGTERM);
    let answer = in_flight
        .await
        .unwrap()
        .expect("the in-flight Check is answered, not cut");
    assert!(answer.into_inner().decision.unwrap().allowed);
    // The open Watch stream ends instead of holding the drain open.
    let end = tokio::time::timeout(Duration::from_secs(10), denials.message())
        .await
        .expect("watch ends");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    let status = server.stop().await;
    assert_eq!(status, "exit status: 0");
}

#[tokio::test]
async fn fleet_and_monitor_require_the_configured_secret() {
    let server = serve(&[
        "--fleet-secret",
        "fleet-s3cret",
        "--monitor-secret",
        "mon-s3cret",
    ])
    .await;
    let addr = server.addr.to_string();
    let reserve = || proto::ReserveRequest {
        policy: "federated".into(),
        wants: 1,
        ..Default::default()
    };
    for (fleet_secret, ok) in [
        (None, false),
        (Some("wrong"), false),
        (Some("fleet-s3cret"), true),
    ] {
        let clients = service_suites::connect(&addr, fleet_secret.map(String::from), None)
            .await
            .unwrap();
        let (mut fleet, request) = clients.fleet(reserve());
        let result = fleet.reserve(request).await;
        match ok {
            true => assert!(result.is_ok(), "{fleet_secret:?}: {result:?}"),
            false => assert_eq!(
                result.unwrap_err().code(),
                tonic::Code::Unauthenticated,
                "{fleet_secret:?}"
            ),
        }
    }
    // A bearer token works too.
    let clients = service_suites::connect(&addr, None, None).await.unwrap();
    let (mut monitor, mut request) = clients.monitor(proto::GetSnapshotRequest {});
    assert_eq!(
        monitor
            .get_snapshot(tonic::Request::new(proto::GetSnapshotRequest {}))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    request
        .metadata_mut()
        .insert("authorization", "Bearer mon-s3cret".parse().unwrap());
    assert!(monitor.get_snapshot(request).await.is_ok());
    // The rate limiter door needs no secret.
    let checked = clients
        .rate()
        .check(proto::CheckRequest {
            policy: "burst5".into(),
            key: "k".into(),
            cost: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        checked.into_inner().decision.unwrap().remaining,
        4,
        "cost 0 means 1"
    );
    assert_eq!(server.stop().await, "exit status: 0");
}

#[tokio::test]
async fn without_a_secret_loopback_callers_are_served() {
    let server = serve(&[]).await;
    let clients = service_suites::connect(&server.addr.to_string(), None, None)
        .await
        .unwrap();
    let (mut monitor, request) = clients.monitor(proto::GetSnapshotRequest {});
    let snapshot = monitor
        .get_snapshot(request)
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(snapshot.policies.iter().any(|p| p.name == "burst5"));
    assert_eq!(server.stop().await, "exit status: 0");
}

/// A flow map inside a flow map loads here but not on ThrottleKit's server: the reference
/// server says so at start-up, naming the file and line.
#[tokio::test]
async fn a_nested_flow_map_is_warned_about_at_start() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "version: 1\nlimiters:\n  ok: {{ strategy: gcra, limit: 5, period: 1h }}\n  cc: {{ concurrency: {{ minLimit: 1, maxLimit: 1 }} }}"
    )
    .unwrap();
    let argv = [
        exe(),
        "serve".into(),
        "--config".into(),
        file.path().display().to_string(),
        "--port".into(),
        "0".into(),
    ];
    let server = ServerProcess::start(&argv, None)
        .await
        .expect("it still loads");
    let stderr = server.stderr_tail();
    let expected = format!(
        "warning: {}:4: a flow map `{{ ... }}` inside a flow map",
        file.path().display()
    );
    assert!(stderr.contains(&expected), "stderr: {stderr}");
    server.stop().await;
}

#[test]
fn bad_serve_flags_are_refused_with_the_flag_named() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--lease-ttl-ms", "0"],
            "--lease-ttl-ms must be 1 to 86400000, got 0",
        ),
        (
            &["--compat", "throttlekit", "--lease-ttl-ms", "1000"],
            "--lease-ttl-ms cannot be combined with --compat throttlekit",
        ),
        (
            &["--node-id", "tk 0"],
            "--node-id must be 1 to 128 printable ASCII",
        ),
        (
            &["--compat", "nodejs"],
            "invalid value 'nodejs' for '--compat <COMPAT>'",
        ),
    ];
    for (flags, expected) in cases {
        let out = std::process::Command::new(exe())
            .args(["serve", "--config", &policies(), "--port", "0"])
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}

/// The ThrottleKit-like mode holds back Watch's response headers until the first denial (as
/// ThrottleKit does), so a client that waits for the stream to open first waits in vain; the
/// denial then arrives as the stream's first message.
#[tokio::test]
async fn a_throttlekit_like_watch_sends_no_headers_until_its_first_event() {
    let server = serve(&["--compat", "throttlekit"]).await;
    let clients = service_suites::connect(&server.addr.to_string(), None, None)
        .await
        .unwrap();
    let (mut monitor, request) = clients.monitor(proto::WatchRequest {
        policy: "watched".into(),
    });
    let opening = tokio::spawn(async move { monitor.watch(request).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!opening.is_finished(), "headers came before any event");
    let mut rate = clients.rate();
    let check = || proto::CheckRequest {
        policy: "watched".into(),
        key: "headers".into(),
        cost: 1,
    };
    rate.check(check()).await.unwrap();
    let denied = rate.check(check()).await.unwrap().into_inner();
    assert!(!denied.decision.unwrap().allowed);
    let mut stream = tokio::time::timeout(Duration::from_secs(5), opening)
        .await
        .expect("the stream opens with the first denial")
        .unwrap()
        .expect("Watch")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .expect("one event");
    let event = first.denial.expect("a DenialEvent");
    assert_eq!(
        (event.policy.as_str(), event.key.as_str()),
        ("watched", "headers")
    );
    assert_eq!(
        (event.axis.as_str(), event.limit, event.remaining),
        ("rate", 1, 0)
    );
    drop(stream);
    server.stop().await;
}

/// A Check through a fresh connection, retried (bounded) while the server sheds connections.
async fn fresh_caller_is_served(addr: std::net::SocketAddr) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..80 {
        let attempt = async {
            let clients = service_suites::connect(&addr.to_string(), None, None)
                .await
                .map_err(|e| e.to_string())?;
            clients
                .rate()
                .check(proto::CheckRequest {
                    policy: "burst5".into(),
                    key: "fresh".into(),
                    cost: 1,
                })
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "no answer within 5 s".into(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

/// Whether the server closes `stream` (EOF or reset) within a bound.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // the server's SETTINGS and friends
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_do_not_lock_callers_out_and_are_closed() {
    // 300 connections that never speak, against a server with 128 descriptors: without a
    // handshake bound and a cap below the descriptor limit, every later caller hangs.
    let script = format!(
        "ulimit -n 128 && exec {} serve --config {} --port 0 --handshake-timeout-ms 500 \
         --idle-timeout-ms 2000",
        shell_words::quote(&exe()),
        shell_words::quote(&policies())
    );
    let server = ServerProcess::start(&["sh".into(), "-c".into(), script], None)
        .await
        .expect("server starts");
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    fresh_caller_is_served(server.addr)
        .await
        .expect("a fresh caller is served while idle connections are open");
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream).await,
            "idle connection {i} (no HTTP/2 preface) was never closed"
        );
    }
    // A connection that did the HTTP/2 handshake and then went quiet is closed too.
    use tokio::io::AsyncWriteExt;
    let mut quiet = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    quiet
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut quiet).await,
        "an idle HTTP/2 connection was never closed"
    );
    // And the server still serves.
    fresh_caller_is_served(server.addr).await.unwrap();
}

#[test]
fn connection_limits_are_bounds_checked() {
    for (flag, value) in [
        ("--handshake-timeout-ms", "0"),
        ("--idle-timeout-ms", "0"),
        ("--max-connections", "0"),
        ("--max-connections", "99999999999"),
        ("--key-prefix", "a*b"),
        ("--key-prefix", "has space"),
        ("--key-prefix", ""),
    ] {
        let out = std::process::Command::new(exe())
            .args(["serve", "--config", &policies(), flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

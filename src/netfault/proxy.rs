//! The proxy: one loopback listener per link, two pumps per connection, rules from a `watch`.
//!
//! Every connection task watches the link's state: a `reset` (a new epoch) closes it with a TCP
//! reset, and so does the end of a rule that discarded some of its bytes. Dropping the [`Link`]
//! drops the state's sender, which ends the accept loop and every connection of the link.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::rules::{Direction, Flow, NetAction, NetEvent, Rules};

/// How long the proxy waits for the upstream to accept a connection.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(2);
/// Most links one proxy holds (a scenario has a few per group and server).
pub const MAX_LINKS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy link `{link}`: cannot listen on 127.0.0.1: {source}")]
    Bind {
        link: String,
        source: std::io::Error,
    },
    #[error("proxy link `{0}` is defined twice")]
    Duplicate(String),
    #[error("the proxy holds at most {MAX_LINKS} links")]
    TooMany,
}

#[derive(Debug, Clone, Copy, Default)]
struct State {
    rules: Rules,
    /// Bumped by `reset`: connections of an older epoch close.
    epoch: u64,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// One proxied link: clients connect to [`Link::addr`], the link connects to `upstream`.
pub struct Link {
    name: String,
    addr: SocketAddr,
    upstream: SocketAddr,
    state: watch::Sender<State>,
    open: Arc<AtomicUsize>,
}

impl Link {
    /// Listens on a free loopback port and starts accepting.
    pub async fn start(name: &str, upstream: SocketAddr) -> Result<Link, ProxyError> {
        let listener =
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| ProxyError::Bind {
                    link: name.into(),
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            link: name.into(),
            source,
        })?;
        let (state, rx) = watch::channel(State::default());
        let open = Arc::new(AtomicUsize::new(0));
        tokio::spawn(accept_loop(listener, addr, upstream, rx, open.clone()));
        Ok(Link {
            name: name.into(),
            addr,
            upstream,
            state,
            open,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    pub fn rules(&self) -> Rules {
        self.state.borrow().rules
    }

    /// Switches the link's rules now and says what changed.
    pub fn apply(&self, action: NetAction) -> NetEvent {
        let rules = action.rules();
        let closed = if action == NetAction::Reset {
            self.open.load(Ordering::SeqCst)
        } else {
            0
        };
        self.state.send_modify(|s| {
            s.rules = rules;
            if action == NetAction::Reset {
                s.epoch += 1;
            }
        });
        NetEvent {
            at_us: now_us(),
            link: self.name.clone(),
            action,
            rules,
            closed,
        }
    }
}

/// Every link of a run and the log of every change made to them.
#[derive(Default)]
pub struct Proxy {
    links: Vec<Link>,
    log: Mutex<Vec<NetEvent>>,
}

impl Proxy {
    pub fn new() -> Proxy {
        Proxy::default()
    }

    /// Adds a link called `name` in front of `upstream`; returns the address clients use.
    pub async fn add(
        &mut self,
        name: &str,
        upstream: SocketAddr,
    ) -> Result<SocketAddr, ProxyError> {
        if self.links.iter().any(|l| l.name == name) {
            return Err(ProxyError::Duplicate(name.into()));
        }
        if self.links.len() >= MAX_LINKS {
            return Err(ProxyError::TooMany);
        }
        let link = Link::start(name, upstream).await?;
        let addr = link.addr();
        self.links.push(link);
        Ok(addr)
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// Applies `action` to every link `pick` selects, logging each change; returns the events.
    pub fn apply(&self, pick: impl Fn(&str) -> bool, action: NetAction) -> Vec<NetEvent> {
        let events: Vec<NetEvent> = self
            .links
            .iter()
            .filter(|l| pick(&l.name))
            .map(|l| l.apply(action))
            .collect();
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(events.iter().cloned());
        events
    }

    /// Every change so far, in the order made.
    pub fn log(&self) -> Vec<NetEvent> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut state: watch::Receiver<State>,
    open: Arc<AtomicUsize>,
) {
    let mut listener = Some(listener);
    loop {
        let refuse = state.borrow_and_update().rules.refuse_new;
        if refuse {
            // Closing the listener is what makes connects fail with "connection refused".
            listener = None;
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        let Some(l) = listener.as_ref() else {
            match rebind(addr).await {
                Some(l) => listener = Some(l),
                None => return,
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let rx = state.clone();
                let open = open.clone();
                tokio::spawn(async move {
                    open.fetch_add(1, Ordering::SeqCst);
                    serve(client, upstream, rx).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// The same port again after a partition (SO_REUSEADDR is set by tokio on Unix).
async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..50 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Closes with a TCP reset instead of a FIN.
fn reset(stream: TcpStream) {
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn serve(client: TcpStream, upstream: SocketAddr, mut state: watch::Receiver<State>) {
    let start = *state.borrow_and_update();
    if start.rules.reset_new {
        reset(client);
        return;
    }
    let server = match tokio::time::timeout(UPSTREAM_CONNECT, TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => s,
        _ => {
            reset(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let tainted = AtomicBool::new(false);
    let mut watcher = state.clone();
    let end = tokio::select! {
        _ = pump(&mut cr, &mut sw, Direction::Request, state.clone(), &tainted) => End::Closed,
        _ = pump(&mut sr, &mut cw, Direction::Reply, state.clone(), &tainted) => End::Closed,
        _ = async {
            loop {
                if watcher.changed().await.is_err() {
                    return;
                }
                let now = *watcher.borrow_and_update();
                let discarding = now.rules.request == Flow::Discard || now.rules.reply == Flow::Discard;
                if now.epoch != start.epoch || (tainted.load(Ordering::SeqCst) && !discarding) {
                    return;
                }
            }
        } => End::Reset,
    };
    if let (Ok(client), Ok(server)) = (cr.reunite(cw), sr.reunite(sw)) {
        match end {
            End::Reset => {
                reset(client);
                reset(server);
            }
            End::Closed => {
                drop(client);
                drop(server);
            }
        }
    }
}

enum End {
    Closed,
    Reset,
}

/// Moves bytes one way under the link's rules until either side closes or fails.
async fn pump(
    src: &mut OwnedReadHalf,
    dst: &mut OwnedWriteHalf,
    dir: Direction,
    mut state: watch::Receiver<State>,
    tainted: &AtomicBool,
) {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut last_due = Instant::now();
    let mut eof = false;
    loop {
        let flow = state.borrow_and_update().rules.flow(dir);
        if flow == Flow::Stall {
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        let next_due = queue.front().map(|(t, _)| *t);
        tokio::select! {
            read = src.read(&mut buf), if !eof => {
                let n = match read {
                    Ok(n) => n,
                    Err(_) => return,
                };
                if n == 0 {
                    eof = true;
                    if queue.is_empty() {
                        return;
                    }
                    continue;
                }
                match flow {
                    Flow::Discard => tainted.store(true, Ordering::SeqCst),
                    Flow::Pass if queue.is_empty() => {
                        if dst.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Flow::Pass | Flow::Stall => queue.push_back((last_due, buf[..n].to_vec())),
                    Flow::Delay { fixed_ms, jitter_ms } => {
                        let jitter = if jitter_ms > 0 {
                            rand::rng().random_range(0..=jitter_ms)
                        } else {
                            0
                        };
                        let due = (Instant::now() + Duration::from_millis(fixed_ms + jitter)).max(last_due);
                        last_due = due;
                        queue.push_back((due, buf[..n].to_vec()));
                    }
                }
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                if let Some((_, bytes)) = queue.pop_front()
                    && dst.write_all(&bytes).await.is_err()
                {
                    return;
                }
                if eof && queue.is_empty() {
                    return;
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

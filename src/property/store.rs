//! The harness's own look into the Redis it handed the adapter: which keys the engine wrote,
//! their TTLs (hygiene), removing TTLs to seed the state a crash between two round trips
//! leaves, and watching (MONITOR) whether the engine writes its keys atomically.

use std::time::Duration;

use futures::StreamExt;
use redis::aio::MultiplexedConnection;

use super::family::Shape;

/// Keys per decision key an engine may keep (counters keep two windows, some a lock or a
/// sequence) before hygiene calls the key count unbounded.
const KEYS_PER_KEY: usize = 4;

pub struct Store {
    client: redis::Client,
    con: MultiplexedConnection,
    /// The harness started this Redis: every key in it is the engine's.
    owned: bool,
    /// Every namespace of the run starts with this.
    run_prefix: String,
}

/// What MONITOR saw of the engine's writes during a stretch of decisions.
#[derive(Debug, Default)]
pub struct Writes {
    /// Writes that create or change a key without setting its expiry, sent outside a script or
    /// transaction: a crash right after one leaves a key without a TTL.
    pub split: Vec<String>,
    /// How many commands touching the namespace were seen.
    pub seen: usize,
}

/// Why the store could not be read, or the keys the engine left fail hygiene.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis url {url}: {source}")]
    Url {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot reach the harness's redis at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: crate::infra::RedisError,
    },
    /// `command` is what was sent, e.g. `PTTL <key>`.
    #[error("{command}: {source}")]
    Command {
        command: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("MONITOR ended before the watch's end marker")]
    MonitorEnded,
    #[error(
        "hygiene: key `{key}` has no TTL (PTTL -1); every key the engine writes must expire, here within {bound} ms"
    )]
    NoTtl { key: String, bound: f64 },
    #[error(
        "hygiene: key `{key}` has PTTL {ttl} ms, above the family's bound of {bound} ms ({family_bound} ms for {family} plus {slack_ms} ms slack)"
    )]
    TtlTooLong {
        key: String,
        ttl: i64,
        bound: f64,
        family_bound: f64,
        family: &'static str,
        slack_ms: f64,
    },
    #[error(
        "hygiene: {count} keys in the namespace after a suite that used {keys_used} keys (at most {most} expected): {sample}"
    )]
    TooManyKeys {
        count: usize,
        keys_used: usize,
        most: usize,
        /// The first few keys, comma-separated.
        sample: String,
    },
    #[error(
        "hygiene: key `{key}` in the harness's redis does not carry the run's namespace `{run_prefix}`; an adapter must put the namespace of `reset` into every key it writes"
    )]
    Stray { key: String, run_prefix: String },
}

fn command(command: impl Into<String>) -> impl FnOnce(redis::RedisError) -> StoreError {
    let command = command.into();
    move |source| StoreError::Command { command, source }
}

impl Store {
    pub async fn connect(url: &str, owned: bool, run_prefix: &str) -> Result<Store, StoreError> {
        let client = redis::Client::open(url).map_err(|source| StoreError::Url {
            url: url.into(),
            source,
        })?;
        let con = crate::infra::connect(url)
            .await
            .map_err(|source| StoreError::Unreachable {
                url: url.into(),
                source,
            })?;
        Ok(Store {
            client,
            con,
            owned,
            run_prefix: run_prefix.to_owned(),
        })
    }

    async fn scan(&mut self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut self.con)
                .await
                .map_err(command("SCAN"))?;
            keys.extend(batch);
            cursor = next;
            // Bounded: a keyspace this large is itself a hygiene failure.
            if cursor == 0 || keys.len() > 100_000 {
                return Ok(keys);
            }
        }
    }

    /// The keys carrying `namespace`.
    pub async fn keys(&mut self, namespace: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = self.scan(&format!("*{}*", glob_escape(namespace))).await?;
        // `…:1` must not pick up `…:10`'s keys.
        keys.retain(|k| carries(k, namespace));
        keys.sort();
        Ok(keys)
    }

    pub async fn pttl(&mut self, key: &str) -> Result<i64, StoreError> {
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.con)
            .await
            .map_err(command(format!("PTTL {key}")))
    }

    /// Removes the TTL of every key of `namespace`; returns them.
    pub async fn persist_all(&mut self, namespace: &str) -> Result<Vec<String>, StoreError> {
        let keys = self.keys(namespace).await?;
        for key in &keys {
            let _: i64 = redis::cmd("PERSIST")
                .arg(key)
                .query_async(&mut self.con)
                .await
                .map_err(command(format!("PERSIST {key}")))?;
        }
        Ok(keys)
    }

    /// Hygiene after a suite: every key of the namespace expires within the family's bound
    /// (plus `slack_ms`: TTLs in whole seconds, or an explicit clock ahead of the wall), and
    /// their number is bounded by the keys the suite used. In a Redis the harness started,
    /// every key must also carry the run's namespace.
    pub async fn hygiene(
        &mut self,
        namespace: &str,
        shape: &Shape,
        keys_used: usize,
        slack_ms: f64,
    ) -> Result<String, StoreError> {
        let keys = self.keys(namespace).await?;
        let bound = shape.ttl_bound + slack_ms;
        for key in &keys {
            let ttl = self.pttl(key).await?;
            if ttl == -1 {
                return Err(StoreError::NoTtl {
                    key: key.clone(),
                    bound,
                });
            }
            if bound.is_finite() && ttl as f64 > bound {
                return Err(StoreError::TtlTooLong {
                    key: key.clone(),
                    ttl,
                    bound,
                    family_bound: shape.ttl_bound,
                    family: shape.family.name(),
                    slack_ms,
                });
            }
        }
        let most = KEYS_PER_KEY * keys_used.max(1) + KEYS_PER_KEY;
        if keys.len() > most {
            return Err(StoreError::TooManyKeys {
                count: keys.len(),
                keys_used,
                most,
                sample: keys.iter().take(8).cloned().collect::<Vec<_>>().join(", "),
            });
        }
        if self.owned {
            let strays: Vec<String> = self
                .scan("*")
                .await?
                .into_iter()
                .filter(|k| !k.contains(&self.run_prefix))
                .collect();
            if let Some(stray) = strays.first() {
                return Err(StoreError::Stray {
                    key: stray.clone(),
                    run_prefix: self.run_prefix.clone(),
                });
            }
        }
        Ok(if keys.is_empty() {
            "no keys in the harness's redis".into()
        } else {
            format!("{} keys, each with a TTL ≤ {bound} ms", keys.len())
        })
    }

    /// Starts watching every command the server runs.
    pub async fn watch(&self) -> Result<Watch, StoreError> {
        // The monitor connection has sent MONITOR by the time it is returned.
        let monitor = self
            .client
            .get_async_monitor()
            .await
            .map_err(command("MONITOR"))?;
        Ok(Watch {
            stream: Box::pin(monitor.into_on_message::<String>()),
        })
    }

    /// Ends a watch: every command up to a marker, classified for `namespace`.
    pub async fn writes(&mut self, watch: Watch, namespace: &str) -> Result<Writes, StoreError> {
        let marker = format!("tk-conform-watch-end-{namespace}");
        let _: String = redis::cmd("ECHO")
            .arg(&marker)
            .query_async(&mut self.con)
            .await
            .map_err(command("ECHO"))?;
        let mut stream = watch.stream;
        let mut lines = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(line)) if line.contains(&marker) => break,
                Ok(Some(line)) => lines.push(line),
                Ok(None) | Err(_) => {
                    return Err(StoreError::MonitorEnded);
                }
            }
        }
        Ok(classify(&lines, namespace))
    }
}

pub struct Watch {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = String> + Send>>,
}

/// `key` belongs to `namespace` (not to a longer namespace sharing its text).
fn carries(key: &str, namespace: &str) -> bool {
    key.match_indices(namespace).any(|(i, _)| {
        let next = key[i + namespace.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_digit())
    })
}

fn glob_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Commands that create or change a key but leave its expiry as it was (or unset).
const NO_EXPIRY_WRITES: [&str; 22] = [
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "DECR",
    "DECRBY",
    "SETNX",
    "HSET",
    "HMSET",
    "HSETNX",
    "HINCRBY",
    "HINCRBYFLOAT",
    "ZADD",
    "ZINCRBY",
    "RPUSH",
    "LPUSH",
    "LSET",
    "LINSERT",
    "SADD",
    "APPEND",
    "SETRANGE",
    "GETSET",
    "MSET",
];

/// Splits MONITOR lines (`1700000000.1 [0 127.0.0.1:5000] "INCR" "k"`) into writes a crash can
/// split from their expiry: top-level (not `lua`), outside MULTI/EXEC, touching the namespace.
fn classify(lines: &[String], namespace: &str) -> Writes {
    let mut writes = Writes::default();
    let mut in_multi: std::collections::BTreeSet<String> = Default::default();
    for line in lines {
        let Some((source, args)) = parse_monitor_line(line) else {
            continue;
        };
        let Some(command) = args.first().map(|c| c.to_ascii_uppercase()) else {
            continue;
        };
        match command.as_str() {
            "MULTI" => {
                in_multi.insert(source.clone());
                continue;
            }
            "EXEC" | "DISCARD" => {
                in_multi.remove(&source);
                continue;
            }
            _ => {}
        }
        if !args.iter().skip(1).any(|a| carries(a, namespace)) {
            continue;
        }
        writes.seen += 1;
        let scripted = source.ends_with(" lua") || in_multi.contains(&source);
        let sets_expiry = command == "SET"
            && args.iter().skip(2).any(|a| {
                matches!(
                    a.to_ascii_uppercase().as_str(),
                    "EX" | "PX" | "EXAT" | "PXAT"
                )
            });
        let no_expiry =
            NO_EXPIRY_WRITES.contains(&command.as_str()) || (command == "SET" && !sets_expiry);
        if !scripted && no_expiry {
            writes.split.push(args.join(" "));
        }
    }
    writes
}

/// One MONITOR line (`1700000000.1 [0 127.0.0.1:5000] "INCR" "k"`) as its source (`0
/// 127.0.0.1:5000`, or `0 lua` inside a script) and its arguments, unquoted the way Redis
/// quoted them (`\\n`, `\\"`, `\\xHH`, …), so a script's code reads back byte for byte.
pub(crate) fn parse_monitor_line(line: &str) -> Option<(String, Vec<String>)> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let source = line[open + 1..close].to_owned();
    let mut args = Vec::new();
    let mut rest = line[close + 1..].chars().peekable();
    while let Some(c) = rest.next() {
        if c != '"' {
            continue;
        }
        let mut arg: Vec<u8> = Vec::new();
        while let Some(c) = rest.next() {
            match c {
                '\\' => match rest.next() {
                    Some('n') => arg.push(b'\n'),
                    Some('r') => arg.push(b'\r'),
                    Some('t') => arg.push(b'\t'),
                    Some('a') => arg.push(0x07),
                    Some('b') => arg.push(0x08),
                    Some('x') => {
                        let hex: String =
                            [rest.next(), rest.next()].into_iter().flatten().collect();
                        arg.push(u8::from_str_radix(&hex, 16).unwrap_or(b'?'));
                    }
                    Some(n) => {
                        let mut buf = [0; 4];
                        arg.extend_from_slice(n.encode_utf8(&mut buf).as_bytes());
                    }
                    None => {}
                },
                '"' => break,
                c => {
                    let mut buf = [0; 4];
                    arg.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        args.push(String::from_utf8_lossy(&arg).into_owned());
    }
    Some((source, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_are_classified_by_atomicity() {
        let ns = "tkc:7";
        let lines: Vec<String> = [
            r#"1.0 [0 127.0.0.1:5000] "EVALSHA" "abc" "1" "tkc:7:k" "1""#,
            r#"1.1 [0 lua] "incrby" "tkc:7:k" "1""#,
            r#"1.2 [0 127.0.0.1:5001] "MULTI""#,
            r#"1.3 [0 127.0.0.1:5001] "INCR" "tkc:7:m""#,
            r#"1.4 [0 127.0.0.1:5001] "EXEC""#,
            r#"1.5 [0 127.0.0.1:5002] "SET" "tkc:7:s" "3" "PX" "1000""#,
            r#"1.6 [0 127.0.0.1:5002] "INCR" "tkc:70:other""#,
            r#"1.7 [0 127.0.0.1:5002] "INCR" "tkc:7:split""#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let writes = classify(&lines, ns);
        assert_eq!(writes.split, vec!["INCR tkc:7:split".to_string()]);
        assert_eq!(writes.seen, 5);
    }

    #[test]
    fn namespaces_do_not_swallow_longer_ones() {
        assert!(carries("x:tkc:1:key", "tkc:1"));
        assert!(carries("tkc:1", "tkc:1"));
        assert!(!carries("tkc:10:key", "tkc:1"));
        assert_eq!(glob_escape("a*b[c]"), "a\\*b\\[c\\]");
    }
}

//! Secrets out of everything the harness prints or writes: the password of a store URL
//! (`redis://user:secret@host:6379` → `redis://user:***@host:6379`). One function for every
//! command, so a run folder, a battle's result files and stderr all show the same redacted form.

/// What a redacted password reads as.
pub const REDACTED: &str = "***";

/// `url` with the password of its userinfo (and any `password=` query value) replaced by
/// [`REDACTED`]. A URL without a password comes back unchanged.
pub fn redact_url(url: &str) -> String {
    redact_text(url)
}

/// `text` with every URL password in it redacted (see [`redact_url`]); for messages that may
/// quote a URL, such as a client library's error.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#' or a character no URL holds here.
        let end = after
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || "\"'<>,;)]}`".contains(c)
            })
            .unwrap_or(after.len());
        let (authority, tail) = after.split_at(end);
        match authority.rfind('@') {
            Some(user_end) => {
                let userinfo = &authority[..user_end];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(REDACTED);
                    }
                    // A bare userinfo is a password for Redis (`redis://secret@host`).
                    None if !userinfo.is_empty() => out.push_str(REDACTED),
                    None => {}
                }
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        // The path, up to a query.
        let path_end = tail
            .find(|c: char| c == '?' || c == '#' || c.is_whitespace() || "\"'<>,;)]}`".contains(c))
            .unwrap_or(tail.len());
        out.push_str(&tail[..path_end]);
        rest = &tail[path_end..];
        // A `password=` query parameter of this URL.
        if let Some(query) = rest.strip_prefix('?') {
            let end = query
                .find(|c: char| c.is_whitespace() || c == '#' || "\"'<>,;)]}`".contains(c))
                .unwrap_or(query.len());
            let redacted: Vec<String> = query[..end]
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                        format!("{k}={REDACTED}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            out.push('?');
            out.push_str(&redacted.join("&"));
            rest = &query[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_the_rest_kept() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            ("redis://alice:hunter2@db:6379", "redis://alice:***@db:6379"),
            ("rediss://hunter2@db", "rediss://***@db"),
            (
                "redis://db:6379/?password=hunter2&db=1",
                "redis://db:6379/?password=***&db=1",
            ),
            ("redis://al:p@ss@db:1", "redis://al:***@db:1"),
            (
                "cannot reach Redis at redis://:hunter2@db:1: refused; also redis://x:y@z",
                "cannot reach Redis at redis://:***@db:1: refused; also redis://x:***@z",
            ),
            ("no url here", "no url here"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_text(input), want, "{input}");
            assert!(!redact_url(input).contains("hunter2"), "{input}");
        }
    }
}

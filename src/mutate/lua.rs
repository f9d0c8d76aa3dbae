//! Just enough Lua lexing to mutate code and never its strings or comments: which bytes of a
//! line are code. Handles `'…'` and `"…"` strings with backslash escapes and `--` comments to
//! the end of the line (the contract's scripts use no long brackets `[[ … ]]`; a line that opens
//! one is treated as comment from there on, so it is never mutated).

/// `mask[i]` is true when byte `i` of `line` is code (outside strings and comments).
pub fn code_mask(line: &str) -> Vec<bool> {
    let bytes = line.as_bytes();
    let mut mask = vec![false; bytes.len()];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => break,
            b'[' if bytes.get(i + 1) == Some(&b'[') => break,
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            _ => {
                mask[i] = true;
                i += 1;
            }
        }
    }
    mask
}

/// Where the line's `--` comment starts (the line's length when it has none).
pub fn comment_start(line: &str) -> usize {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => return i,
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Every string literal before the line's comment: `(start of the opening quote, end past the
/// closing quote, contents)`.
pub fn string_literals(line: &str) -> Vec<(usize, usize, &str)> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => break,
            quote @ (b'\'' | b'"') => {
                let open = i;
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let close = i.min(bytes.len());
                i += 1;
                out.push((open, i.min(bytes.len()), &line[open + 1..close]));
            }
            _ => i += 1,
        }
    }
    out
}

/// Where `redis.call('<command>'` starts, for each such call on the line.
pub fn find_calls(line: &str, command: &str) -> Vec<usize> {
    string_literals(line)
        .into_iter()
        .filter(|(_, _, text)| text.eq_ignore_ascii_case(command))
        .filter_map(|(open, _, _)| {
            let before = line[..open].trim_end();
            before
                .strip_suffix("redis.call(")
                .or_else(|| before.strip_suffix("redis.pcall("))
                .map(|rest| rest.len())
        })
        .collect()
}

/// Byte offsets where `needle` starts entirely inside code.
pub fn find_in_code(line: &str, needle: &str) -> Vec<usize> {
    let mask = code_mask(line);
    line.match_indices(needle)
        .map(|(at, _)| at)
        .filter(|&at| (at..at + needle.len()).all(|i| mask[i]))
        .collect()
}

/// The index just past the `)` that closes the `(` at `open`, skipping strings.
pub fn matching_paren(line: &str, open: usize) -> Option<usize> {
    let mask = code_mask(line);
    let mut depth = 0usize;
    for (i, b) in line.bytes().enumerate().skip(open) {
        if !mask[i] {
            continue;
        }
        match b {
            b'(' | b'{' => depth += 1,
            b')' | b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits `text` at its top-level commas (outside brackets and strings), with byte ranges.
pub fn top_level_items(text: &str) -> Vec<(usize, usize)> {
    let mask = code_mask(text);
    let mut items = Vec::new();
    let (mut depth, mut begin) = (0i32, 0usize);
    for (i, b) in text.bytes().enumerate() {
        if !mask[i] {
            continue;
        }
        match b {
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b',' if depth == 0 => {
                items.push((begin, i));
                begin = i + 1;
            }
            _ => {}
        }
    }
    items.push((begin, text.len()));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_comments_are_not_code() {
        let line = "if x <= 0 then fail(name, 'a number >= 0', y) end -- x < 1";
        let hits = find_in_code(line, "<=");
        assert_eq!(hits, vec![5]);
        assert!(find_in_code(line, ">=").is_empty());
        assert!(find_in_code(line, "< 1").is_empty());
        assert_eq!(find_in_code(r#"local s = "a\"<" .. b < c"#, "<"), vec![22]);
    }

    #[test]
    fn parens_and_items() {
        let line = "redis.call('SET', k, f(1, ')'), 'PX', e)";
        let open = line.find('(').unwrap();
        assert_eq!(matching_paren(line, open), Some(line.len()));
        let items = top_level_items(" 1, f(a, b), 'x,y', 0 ");
        assert_eq!(items.len(), 4);
    }
}

//! The mutation operators: plausible one-line bugs in a Lua check script.
//!
//! Each mutant changes exactly one line, so it is shown as a one-line diff. Only `check` scripts
//! are mutated: the vectors never call a `read` script, so its mutants would say nothing about
//! the vectors.

use std::fmt;

use super::lua::{
    code_mask, comment_start, find_calls, find_in_code, matching_paren, string_literals,
    top_level_items,
};

/// The catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `<` ↔ `<=`, `>` ↔ `>=`.
    FlipComparison,
    /// `math.floor` ↔ `math.ceil`.
    FloorCeil,
    /// `+ 1` or `- 1` on an arithmetic expression (an assignment or a reply field).
    OffByOne,
    /// The PEXPIRE (or SET … PX) removed.
    DropExpiry,
    /// The PEXPIRE (or SET … PX) time halved.
    HalveExpiry,
    /// Two adjacent ARGV reads swapped.
    SwapArgv,
    /// A write (SET, HSET, ZADD, ZREMRANGEBYSCORE, DEL, …) deleted.
    DeleteWrite,
    /// The cost read replaced by the constant 1.
    CostOne,
}

impl Operator {
    pub const ALL: [Operator; 8] = [
        Operator::FlipComparison,
        Operator::FloorCeil,
        Operator::OffByOne,
        Operator::DropExpiry,
        Operator::HalveExpiry,
        Operator::SwapArgv,
        Operator::DeleteWrite,
        Operator::CostOne,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operator::FlipComparison => "flip-comparison",
            Operator::FloorCeil => "floor-ceil",
            Operator::OffByOne => "off-by-one",
            Operator::DropExpiry => "drop-expiry",
            Operator::HalveExpiry => "halve-expiry",
            Operator::SwapArgv => "swap-argv",
            Operator::DeleteWrite => "delete-write",
            Operator::CostOne => "cost-one",
        }
    }

    pub fn from_name(name: &str) -> Option<Operator> {
        Operator::ALL.into_iter().find(|o| o.name() == name)
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One mutant: a script with one line changed.
#[derive(Debug, Clone)]
pub struct Mutant {
    /// The manifest's script name (`gcra.check`) and file (`gcra.check.lua`).
    pub script: String,
    pub file: String,
    pub operator: Operator,
    /// 1-based line number, the line before and after.
    pub line: usize,
    pub before: String,
    pub after: String,
    /// The whole mutated script.
    pub code: String,
}

impl Mutant {
    /// `gcra.check.lua:52 flip-comparison: `if now < allowAt then` → `if now <= allowAt then``
    pub fn diff(&self) -> String {
        format!(
            "{}:{} {}: `{}` → `{}`",
            self.file,
            self.line,
            self.operator,
            self.before.trim(),
            self.after.trim()
        )
    }
}

/// Writes that change stored state (PEXPIRE has its own operators).
const WRITES: [&str; 12] = [
    "SET",
    "HSET",
    "HMSET",
    "ZADD",
    "ZREMRANGEBYSCORE",
    "ZREM",
    "DEL",
    "HDEL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "INCRBY",
    "INCRBYFLOAT",
];

/// Every mutant `operators` make of `code`. `cost_argv` is the 1-based ARGV position of `cost`
/// (from the manifest), to find the cost read.
pub fn mutants(
    script: &str,
    file: &str,
    code: &str,
    cost_argv: Option<usize>,
    operators: &[Operator],
) -> Vec<Mutant> {
    let lines: Vec<&str> = code.split('\n').collect();
    let mut out = Vec::new();
    let one_line = |operator: Operator, index: usize, after: String| {
        if after == lines[index] {
            return None;
        }
        let mut changed: Vec<&str> = lines.clone();
        changed[index] = &after;
        Some(Mutant {
            script: script.to_owned(),
            file: file.to_owned(),
            operator,
            line: index + 1,
            before: lines[index].to_owned(),
            code: changed.join("\n"),
            after,
        })
    };
    let reads = argv_reads(&lines);
    for &operator in operators {
        match operator {
            Operator::SwapArgv => {
                for pair in reads.windows(2) {
                    let ((la, at_a, a), (lb, at_b, b)) = (&pair[0], &pair[1]);
                    if la == lb {
                        continue;
                    }
                    // Two lines change; shown as the first, with the second's swap implied.
                    let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                    changed[*la].replace_range(*at_a..at_a + a.len(), b);
                    changed[*lb].replace_range(*at_b..at_b + b.len(), a);
                    out.push(Mutant {
                        script: script.to_owned(),
                        file: file.to_owned(),
                        operator,
                        line: la + 1,
                        before: format!("{} / {}", lines[*la].trim(), lines[*lb].trim()),
                        after: format!("{} / {}", changed[*la].trim(), changed[*lb].trim()),
                        code: changed.join("\n"),
                    });
                }
            }
            Operator::CostOne => {
                if let Some(position) = cost_argv
                    && let Some((index, _, _)) =
                        reads.iter().find(|(_, _, n)| n.parse() == Ok(position))
                    && let Some(eq) = lines[*index].find('=')
                {
                    out.extend(one_line(
                        operator,
                        *index,
                        format!("{}= 1", &lines[*index][..eq]),
                    ));
                }
            }
            _ => {
                for (index, line) in lines.iter().enumerate() {
                    for after in line_mutants(operator, line) {
                        out.extend(one_line(operator, index, after));
                    }
                }
            }
        }
    }
    out
}

/// `(line, byte offset, literal)` of every ARGV position a script reads, in order: the integer
/// in `ARGV[n]` or in a reader call `name(n, '…')` on a `local x = …` line.
fn argv_reads(lines: &[&str]) -> Vec<(usize, usize, String)> {
    let mut reads = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if !trimmed.starts_with("local ") || trimmed.starts_with("local function") {
            continue;
        }
        let Some(eq) = line.find('=') else { continue };
        let mask = code_mask(line);
        let rhs = &line[eq + 1..];
        // `ARGV[n]`
        for (at, _) in rhs.match_indices("ARGV[") {
            let start = eq + 1 + at + 5;
            let digits: String = line[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if !digits.is_empty() && mask[start] {
                reads.push((index, start, digits));
            }
        }
        // `reader(n, ...`: a plain function name called with an integer first argument.
        let call = rhs.trim_start();
        let name_len = call
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(call.len());
        if name_len > 0 && call[name_len..].starts_with('(') && !call.starts_with("tonumber") {
            let start = line.len() - call.len() + name_len + 1;
            let digits: String = line[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if !digits.is_empty() && line[start + digits.len()..].starts_with(',') && mask[start] {
                reads.push((index, start, digits));
            }
        }
    }
    reads
}

/// The mutants of one line under a single-line operator.
fn line_mutants(operator: Operator, line: &str) -> Vec<String> {
    let replace = |at: usize, len: usize, with: &str| {
        let mut s = line.to_owned();
        s.replace_range(at..at + len, with);
        s
    };
    match operator {
        Operator::FlipComparison => {
            let mut out = Vec::new();
            let bytes = line.as_bytes();
            for at in find_in_code(line, "<")
                .into_iter()
                .chain(find_in_code(line, ">"))
            {
                let op = bytes[at];
                if bytes.get(at + 1) == Some(&b'=') {
                    out.push(replace(at, 2, if op == b'<' { "<" } else { ">" }));
                } else {
                    out.push(replace(at, 1, if op == b'<' { "<=" } else { ">=" }));
                }
            }
            out
        }
        Operator::FloorCeil => {
            let mut out: Vec<String> = find_in_code(line, "math.floor")
                .into_iter()
                .map(|at| replace(at, 10, "math.ceil"))
                .collect();
            out.extend(
                find_in_code(line, "math.ceil")
                    .into_iter()
                    .map(|at| replace(at, 9, "math.floor")),
            );
            out
        }
        Operator::OffByOne => off_by_one(line),
        Operator::DropExpiry => {
            if !find_calls(line, "PEXPIRE").is_empty() {
                return vec![blank(line)];
            }
            match px_argument(line) {
                // `, 'PX', <arg>` removed from the SET call.
                Some((from, to)) => vec![replace(from, to - from, "")],
                None => Vec::new(),
            }
        }
        Operator::HalveExpiry => {
            let region = if let Some(&at) = find_calls(line, "PEXPIRE").first() {
                Some((at, line.len()))
            } else {
                px_argument(line)
            };
            let Some((from, _)) = region else {
                return Vec::new();
            };
            let Some(fmt) = line[from..].find("string.format('%d', ").map(|i| from + i) else {
                return Vec::new();
            };
            let open = fmt + "string.format".len();
            let Some(close) = matching_paren(line, open) else {
                return Vec::new();
            };
            let inner_start = fmt + "string.format('%d', ".len();
            let inner = &line[inner_start..close - 1];
            vec![replace(
                inner_start,
                inner.len(),
                &format!("math.max(1, math.floor(({inner}) / 2))"),
            )]
        }
        Operator::DeleteWrite => {
            let is_write = WRITES.iter().any(|w| !find_calls(line, w).is_empty());
            if is_write {
                vec![blank(line)]
            } else {
                Vec::new()
            }
        }
        Operator::SwapArgv | Operator::CostOne => Vec::new(),
    }
}

/// A statement removed, its line kept (so every later line number stays the same).
fn blank(line: &str) -> String {
    let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
    format!("{indent}-- (mutant: removed) {}", line.trim())
}

/// The byte range of `, 'PX', <arg>` inside a SET call on this line.
fn px_argument(line: &str) -> Option<(usize, usize)> {
    let set = *find_calls(line, "SET").first()?;
    let close = matching_paren(line, set + "redis.call".len())?;
    let (quote, after_quote, _) = string_literals(line)
        .into_iter()
        .find(|(open, _, text)| *open > set && *open < close && text.eq_ignore_ascii_case("PX"))?;
    // From the comma before 'PX' to the end of its argument.
    let px = line[..quote].trim_end().strip_suffix(',')?.len();
    let arg_start = line[after_quote..].find(',')? + after_quote + 1;
    // The argument runs to the next top-level comma or the call's `)`.
    let (_, end) = *top_level_items(&line[arg_start..close - 1]).first()?;
    Some((px, arg_start + end))
}

fn has_arithmetic(text: &str) -> bool {
    let mask = code_mask(text);
    text.bytes().enumerate().any(|(i, b)| {
        mask[i]
            && matches!(b, b'+' | b'*' | b'/' | b'%' | b'-')
            // `-` as a binary operator: after an operand.
            && (b != b'-' || text[..i].trim_end().ends_with(|c: char| c.is_alphanumeric() || c == ')' || c == '_'))
    })
}

/// `x = e` → `x = (e) + 1` / `(e) - 1`, and the same for each arithmetic field of a returned
/// reply `{ … }`.
fn off_by_one(line: &str) -> Vec<String> {
    let trimmed = line.trim_start();
    let mut out = Vec::new();
    let code_end = line[..comment_start(line)].trim_end().len();
    if let Some(rest) = trimmed.strip_prefix("return {") {
        let open = line.len() - rest.len() - 1;
        let Some(close) = matching_paren(line, open) else {
            return out;
        };
        let body_start = open + 1;
        for (from, to) in top_level_items(&line[body_start..close - 1]) {
            let item = &line[body_start + from..body_start + to];
            if has_arithmetic(item) {
                for delta in ["+ 1", "- 1"] {
                    let mut s = line.to_owned();
                    s.replace_range(
                        body_start + from..body_start + to,
                        &format!(" ({}) {delta}", item.trim()),
                    );
                    out.push(s);
                }
            }
        }
        return out;
    }
    let starts_statement = ![
        "if ",
        "for ",
        "while ",
        "local function",
        "function",
        "return",
        "elseif ",
    ]
    .iter()
    .any(|k| trimmed.starts_with(k));
    if !starts_statement {
        return out;
    }
    let Some(&eq) = find_in_code(line, "=").first() else {
        return out;
    };
    let bytes = line.as_bytes();
    // `=` of an assignment, not of `==`, `<=`, `>=`, `~=`.
    if bytes.get(eq + 1) == Some(&b'=')
        || (eq > 0 && matches!(bytes[eq - 1], b'<' | b'>' | b'~' | b'='))
    {
        return out;
    }
    let rhs = line[eq + 1..code_end].trim();
    if rhs.is_empty() || !has_arithmetic(rhs) || rhs.ends_with(" then") || rhs.ends_with(" do") {
        return out;
    }
    for delta in ["+ 1", "- 1"] {
        out.push(format!(
            "{}= ({rhs}) {delta}{}",
            &line[..eq],
            &line[code_end..]
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(code: &str) -> Vec<Mutant> {
        mutants("x.check", "x.check.lua", code, Some(2), &Operator::ALL)
    }

    #[test]
    fn comparisons_flip_in_code_only() {
        let m = all("if now < allowAt then fail('x', '< 0') end");
        let flips: Vec<_> = m
            .iter()
            .filter(|m| m.operator == Operator::FlipComparison)
            .collect();
        assert_eq!(flips.len(), 1);
        assert_eq!(
            flips[0].after,
            "if now <= allowAt then fail('x', '< 0') end"
        );
        assert_eq!(
            flips[0].diff(),
            "x.check.lua:1 flip-comparison: `if now < allowAt then fail('x', '< 0') end` → `if now <= allowAt then fail('x', '< 0') end`"
        );
    }

    #[test]
    fn expiries_are_dropped_and_halved() {
        let set = "redis.call('SET', KEYS[1], string.format('%.17g', t), 'PX', string.format('%d', expiry))";
        let m = all(set);
        let drop = m
            .iter()
            .find(|m| m.operator == Operator::DropExpiry)
            .unwrap();
        assert_eq!(
            drop.after,
            "redis.call('SET', KEYS[1], string.format('%.17g', t))"
        );
        let halve = m
            .iter()
            .find(|m| m.operator == Operator::HalveExpiry)
            .unwrap();
        assert!(
            halve
                .after
                .ends_with("'PX', string.format('%d', math.max(1, math.floor((expiry) / 2))))"),
            "{}",
            halve.after
        );
        let pexpire =
            "  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(window + w)))";
        let m = all(pexpire);
        let drop = m
            .iter()
            .find(|m| m.operator == Operator::DropExpiry)
            .unwrap();
        assert!(drop.after.starts_with("  -- (mutant: removed)"));
        let halve = m
            .iter()
            .find(|m| m.operator == Operator::HalveExpiry)
            .unwrap();
        assert!(
            halve
                .after
                .contains("math.floor((math.ceil(window + w)) / 2)"),
            "{}",
            halve.after
        );
    }

    #[test]
    fn reads_swap_and_cost_becomes_one() {
        let code = "local now = not_negative(1, 'now')\nlocal cost = not_negative(2, 'cost')\nlocal x = tonumber(ARGV[3])";
        let m = all(code);
        let swaps: Vec<_> = m
            .iter()
            .filter(|m| m.operator == Operator::SwapArgv)
            .collect();
        assert_eq!(swaps.len(), 2);
        assert!(swaps[0].code.starts_with(
            "local now = not_negative(2, 'now')\nlocal cost = not_negative(1, 'cost')"
        ));
        assert!(
            swaps[1]
                .code
                .ends_with("not_negative(3, 'cost')\nlocal x = tonumber(ARGV[2])")
        );
        let one = m.iter().find(|m| m.operator == Operator::CostOne).unwrap();
        assert_eq!(one.after, "local cost = 1");
    }

    #[test]
    fn off_by_one_on_assignments_and_reply_fields() {
        let m = all(
            "local T = period / limit\nreturn { 1, burst, remaining, math.ceil(newTat), 0 }\nif a == b - 1 then x = 1 end",
        );
        let obo: Vec<_> = m
            .iter()
            .filter(|m| m.operator == Operator::OffByOne)
            .map(|m| m.after.clone())
            .collect();
        assert!(
            obo.contains(&"local T = (period / limit) + 1".to_owned()),
            "{obo:?}"
        );
        assert!(
            obo.contains(&"local T = (period / limit) - 1".to_owned()),
            "{obo:?}"
        );
        // math.ceil(newTat) has no arithmetic operator; nothing in the `if` line.
        assert_eq!(obo.len(), 2, "{obo:?}");
        let m = all("return { 1, limit, limit - (count + cost), resetAt, 0 }");
        let obo: Vec<_> = m
            .iter()
            .filter(|m| m.operator == Operator::OffByOne)
            .map(|m| m.after.clone())
            .collect();
        assert_eq!(
            obo,
            vec![
                "return { 1, limit, (limit - (count + cost)) + 1, resetAt, 0 }".to_owned(),
                "return { 1, limit, (limit - (count + cost)) - 1, resetAt, 0 }".to_owned(),
            ]
        );
    }

    #[test]
    fn writes_are_deleted_keeping_line_numbers() {
        let m = all(
            "local a = 1\nredis.call('HSET', KEYS[1], 'n', 1)\nlocal b = redis.call('HGET', KEYS[1], 'n')",
        );
        let del: Vec<_> = m
            .iter()
            .filter(|m| m.operator == Operator::DeleteWrite)
            .collect();
        assert_eq!(del.len(), 1);
        assert_eq!(del[0].line, 2);
        assert_eq!(del[0].code.lines().count(), 3);
    }
}

//! Durations in policy files (spec 9): `<n>ms`, `<n>s`, `<n>m`, `<n>h`, or bare milliseconds.

/// Parses a YAML scalar (number or text) into milliseconds; `None` when it is not a duration.
pub fn parse_millis(value: &serde_json::Value) -> Option<f64> {
    let millis = match value {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(text) => parse_text(text.trim())?,
        _ => return None,
    };
    (millis.is_finite() && millis > 0.0).then_some(millis)
}

fn parse_text(text: &str) -> Option<f64> {
    // Longest suffix first: "ms" must win over "m" and "s".
    let (number, scale) = [
        ("ms", 1.0),
        ("s", 1_000.0),
        ("m", 60_000.0),
        ("h", 3_600_000.0),
    ]
    .into_iter()
    .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|n| (n, scale)))
    .unwrap_or((text, 1.0));
    let number = number.trim();
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn units_and_bare_numbers() {
        assert_eq!(parse_millis(&json!("250ms")), Some(250.0));
        assert_eq!(parse_millis(&json!("2s")), Some(2_000.0));
        assert_eq!(parse_millis(&json!("1m")), Some(60_000.0));
        assert_eq!(parse_millis(&json!("1h")), Some(3_600_000.0));
        assert_eq!(parse_millis(&json!("1.5s")), Some(1_500.0));
        assert_eq!(parse_millis(&json!(1500)), Some(1_500.0));
        assert_eq!(parse_millis(&json!("1500")), Some(1_500.0));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            json!("1x"),
            json!("h"),
            json!("-5s"),
            json!(0),
            json!(true),
            json!("1 day"),
        ] {
            assert_eq!(parse_millis(&bad), None, "{bad}");
        }
    }
}

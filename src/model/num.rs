//! Serde helpers that write integral doubles as JSON integers (`1000`, not `1000.0`), so vectors
//! and manifests read the way people write them and stay byte-stable.

use serde::Serializer;

/// Largest magnitude at which every integer is exactly representable in an `f64`.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < EXACT_INT {
        serializer.serialize_i64(*value as i64)
    } else {
        serializer.serialize_f64(*value)
    }
}

/// Formats a number the way the contract's Lua scripts receive it in ARGV: integers without a
/// fraction, other values with enough digits to round-trip.
pub fn to_argv(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < EXACT_INT {
        format!("{}", value as i64)
    } else {
        format!("{value:?}")
    }
}

/// The text Lua 5.1 makes of a number when it concatenates it (`x .. ''`, `LUA_NUMBER_FMT` =
/// `%.14g`): 14 significant digits, so a stored `0.1 + 2.7` reads back as `2.8`. Redis itself
/// keeps all 17 digits of a number passed to `redis.call`; only text a script builds with `..`
/// goes through this.
pub fn lua_text(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // `%g` takes the exponent of the `%e` form after rounding to the precision.
    let scientific = format!("{value:.13e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exponent: i32 = exponent.parse().expect("the exponent is an integer");
    if !(-4..14).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim_fraction(mantissa), exponent.abs())
    } else {
        let decimals = (13 - exponent) as usize;
        trim_fraction(&format!("{value:.decimals$}")).to_owned()
    }
}

/// What a number reads back as after a round trip through [`lua_text`].
pub fn through_lua_text(value: f64) -> f64 {
    lua_text(value)
        .parse()
        .expect("lua_text writes a number Rust can parse")
}

/// `%g` drops trailing zeros of the fraction, and the point when nothing is left after it.
fn trim_fraction(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_text_is_percent_14g() {
        let cases = [
            (0.1 + 2.7, "2.8"),
            (0.1 + 0.2, "0.3"),
            (1_700_000_001_618.25, "1700000001618.2"),
            (1_700_000_001_618.5, "1700000001618.5"),
            (1_700_000_000_000.0, "1700000000000"),
            (100.0, "100"),
            (2.5, "2.5"),
            (-3.5, "-3.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1e+15"),
            (123_456_789_012_345.0, "1.2345678901234e+14"),
            (99_999_999_999_999.5, "1e+14"),
            (9.999_999_999_999_95, "10"),
            (1.0 / 3.0, "0.33333333333333"),
            (0.0, "0"),
        ];
        for (value, text) in cases {
            assert_eq!(lua_text(value), text, "{value:?}");
        }
        assert_eq!(through_lua_text(0.1 + 2.7), 2.8);
    }

    #[test]
    fn integral_values_have_no_fraction() {
        assert_eq!(to_argv(1000.0), "1000");
        assert_eq!(to_argv(1.7e12), "1700000000000");
        assert_eq!(to_argv(0.5), "0.5");
        assert_eq!(to_argv(1000.0 / 3.0).parse::<f64>().unwrap(), 1000.0 / 3.0);
    }
}

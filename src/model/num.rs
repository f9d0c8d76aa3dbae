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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_values_have_no_fraction() {
        assert_eq!(to_argv(1000.0), "1000");
        assert_eq!(to_argv(1.7e12), "1700000000000");
        assert_eq!(to_argv(0.5), "0.5");
        assert_eq!(to_argv(1000.0 / 3.0).parse::<f64>().unwrap(), 1000.0 / 3.0);
    }
}

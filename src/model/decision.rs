use serde::{Deserialize, Serialize};

/// The reply tuple every admission answer carries (spec section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Decision {
    pub allowed: bool,
    pub limit: i64,
    pub remaining: i64,
    pub reset_at: i64,
    pub retry_after_ms: i64,
}

impl Decision {
    /// The field names in reply-tuple order, as they appear in vectors and manifests.
    pub const FIELDS: [&'static str; 5] =
        ["allowed", "limit", "remaining", "resetAt", "retryAfterMs"];

    /// Builds a decision from the doubles a script computes. Redis turns a Lua number into an
    /// integer reply by truncation toward zero; `as i64` does the same.
    pub(crate) fn from_f64(
        allowed: bool,
        limit: f64,
        remaining: f64,
        reset_at: f64,
        retry: f64,
    ) -> Self {
        Decision {
            allowed,
            limit: limit as i64,
            remaining: remaining as i64,
            reset_at: reset_at as i64,
            retry_after_ms: retry as i64,
        }
    }

    /// The five fields as `(name, value)` pairs, `allowed` as 0/1, for field-by-field diffs.
    pub fn fields(&self) -> [(&'static str, i64); 5] {
        [
            ("allowed", i64::from(self.allowed)),
            ("limit", self.limit),
            ("remaining", self.remaining),
            ("resetAt", self.reset_at),
            ("retryAfterMs", self.retry_after_ms),
        ]
    }

    /// Names of the fields where `self` and `other` differ, with both values.
    pub fn diff(&self, other: &Decision) -> Vec<(&'static str, i64, i64)> {
        self.fields()
            .iter()
            .zip(other.fields().iter())
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, b)| (a.0, a.1, b.1))
            .collect()
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "(allowed={}, limit={}, remaining={}, resetAt={}, retryAfterMs={})",
            self.allowed, self.limit, self.remaining, self.reset_at, self.retry_after_ms
        )
    }
}

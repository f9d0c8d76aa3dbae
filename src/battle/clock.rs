//! Client clock faults: a worker group's clock may run ahead or behind the machine's by a fixed
//! offset and drift by some parts per million. The direct door applies it to the `now` it sends
//! when the group takes `now` from the client (the contract lets callers supply time).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Bounds so that a typo cannot move a clock by years.
pub const MAX_OFFSET_MS: i64 = 3_600_000;
pub const MAX_DRIFT_PPM: i64 = 100_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct ClientClock {
    /// Ahead (positive) or behind (negative) the machine's clock.
    #[serde(default)]
    pub offset_ms: i64,
    /// Parts per million the clock gains (positive) or loses, counted from the door's start.
    #[serde(default)]
    pub drift_ppm: i64,
}

/// A `clock` table out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("offset_ms must be within ±{MAX_OFFSET_MS}, got {0}")]
    Offset(i64),
    #[error("drift_ppm must be within ±{MAX_DRIFT_PPM}, got {0}")]
    Drift(i64),
}

impl ClientClock {
    pub fn validate(&self) -> Result<(), ClockError> {
        if self.offset_ms.abs() > MAX_OFFSET_MS {
            return Err(ClockError::Offset(self.offset_ms));
        }
        if self.drift_ppm.abs() > MAX_DRIFT_PPM {
            return Err(ClockError::Drift(self.drift_ppm));
        }
        Ok(())
    }

    /// This clock's reading, in whole epoch ms, when the machine's says `real_ms` and the drift
    /// started at `origin_ms`.
    pub fn read(&self, real_ms: i64, origin_ms: i64) -> i64 {
        let drift = (real_ms - origin_ms) as i128 * self.drift_ppm as i128 / 1_000_000;
        real_ms + self.offset_ms + drift as i64
    }

    /// The most this clock is off the machine's over a run of `span_ms`.
    pub fn max_skew_ms(&self, span_ms: u64) -> u64 {
        let drift = (span_ms as i128 * self.drift_ppm.unsigned_abs() as i128 / 1_000_000) as u64;
        self.offset_ms.unsigned_abs() + drift
    }
}

/// The machine's clock in whole epoch ms.
pub fn real_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_drift_add_up() {
        let c = ClientClock {
            offset_ms: 5000,
            drift_ppm: 1000,
        };
        assert_eq!(c.read(1_000_000, 0), 1_000_000 + 5000 + 1000);
        assert_eq!(c.max_skew_ms(10_000), 5010);
        let behind = ClientClock {
            offset_ms: -200,
            drift_ppm: 0,
        };
        assert_eq!(behind.read(10_000, 0), 9800);
    }

    #[test]
    fn absurd_clocks_are_refused() {
        let err = ClientClock {
            offset_ms: MAX_OFFSET_MS + 1,
            drift_ppm: 0,
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("offset_ms"), "{err}");
        assert!(
            ClientClock {
                offset_ms: 0,
                drift_ppm: -MAX_DRIFT_PPM - 1
            }
            .validate()
            .is_err()
        );
    }
}

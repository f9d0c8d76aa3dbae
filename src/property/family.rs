//! What a family promises, as numbers for one parameter point: how much is admitted from idle,
//! how long until a drained key admits again, how long its keys may live, and the most that may
//! be admitted over an interval of `now`s.

use std::collections::BTreeMap;

use crate::backend::exec::v2::{Clock, Family, LimiterKind, WindowStart};

/// One parameter point of a sweep: the values sent in `configure`.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub params: BTreeMap<String, f64>,
}

impl Point {
    /// `limit=5,windowMs=200`, for trial names.
    pub fn label(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn get(&self, name: &str) -> f64 {
        self.params.get(name).copied().unwrap_or(f64::NAN)
    }
}

/// The sweep: a small and a large point, each value snapped into the declared range. Real-time
/// kinds keep their windows short, so a suite stays bounded in wall time.
pub fn sweep(kind: &LimiterKind) -> Vec<Point> {
    let realtime = kind.clock != Clock::Explicit;
    let wanted: [&[(&str, f64)]; 2] = [
        &[
            ("limit", 5.0),
            ("capacity", 5.0),
            ("refillPerSec", 5.0),
            ("windowMs", 200.0),
            ("periodMs", 200.0),
            ("burst", 5.0),
        ],
        &[
            ("limit", 150.0),
            ("capacity", 150.0),
            ("refillPerSec", 150.0),
            ("windowMs", if realtime { 1000.0 } else { 10_000.0 }),
            ("periodMs", if realtime { 1000.0 } else { 10_000.0 }),
            ("burst", 150.0),
        ],
    ];
    let mut points: Vec<Point> = Vec::new();
    for values in wanted {
        let mut params = BTreeMap::new();
        for (name, range) in &kind.parameters {
            let target = values
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .unwrap_or(range.min);
            if let Some(v) = range.nearest(target) {
                params.insert(name.clone(), v);
            }
        }
        // gcra's burst is at most its limit here, so one period refills it.
        if let (Some(limit), Some(burst)) = (params.get("limit").copied(), params.get_mut("burst"))
            && *burst > limit
            && let Some(v) = kind.parameters["burst"].nearest(limit)
        {
            *burst = v;
        }
        let point = Point { params };
        if !points.contains(&point) {
            points.push(point);
        }
    }
    points
}

/// A family's numbers at one point.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub family: Family,
    pub window_start: Option<WindowStart>,
    /// What a fresh key admits at one instant (cost 1 each).
    pub burst: f64,
    /// windowMs, or the time a full refill takes.
    pub window: f64,
    /// From a drained key with no further calls, when one unit is free again (ms).
    pub one_free: f64,
    /// From a drained key with no further calls, when it is fully idle again (ms).
    pub all_free: f64,
    /// The longest a key may live after its last write (ms): twice the window or refill, so
    /// only a key kept far beyond its use fails (plus the store's slack).
    pub ttl_bound: f64,
    /// For slidingWindowCounter: the fraction a trailing window may exceed the limit.
    pub tolerance: f64,
    /// Units per ms of steady-state rate.
    pub rate: f64,
}

impl Shape {
    pub fn of(kind: &LimiterKind, point: &Point) -> Shape {
        let tolerance = kind.tolerance.unwrap_or(0.0);
        let window_start = kind.window_start;
        let family = kind.family;
        match family {
            Family::FixedWindow | Family::SlidingWindowLog | Family::SlidingWindowCounter => {
                let limit = point.get("limit");
                let w = point.get("windowMs");
                let counter = family == Family::SlidingWindowCounter;
                Shape {
                    family,
                    window_start,
                    burst: limit,
                    window: w,
                    one_free: if counter { 2.0 * w } else { w },
                    all_free: if counter { 2.0 * w } else { w },
                    ttl_bound: 2.0 * w,
                    tolerance,
                    rate: limit / w,
                }
            }
            Family::TokenBucket => {
                let capacity = point.get("capacity");
                let per_ms = point.get("refillPerSec") / 1000.0;
                let full = capacity / per_ms;
                Shape {
                    family,
                    window_start,
                    burst: capacity,
                    window: full,
                    one_free: 1.0 / per_ms,
                    all_free: full,
                    ttl_bound: 2.0 * full,
                    tolerance,
                    rate: per_ms,
                }
            }
            Family::Gcra => {
                let limit = point.get("limit");
                let period = point.get("periodMs");
                let burst = point.params.get("burst").copied().unwrap_or(limit);
                let interval = period / limit;
                Shape {
                    family,
                    window_start,
                    burst,
                    window: burst * interval,
                    one_free: interval,
                    all_free: burst * interval,
                    ttl_bound: 2.0 * burst * interval,
                    tolerance,
                    rate: 1.0 / interval,
                }
            }
            Family::Concurrency => {
                let limit = point.get("limit");
                Shape {
                    family,
                    window_start,
                    burst: limit,
                    window: 1000.0,
                    one_free: 0.0,
                    all_free: 0.0,
                    ttl_bound: f64::INFINITY,
                    tolerance,
                    rate: 0.0,
                }
            }
        }
    }

    pub fn limit(&self) -> f64 {
        self.burst
    }

    /// Families whose retryAfterMs / resetAt name a sharp instant (the counter only estimates).
    pub fn sharp_retry(&self) -> bool {
        !matches!(
            self.family,
            Family::SlidingWindowCounter | Family::Concurrency
        )
    }

    /// Where an epoch-aligned window starting at or before `t` begins.
    pub fn epoch_window(&self, t: f64) -> f64 {
        (t / self.window).floor() * self.window
    }

    /// The most cost that may be admitted with `now`s in `[a, b]` (b ≥ a), for the families
    /// whose bound is a function of the interval alone.
    pub fn interval_cap(&self, a: f64, b: f64) -> Option<f64> {
        let span = b - a;
        match self.family {
            // Closed intervals one ms shorter than the window sit inside a trailing window
            // whichever way the engine treats the boundary.
            Family::SlidingWindowLog if span <= self.window - 1.0 => Some(self.burst),
            Family::SlidingWindowCounter if span <= self.window - 1.0 => {
                Some(self.burst * (1.0 + self.tolerance))
            }
            Family::TokenBucket | Family::Gcra => Some(self.burst + self.rate * span + 1e-9),
            _ => None,
        }
    }
}

//! Starting a scenario clear of a fixed window's edge.
//!
//! A fixed window is aligned to the clock (`floor(now / w) · w`), so a scenario written for one
//! long window (a cap of 300 per hour, say) meets a second window if it happens to run across
//! the hour. Its checks then see two half-filled windows: "exactness never exercised", or a
//! store count that names only the second. That verdict would be about the wall clock, not the
//! engine, so the runner waits for the edge to pass before it opens the barrier.

/// How far from an edge the run must stay, beyond its own planned length.
pub const MARGIN_MS: u64 = 1_000;

/// The milliseconds to wait, from `now_ms`, so that every clock `now_ms + offset` stays in one
/// window of every width in `widths` for `run_ms + MARGIN_MS`. Widths a run of that length
/// would span anyway (multi-window scenarios) are left alone, as is a width of 0.
pub fn wait_ms(now_ms: i64, widths: &[u64], offsets: &[i64], run_ms: u64) -> u64 {
    let need = run_ms.saturating_add(MARGIN_MS);
    let mut wait: u64 = 0;
    // Waiting past one edge can bring another clock near its own: a few passes settle it,
    // and each pass only ever moves later, so the loop ends.
    for _ in 0..=offsets.len().max(1) * widths.len().max(1) {
        let mut moved = false;
        for &w in widths
            .iter()
            .filter(|&&w| w > 0 && need.saturating_mul(2) <= w)
        {
            for &offset in offsets {
                let t = now_ms.saturating_add(offset).saturating_add(wait as i64);
                let into = t.rem_euclid(w as i64) as u64;
                if into + need > w {
                    // Just past the edge, plus a little for the clocks' own disagreement.
                    wait += w - into + 50;
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn a_run_well_inside_its_window_starts_at_once() {
        assert_eq!(wait_ms(10_000, &[HOUR], &[0], 5_000), 0);
    }

    #[test]
    fn a_run_that_would_cross_the_hour_waits_for_it() {
        // 3 s before the hour, a 5 s run (+1 s margin) would meet the next window.
        let now = 10 * HOUR as i64 - 3_000;
        assert_eq!(wait_ms(now, &[HOUR], &[0], 5_000), 3_050);
    }

    #[test]
    fn a_clock_ahead_of_the_machine_is_kept_clear_too() {
        // The machine is mid-hour, a client 5 s ahead is 2 s before its edge.
        let now = 10 * HOUR as i64 - 7_000;
        assert_eq!(wait_ms(now, &[HOUR], &[0], 3_000), 0);
        assert_eq!(wait_ms(now, &[HOUR], &[0, 5_000], 3_000), 2_050);
    }

    #[test]
    fn windows_the_run_spans_anyway_are_left_alone() {
        // A 200 ms window in a 3 s run: the scenario is about many windows.
        assert_eq!(wait_ms(199, &[200], &[0], 3_000), 0);
        assert_eq!(wait_ms(199, &[0], &[0], 3_000), 0);
    }
}

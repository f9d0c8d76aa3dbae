//! What a battle scenario's section shows, in plain numbers (milliseconds since the barrier
//! opened). The battle runner fills it from the histories; this module only draws it, so the
//! report knows nothing of workers, doors or checkers.

use std::fmt::Write;

use super::escape;
use super::svg::Chart;

/// How a call ended, as the timeline colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallKind {
    Ok,
    Denied,
    Fail,
    Indeterminate,
}

impl CallKind {
    const ALL: [CallKind; 4] = [
        CallKind::Ok,
        CallKind::Denied,
        CallKind::Fail,
        CallKind::Indeterminate,
    ];

    fn class(self) -> &'static str {
        match self {
            CallKind::Ok => "k-ok",
            CallKind::Denied => "k-denied",
            CallKind::Fail => "k-fail",
            CallKind::Indeterminate => "k-indet",
        }
    }

    fn name(self) -> &'static str {
        match self {
            CallKind::Ok => "ok",
            CallKind::Denied => "denied",
            CallKind::Fail => "fail",
            CallKind::Indeterminate => "indeterminate",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CallSpan {
    /// Index into [`ScenarioPlots::lanes`].
    pub lane: usize,
    pub start_ms: f64,
    /// `None`: the call never completed (the worker died).
    pub end_ms: Option<f64>,
    pub kind: CallKind,
    /// The call admitted something (counted in the per-client shares).
    pub admitted: bool,
}

#[derive(Debug, Clone)]
pub struct FaultBand {
    pub from_ms: f64,
    pub to_ms: f64,
    pub label: String,
}

/// Admits in one window of a cap or budget assertion.
#[derive(Debug, Clone)]
pub struct WindowCount {
    pub admitted: f64,
    /// Admitted plus the indeterminate calls that may have been.
    pub possibly: f64,
    /// Admitted more than the assertion's bound allows (drawn red). Not simply `> limit`: a cap
    /// may have slack, and a budget lets the one crossing debit overshoot.
    pub over: bool,
}

#[derive(Debug, Clone)]
pub struct WindowPlot {
    pub assertion: String,
    pub limit: Option<f64>,
    /// `limit + slack`, when the assertion tolerates that much more.
    pub bound: Option<f64>,
    pub windows: Vec<WindowCount>,
}

#[derive(Debug, Clone)]
pub struct Lane {
    pub label: String,
    pub group: String,
}

#[derive(Debug, Clone, Default)]
pub struct ScenarioPlots {
    pub name: String,
    pub description: String,
    pub verdict: String,
    pub headline: String,
    /// `(assertion, verdict, summary)`.
    pub judgements: Vec<(String, String, String)>,
    pub span_ms: f64,
    pub lanes: Vec<Lane>,
    pub calls: Vec<CallSpan>,
    pub faults: Vec<FaultBand>,
    pub windows: Vec<WindowPlot>,
    /// Slots held over time, for scenarios that hold concurrency slots.
    pub slots: Option<SlotsPlot>,
}

#[derive(Debug, Clone)]
pub struct SlotsPlot {
    /// `(ms, held)` at each change.
    pub held: Vec<(f64, f64)>,
    pub ceiling: Option<f64>,
}

const WIDTH: f64 = 860.0;
/// Time bins of the timeline and the latency plot: what bounds the page's size.
const TIME_BINS: usize = 240;
const LATENCY_BINS: usize = 60;
/// At most this many window bars; more windows are merged (the max of each run of windows).
const MAX_WINDOW_BARS: usize = 120;
/// At most this many points of the slots step line.
const MAX_SLOT_POINTS: usize = 400;

impl ScenarioPlots {
    /// The scenario's `<section>`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<section class="scenario" id="scenario-{id}" data-scenario="{id}"><h2><span class="badge v-{v}">{v}</span> {name}</h2><p class="desc">{desc}</p><ul class="judgements">"#,
            id = escape(&self.name),
            v = escape(&self.verdict),
            name = escape(&self.name),
            desc = escape(&self.description)
        );
        for (a, v, summary) in &self.judgements {
            let _ = write!(
                s,
                r#"<li><span class="badge v-{v}">{v}</span> <code>{a}</code> {}</li>"#,
                escape(summary),
                v = escape(v),
                a = escape(a)
            );
        }
        if self.judgements.is_empty() && !self.headline.is_empty() {
            let _ = write!(s, "<li>{}</li>", escape(&self.headline));
        }
        s.push_str("</ul>");
        if !self.calls.is_empty() {
            s.push_str(&self.timeline());
            s.push_str(&self.latency());
        }
        for w in &self.windows {
            s.push_str(&window_chart(w));
        }
        if let Some(slots) = &self.slots {
            s.push_str(&self.slots_chart(&slots.held, slots.ceiling));
        }
        if let Some(shares) = self.shares() {
            s.push_str(&shares);
        }
        s.push_str("</section>");
        s
    }

    fn shade(&self, chart: &mut Chart) {
        for f in &self.faults {
            chart.band(f.from_ms, f.to_ms, "fault", &f.label);
        }
    }

    fn fault_legend(&self, chart: &mut Chart) {
        if !self.faults.is_empty() {
            chart.legend("fault", "fault");
        }
    }

    /// One lane per worker; each time bin coloured by its calls' outcomes, stacked by share.
    fn timeline(&self) -> String {
        let lanes = self.lanes.len().max(1);
        let lane_h = if lanes > 12 { 12.0 } else { 18.0 };
        let height = 60.0 + lane_h * lanes as f64;
        let mut c = Chart::new("timeline", "Operations per worker", WIDTH, height)
            .x_range(0.0, self.span_ms)
            .y_range(0.0, lanes as f64);
        self.shade(&mut c);
        let bin = self.span_ms.max(1.0) / TIME_BINS as f64;
        // counts[lane][bin][kind]
        let mut counts = vec![vec![[0u32; 4]; TIME_BINS]; lanes];
        for call in &self.calls {
            let b = ((call.start_ms / bin) as usize).min(TIME_BINS - 1);
            counts[call.lane.min(lanes - 1)][b][call.kind as usize] += 1;
        }
        for (lane, bins) in counts.iter().enumerate() {
            let top = (lanes - lane) as f64 - 0.12;
            let bottom = (lanes - lane - 1) as f64 + 0.12;
            // Merge equal neighbouring bins so a steady stream is one rectangle per outcome.
            let mut b = 0;
            while b < TIME_BINS {
                let total: u32 = bins[b].iter().sum();
                if total == 0 {
                    b += 1;
                    continue;
                }
                let shape = proportions(&bins[b]);
                let mut e = b + 1;
                while e < TIME_BINS
                    && bins[e].iter().sum::<u32>() > 0
                    && proportions(&bins[e]) == shape
                {
                    e += 1;
                }
                let mut y = bottom;
                for kind in CallKind::ALL {
                    let share = shape[kind as usize] as f64 / 8.0;
                    if share > 0.0 {
                        let h = share * (top - bottom);
                        c.rect((b as f64 * bin, e as f64 * bin), (y, y + h), kind.class());
                        y += h;
                    }
                }
                b = e;
            }
            c.label(None, bottom + 0.1, &self.lanes[lane].label);
        }
        for kind in CallKind::ALL {
            c.legend(kind.class(), kind.name());
        }
        self.fault_legend(&mut c);
        c.finish("ms since start", "", false)
    }

    /// p50, p90, p99 and max latency of the calls that completed, per time bin.
    fn latency(&self) -> String {
        let bin = self.span_ms.max(1.0) / LATENCY_BINS as f64;
        let mut bins: Vec<Vec<f64>> = vec![Vec::new(); LATENCY_BINS];
        for call in &self.calls {
            if let Some(end) = call.end_ms {
                let b = ((call.start_ms / bin) as usize).min(LATENCY_BINS - 1);
                bins[b].push((end - call.start_ms).max(0.0));
            }
        }
        let mut lines: [Vec<(f64, f64)>; 4] = Default::default();
        let mut top: f64 = 1.0;
        for (i, b) in bins.iter_mut().enumerate() {
            if b.is_empty() {
                continue;
            }
            b.sort_by(f64::total_cmp);
            let x = (i as f64 + 0.5) * bin;
            for (k, q) in [0.5, 0.9, 0.99, 1.0].into_iter().enumerate() {
                let v = quantile(b, q);
                top = top.max(v);
                lines[k].push((x, v));
            }
        }
        let mut c = Chart::new("latency", "Latency quantiles (ms)", WIDTH, 200.0)
            .x_range(0.0, self.span_ms)
            .y_range(0.0, top * 1.05);
        self.shade(&mut c);
        for (k, class) in ["q50", "q90", "q99", "qmax"].into_iter().enumerate() {
            c.line(&lines[k], class);
            c.legend(class, ["p50", "p90", "p99", "max"][k]);
        }
        self.fault_legend(&mut c);
        c.finish("ms since start (by invoke)", "ms", true)
    }

    fn slots_chart(&self, points: &[(f64, f64)], ceiling: Option<f64>) -> String {
        let points = thin_steps(points, self.span_ms);
        let top = points
            .iter()
            .map(|p| p.1)
            .chain(ceiling)
            .fold(1.0f64, f64::max);
        let mut c = Chart::new("slots", "Slots in flight", WIDTH, 180.0)
            .x_range(0.0, self.span_ms)
            .y_range(0.0, top + 1.0);
        self.shade(&mut c);
        c.steps(&points, "slots");
        if let Some(ceiling) = ceiling {
            c.hline(ceiling, "limit", &format!("ceiling {ceiling}"));
        }
        c.legend("slots", "held, as workers saw it (admit to release)");
        self.fault_legend(&mut c);
        c.finish("ms since start", "slots", true)
    }

    /// Admits per worker, coloured by group, when the scenario has more than one group.
    fn shares(&self) -> Option<String> {
        let mut groups: Vec<&str> = self.lanes.iter().map(|l| l.group.as_str()).collect();
        groups.dedup();
        groups.sort_unstable();
        groups.dedup();
        if groups.len() < 2 {
            return None;
        }
        let mut admits = vec![0u64; self.lanes.len()];
        for call in &self.calls {
            if call.admitted && call.lane < admits.len() {
                admits[call.lane] += 1;
            }
        }
        let total: u64 = admits.iter().sum();
        let n = self.lanes.len();
        let top = admits.iter().copied().max().unwrap_or(0).max(1) as f64;
        // Name at most ~16 clients under their bars; more would overlap.
        let every = n.div_ceil(16).max(1);
        let names = self
            .lanes
            .iter()
            .enumerate()
            .step_by(every)
            .map(|(i, l)| (i as f64 + 0.5, l.label.clone()))
            .collect();
        let mut c = Chart::new("shares", "Admits per client", WIDTH, 200.0)
            .x_range(0.0, n.max(8) as f64)
            .y_range(0.0, top * 1.1)
            .x_names(names);
        let classes = ["g0", "g1", "g2", "g3"];
        for (i, lane) in self.lanes.iter().enumerate() {
            let g = groups.iter().position(|x| *x == lane.group).unwrap_or(0);
            c.rect(
                (i as f64 + 0.15, i as f64 + 0.85),
                (0.0, admits[i] as f64),
                classes[g % classes.len()],
            );
        }
        for (g, name) in groups.iter().enumerate() {
            let sum: u64 = self
                .lanes
                .iter()
                .zip(&admits)
                .filter(|(l, _)| l.group == *name)
                .map(|(_, a)| a)
                .sum();
            let pct = if total == 0 {
                0.0
            } else {
                100.0 * sum as f64 / total as f64
            };
            c.legend(classes[g % classes.len()], &format!("{name} {pct:.0}%"));
        }
        Some(c.finish("", "admits", true))
    }
}

fn window_chart(w: &WindowPlot) -> String {
    let merged = merge_windows(&w.windows);
    // At least 8 bar widths, so one window is a bar and not a wall.
    let n = merged.len().max(8);
    let top = merged
        .iter()
        .map(|c| c.possibly.max(c.admitted))
        .chain(w.limit)
        .chain(w.bound)
        .fold(1.0f64, f64::max);
    let title = if merged.len() < w.windows.len() {
        format!(
            "Admits per window ({}; {} windows, max of each {} shown)",
            w.assertion,
            w.windows.len(),
            w.windows.len().div_ceil(MAX_WINDOW_BARS)
        )
    } else {
        format!("Admits per window ({})", w.assertion)
    };
    let mut c = Chart::new("windows", &title, WIDTH, 200.0)
        .x_range(0.0, n as f64)
        .y_range(0.0, top * 1.1)
        .whole_x();
    for (i, win) in merged.iter().enumerate() {
        let x = (i as f64 + 0.1, i as f64 + 0.9);
        if win.possibly > win.admitted {
            c.rect(x, (win.admitted, win.possibly), "possibly");
        }
        let class = if win.over { "over" } else { "admitted" };
        c.rect(x, (0.0, win.admitted), class);
    }
    if let Some(limit) = w.limit {
        c.hline(limit, "limit", &format!("limit {limit}"));
    }
    if let Some(bound) = w.bound.filter(|b| Some(*b) != w.limit) {
        c.hline(bound, "bound", &format!("limit + slack {bound}"));
    }
    c.legend("admitted", "admitted");
    c.legend("possibly", "+ indeterminate");
    c.legend("over", "over the bound");
    c.finish("windows (in resetAt order)", "admits", true)
}

fn merge_windows(windows: &[WindowCount]) -> Vec<WindowCount> {
    if windows.len() <= MAX_WINDOW_BARS {
        return windows.to_vec();
    }
    windows
        .chunks(windows.len().div_ceil(MAX_WINDOW_BARS))
        .map(|chunk| WindowCount {
            admitted: chunk.iter().map(|w| w.admitted).fold(0.0, f64::max),
            possibly: chunk.iter().map(|w| w.possibly).fold(0.0, f64::max),
            over: chunk.iter().any(|w| w.over),
        })
        .collect()
}

/// The outcome mix of a bin in eighths, so bins that look alike merge.
fn proportions(counts: &[u32; 4]) -> [u8; 4] {
    let total: u32 = counts.iter().sum();
    let mut out = [0u8; 4];
    let mut given = 0u8;
    for (i, c) in counts.iter().enumerate() {
        // A rare fail or indeterminate still gets at least one eighth: it is what people look for.
        let mut e = ((*c as f64 / total as f64) * 8.0).round() as u8;
        if *c > 0 && e == 0 {
            e = 1;
        }
        out[i] = e;
        given += e;
    }
    // Give or take the rounding error from the largest share.
    let largest = (0..4).max_by_key(|&i| out[i]).unwrap_or(0);
    out[largest] = (out[largest] as i16 + 8 - given as i16).max(0) as u8;
    out
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Keeps at most [`MAX_SLOT_POINTS`] steps: per time bin, the highest value (peaks matter).
fn thin_steps(points: &[(f64, f64)], span_ms: f64) -> Vec<(f64, f64)> {
    if points.len() <= MAX_SLOT_POINTS {
        return points.to_vec();
    }
    let bin = span_ms.max(1.0) / (MAX_SLOT_POINTS / 2) as f64;
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut current: Option<(usize, f64, f64)> = None;
    for &(x, y) in points {
        let b = (x / bin) as usize;
        match &mut current {
            Some((cb, _, peak)) if *cb == b => *peak = peak.max(y),
            _ => {
                if let Some((cb, _, peak)) = current {
                    out.push((cb as f64 * bin, peak));
                }
                current = Some((b, x, y));
            }
        }
    }
    if let Some((cb, _, peak)) = current {
        out.push((cb as f64 * bin, peak));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plots(calls: usize) -> ScenarioPlots {
        ScenarioPlots {
            name: "s".into(),
            verdict: "pass".into(),
            span_ms: 1000.0,
            lanes: vec![
                Lane {
                    label: "a[0]".into(),
                    group: "a".into(),
                },
                Lane {
                    label: "b[0]".into(),
                    group: "b".into(),
                },
            ],
            calls: (0..calls)
                .map(|i| CallSpan {
                    lane: i % 2,
                    start_ms: i as f64 * 1000.0 / calls as f64,
                    end_ms: Some(i as f64 * 1000.0 / calls as f64 + 1.0),
                    kind: if i % 97 == 0 {
                        CallKind::Indeterminate
                    } else {
                        CallKind::Ok
                    },
                    admitted: i % 3 == 0,
                })
                .collect(),
            faults: vec![FaultBand {
                from_ms: 100.0,
                to_ms: 300.0,
                label: "pause".into(),
            }],
            windows: vec![WindowPlot {
                assertion: "cap#0".into(),
                limit: Some(10.0),
                bound: None,
                windows: (0..1000)
                    .map(|i| WindowCount {
                        admitted: (i % 12) as f64,
                        possibly: (i % 12) as f64 + 1.0,
                        over: i % 12 > 10,
                    })
                    .collect(),
            }],
            slots: Some(SlotsPlot {
                held: (0..5000)
                    .map(|i| (i as f64 / 5.0, (i % 4) as f64))
                    .collect(),
                ceiling: Some(3.0),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_section_size_does_not_grow_with_the_history() {
        let small = plots(200).render();
        let large = plots(200_000).render();
        for plot in ["timeline", "latency", "windows", "slots", "shares"] {
            assert!(large.contains(&format!("data-plot=\"{plot}\"")), "{plot}");
        }
        assert!(large.len() < 120_000, "{} bytes", large.len());
        assert!(
            large.len() < small.len() * 3,
            "{} vs {}",
            large.len(),
            small.len()
        );
        // Merged windows say so, and the over-limit window is marked.
        assert!(large.contains("max of each 9 shown"), "{large}");
        assert!(large.contains("class=\"over\""));
    }

    #[test]
    fn a_rare_indeterminate_call_stays_visible() {
        let mut counts = [0u32; 4];
        counts[CallKind::Ok as usize] = 1000;
        counts[CallKind::Indeterminate as usize] = 1;
        let p = proportions(&counts);
        assert_eq!(p[CallKind::Indeterminate as usize], 1);
        assert_eq!(p.iter().map(|x| *x as u32).sum::<u32>(), 8);
    }

    #[test]
    fn one_group_has_no_share_plot() {
        let mut p = plots(10);
        p.lanes[1].group = "a".into();
        assert!(!p.render().contains("data-plot=\"shares\""));
    }
}

//! A small SVG chart writer: linear axes, bands, bars, lines and step lines, coloured by CSS
//! classes from the page's one stylesheet. Written by hand so the page needs no script or font.

use std::fmt::Write;

use super::escape;

const LEFT: f64 = 88.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 30.0;

/// One plot: data coordinates `x0..x1` × `y0..y1` mapped onto a `width` × `height` box.
pub struct Chart {
    width: f64,
    height: f64,
    x: (f64, f64),
    y: (f64, f64),
    plot: &'static str,
    title: String,
    body: String,
    legend: Vec<(&'static str, String)>,
    /// Named x positions instead of numeric ticks (bars of clients).
    x_names: Option<Vec<(f64, String)>>,
    /// Only whole-number x ticks (counted things such as windows).
    whole_x: bool,
}

impl Chart {
    /// `plot` names the kind of plot (`data-plot`), which the browser test looks for.
    pub fn new(plot: &'static str, title: &str, width: f64, height: f64) -> Chart {
        Chart {
            width,
            height,
            x: (0.0, 1.0),
            y: (0.0, 1.0),
            plot,
            title: title.to_owned(),
            body: String::new(),
            legend: Vec::new(),
            x_names: None,
            whole_x: false,
        }
    }

    pub fn x_names(mut self, names: Vec<(f64, String)>) -> Chart {
        self.x_names = Some(names);
        self
    }

    pub fn whole_x(mut self) -> Chart {
        self.whole_x = true;
        self
    }

    pub fn x_range(mut self, from: f64, to: f64) -> Chart {
        self.x = (from, if to > from { to } else { from + 1.0 });
        self
    }

    pub fn y_range(mut self, from: f64, to: f64) -> Chart {
        self.y = (from, if to > from { to } else { from + 1.0 });
        self
    }

    pub fn legend(&mut self, class: &'static str, label: &str) {
        self.legend.push((class, label.to_owned()));
    }

    fn px(&self, v: f64) -> f64 {
        let (a, b) = self.x;
        LEFT + (v.clamp(a, b) - a) / (b - a) * (self.width - LEFT - RIGHT)
    }

    fn py(&self, v: f64) -> f64 {
        let (a, b) = self.y;
        self.height - BOTTOM - (v.clamp(a, b) - a) / (b - a) * (self.height - TOP - BOTTOM)
    }

    /// A full-height shaded band from `x_from` to `x_to` (a fault window).
    pub fn band(&mut self, x_from: f64, x_to: f64, class: &str, title: &str) {
        let (l, r) = (self.px(x_from), self.px(x_to).max(self.px(x_from) + 2.0));
        let _ = write!(
            self.body,
            r#"<rect class="{class}" x="{l:.1}" y="{TOP}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
            r - l,
            self.height - TOP - BOTTOM,
            escape(title)
        );
    }

    /// A rectangle in data coordinates.
    pub fn rect(&mut self, x: (f64, f64), y: (f64, f64), class: &str) {
        let (l, r) = (self.px(x.0), self.px(x.1));
        let (t, b) = (self.py(y.1), self.py(y.0));
        let _ = write!(
            self.body,
            r#"<rect class="{class}" x="{l:.1}" y="{t:.1}" width="{:.1}" height="{:.1}"/>"#,
            (r - l).max(0.8),
            (b - t).max(0.0)
        );
    }

    /// A line through the points.
    pub fn line(&mut self, points: &[(f64, f64)], class: &str) {
        if points.is_empty() {
            return;
        }
        let mut d = String::new();
        for (i, (x, y)) in points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { "L" },
                self.px(*x),
                self.py(*y)
            );
        }
        let _ = write!(self.body, r#"<path class="{class}" d="{d}"/>"#);
    }

    /// A step line: each value holds until the next point's x.
    pub fn steps(&mut self, points: &[(f64, f64)], class: &str) {
        let mut stepped = Vec::with_capacity(points.len() * 2);
        for (i, p) in points.iter().enumerate() {
            if i > 0 {
                stepped.push((p.0, points[i - 1].1));
            }
            stepped.push(*p);
        }
        self.line(&stepped, class);
    }

    /// A horizontal reference line (a limit or ceiling) with its label.
    pub fn hline(&mut self, y: f64, class: &str, label: &str) {
        let py = self.py(y);
        let _ = write!(
            self.body,
            r#"<line class="{class}" x1="{LEFT}" x2="{:.1}" y1="{py:.1}" y2="{py:.1}"/><text class="ref" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            self.width - RIGHT,
            self.width - RIGHT - 2.0,
            py - 3.0,
            escape(label)
        );
    }

    /// A text label at data coordinates (a lane name on the left margin when `x` is `None`).
    pub fn label(&mut self, x: Option<f64>, y: f64, text: &str) {
        let (px, anchor) = match x {
            Some(x) => (self.px(x), "start"),
            None => (LEFT - 4.0, "end"),
        };
        let _ = write!(
            self.body,
            r#"<text class="lane" x="{px:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
            self.py(y) + 4.0,
            escape(text)
        );
    }

    /// The SVG element, with axes, ticks and legend. `y_ticks: false` for lane charts.
    pub fn finish(self, x_label: &str, y_label: &str, y_ticks: bool) -> String {
        let (w, h) = (self.width, self.height);
        let mut s = String::with_capacity(self.body.len() + 1024);
        let _ = write!(
            s,
            r#"<svg class="chart" data-plot="{}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"#,
            self.plot,
            escape(&self.title)
        );
        let _ = write!(
            s,
            r#"<text class="title" x="{LEFT}" y="14">{}</text>"#,
            escape(&self.title)
        );
        s.push_str(&self.body);
        let (bx, by) = (LEFT, h - BOTTOM);
        let _ = write!(
            s,
            r#"<path class="axis" d="M{bx},{TOP}V{by}H{:.1}"/>"#,
            w - RIGHT
        );
        let x_ticks: Vec<(f64, String)> = match &self.x_names {
            Some(names) => names.clone(),
            None => ticks(self.x.0, self.x.1)
                .into_iter()
                .filter(|v| !self.whole_x || v.fract() == 0.0)
                .map(|v| (v, short(v)))
                .collect(),
        };
        for (v, text) in x_ticks {
            let px = self.px(v);
            let _ = write!(
                s,
                r#"<path class="tick" d="M{px:.1},{by}v4"/><text class="tick" x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                by + 14.0,
                escape(&text)
            );
        }
        if y_ticks {
            for v in ticks(self.y.0, self.y.1) {
                let py = self.py(v);
                let _ = write!(
                    s,
                    r#"<path class="tick" d="M{bx},{py:.1}h-4"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    bx - 6.0,
                    py + 3.0,
                    short(v)
                );
            }
        }
        let _ = write!(
            s,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            w - RIGHT,
            h - 2.0,
            escape(x_label)
        );
        if !y_label.is_empty() {
            let _ = write!(
                s,
                r#"<text class="tick" x="4" y="{:.1}">{}</text>"#,
                TOP - 8.0 + 22.0 - 12.0,
                escape(y_label)
            );
        }
        let mut lx = w - RIGHT;
        for (class, label) in self.legend.iter().rev() {
            let width = 14.0 + 6.5 * label.chars().count() as f64;
            lx -= width + 8.0;
            let _ = write!(
                s,
                r#"<rect class="{class}" x="{lx:.1}" y="6" width="10" height="10"/><text class="tick" x="{:.1}" y="15">{}</text>"#,
                lx + 13.0,
                escape(label)
            );
        }
        s.push_str("</svg>");
        s
    }
}

/// About five round tick values covering `a..b`.
fn ticks(a: f64, b: f64) -> Vec<f64> {
    let span = b - a;
    if !(span.is_finite() && span > 0.0) {
        return vec![a];
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = (a / step).ceil() * step;
    let mut out = Vec::new();
    while v <= b + step * 1e-9 && out.len() < 12 {
        out.push(v);
        v += step;
    }
    out
}

/// Tick text: 1200 → 1.2k, 0.25 → 0.25.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .replace(".M", "M")
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 1000.0),
            vec![0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        );
        assert_eq!(ticks(0.0, 7.0), vec![0.0, 2.0, 4.0, 6.0]);
        assert_eq!(short(12000.0), "12k");
        assert_eq!(short(0.5), "0.5");
    }

    #[test]
    fn a_chart_clamps_into_its_box_and_escapes_text() {
        let mut c = Chart::new("t", "a <b>", 200.0, 100.0)
            .x_range(0.0, 10.0)
            .y_range(0.0, 1.0);
        c.rect((-5.0, 50.0), (0.0, 2.0), "ok");
        let svg = c.finish("ms", "", true);
        assert!(svg.contains("a &lt;b&gt;"), "{svg}");
        assert!(svg.contains(r#"x="88.0""#), "{svg}");
        assert!(svg.contains(r#"data-plot="t""#), "{svg}");
    }
}

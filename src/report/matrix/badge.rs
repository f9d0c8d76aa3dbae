//! A flat two-part SVG badge: `contract v1 | 51/51`, green when every judged row passed.

use crate::report::html::escape;

/// Roughly the width of 11 px sans-serif text (no font metrics without a font).
fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * 6.6 + 12.0
}

pub fn svg(contract_version: &str, passed: usize, judged: usize) -> String {
    let label = format!("contract v{contract_version}");
    let value = format!("{passed}/{judged}");
    let colour = if judged > 0 && passed == judged {
        "#15803d"
    } else if judged == 0 {
        "#6b7280"
    } else {
        "#b91c1c"
    };
    let (lw, vw) = (text_width(&label), text_width(&value));
    let w = lw + vw;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="20" role="img" aria-label="{l}: {v}"><title>{l}: {v}</title><rect width="{lw:.0}" height="20" rx="3" fill="#4b5563"/><rect x="{lw:.0}" width="{vw:.0}" height="20" rx="3" fill="{colour}"/><rect x="{lw:.0}" width="4" height="20" fill="{colour}"/><g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" text-anchor="middle"><text x="{:.1}" y="14">{l}</text><text x="{:.1}" y="14">{v}</text></g></svg>"##,
        lw / 2.0,
        lw + vw / 2.0,
        l = escape(&label),
        v = escape(&value),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn green_only_when_everything_judged_passed() {
        let all = super::svg("1", 51, 51);
        assert!(
            all.contains("contract v1: 51/51") && all.contains("#15803d"),
            "{all}"
        );
        assert!(super::svg("1", 50, 51).contains("#b91c1c"));
        assert!(super::svg("1", 0, 0).contains("#6b7280"));
    }
}

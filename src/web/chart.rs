//! Line charts of run metrics, drawn server-side as SVG (the template escapes every label;
//! no script is involved). One chart per metric name; one line per (run, event): training
//! steps and validation passes of a run share the loss chart, two runs share a comparison.

use rewardlab_protocol::MetricEvent;

use crate::db::runs::MetricRow;

pub const WIDTH: f64 = 380.0;
pub const HEIGHT: f64 = 190.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 26.0;
const COLORS: [&str; 6] = ["#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e8590c", "#495057"];

/// What is plotted first, when present.
const ORDER: [&str; 14] = [
    "loss",
    "accuracy",
    "score",
    "rlhf_reward",
    "margin",
    "kl",
    "perplexity",
    "token_accuracy",
    "kl_coef",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "elapsed_s",
    "rss_mb",
];
/// The charts a lead reads first (loss, accuracy, reward, KL); the rest are folded away.
const PRIMARY: [&str; 6] = ["loss", "accuracy", "score", "rlhf_reward", "margin", "kl"];

pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: String,
    pub last: (f64, f64),
    pub last_value: String,
}

pub struct Chart {
    pub title: String,
    pub series: Vec<Series>,
    pub y_ticks: Vec<(f64, String)>,
    pub x_ticks: Vec<(f64, String)>,
}

impl Chart {
    pub fn width(&self) -> f64 {
        WIDTH
    }
    pub fn height(&self) -> f64 {
        HEIGHT
    }
    pub fn plot_left(&self) -> f64 {
        LEFT
    }
    pub fn plot_right(&self) -> f64 {
        WIDTH - RIGHT
    }
    pub fn plot_bottom(&self) -> f64 {
        HEIGHT - BOTTOM
    }
    pub fn plot_top(&self) -> f64 {
        TOP
    }
}

pub fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e6 {
        return format!("{v:.0}");
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// (run label, metric rows) → charts, in a stable order.
pub fn charts(runs: &[(String, &[MetricRow])]) -> Vec<Chart> {
    // metric name → [(series name, points)]
    let mut by_metric: Vec<(String, Vec<Line>)> = Vec::new();
    for (label, rows) in runs {
        // Lines of events this build does not know are not plotted; `done` has no position.
        for e in rows.iter().filter_map(|r| MetricEvent::from_value(&r.data)) {
            let Some(x) = e.position().map(|s| s as f64) else { continue };
            for (k, y) in e.figures() {
                let series_name = if label.is_empty() { e.name().to_string() } else { format!("{label} {}", e.name()) };
                let entry = match by_metric.iter_mut().find(|(n, _)| n == k) {
                    Some(e) => e,
                    None => {
                        by_metric.push((k.to_string(), Vec::new()));
                        by_metric.last_mut().expect("just pushed")
                    }
                };
                match entry.1.iter_mut().find(|(n, _)| *n == series_name) {
                    Some(s) => s.1.push((x, y)),
                    None => entry.1.push((series_name, vec![(x, y)])),
                }
            }
        }
    }
    let rank = |name: &str| ORDER.iter().position(|o| *o == name).unwrap_or(ORDER.len());
    by_metric.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.0.cmp(&b.0)));
    by_metric.truncate(32);
    by_metric.into_iter().map(|(title, series)| chart(title, series)).collect()
}

/// The charts a lead reads first, and the rest.
pub fn split(charts: Vec<Chart>) -> (Vec<Chart>, Vec<Chart>) {
    charts.into_iter().partition(|c| PRIMARY.contains(&c.title.as_str()))
}

/// A series' name and its (x, y) points.
pub type Line = (String, Vec<(f64, f64)>);

/// One chart of `series` (each with at least one point), scaled to fit.
pub fn chart(title: String, series: Vec<Line>) -> Chart {
    let all = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.1 };
        y0 -= pad;
        y1 += pad;
    }
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT);
    let py = |y: f64| HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM);
    let series = series
        .into_iter()
        .enumerate()
        .map(|(i, (name, mut pts))| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let points = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect::<Vec<_>>().join(" ");
            let &(lx, ly) = pts.last().expect("a series has a point");
            Series { name, color: COLORS[i % COLORS.len()], points, last: (px(lx), py(ly)), last_value: fmt_num(ly) }
        })
        .collect();
    // Enough decimals that three ticks over a narrow range still differ.
    let decimals = ((-(y1 - y0).log10()).ceil() as i64 + 1).clamp(0, 8) as usize;
    let tick = |y: f64| if (y1 - y0) < 1.0 && y.abs() < 1e5 && y.abs() >= 1e-3 { format!("{y:.decimals$}") } else { fmt_num(y) };
    let y_ticks = [y0, (y0 + y1) / 2.0, y1].iter().map(|&y| (py(y), tick(y))).collect();
    let x_ticks = [x0, x1].iter().map(|&x| (px(x), fmt_num(x))).collect();
    Chart { title, series, y_ticks, x_ticks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn row(event: &str, step: i64, data: Value) -> MetricRow {
        MetricRow { event: event.into(), step: Some(step), data }
    }

    fn step(step: u64, loss: f64) -> Value {
        json!({"event": "step", "step": step, "epoch": 0, "loss": loss, "accuracy": 0.6, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 100.0,
               "examples": 16, "elapsed_s": 1.0, "total_steps": 10})
    }

    #[test]
    fn training_and_validation_losses_share_a_chart_and_counters_are_not_plotted() {
        let rows = vec![
            row("step", 1, step(1, 0.9)),
            row("step", 2, step(2, 0.5)),
            row("eval", 2, json!({"event": "eval", "step": 2, "loss": 0.7, "epoch": 1})),
            // A newer trainer's event is not plotted.
            row("novel", 2, json!({"event": "novel", "step": 2, "loss": 99.0})),
        ];
        let charts = charts(&[(String::new(), &rows)]);
        assert_eq!(charts[0].title, "loss");
        assert_eq!(charts[0].series.len(), 2);
        assert_eq!(charts[0].series[0].last_value, "0.500");
        assert!(charts.iter().all(|c| c.title != "epoch" && c.title != "step"));
        let (first, rest) = split(super::charts(&[(String::new(), &rows)]));
        assert_eq!(first.iter().map(|c| c.title.as_str()).collect::<Vec<_>>(), ["loss", "accuracy"], "what a lead reads first");
        assert_eq!(rest[0].title, "lr", "the learning rate folded");
        // The lowest loss sits at the bottom of the plot, the highest at the top.
        let pts: Vec<f64> = charts[0].series[0].points.split(' ').map(|p| p.split(',').nth(1).unwrap().parse().unwrap()).collect();
        assert!((pts[0] - TOP).abs() < 0.1 && (pts[1] - (HEIGHT - BOTTOM)).abs() < 0.1, "{pts:?}");
    }
}

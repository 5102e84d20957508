//! The watchdog's charts, drawn server-side as SVG like the run charts: against √KL, people's
//! win rate over the start (each point with its 95% interval and count, Gao's fitted curve, the
//! turnover d* marked, ½ as the line of no change), the reward model's score, and the
//! ensemble's disagreement beside them.

use crate::services::watchdog::Watchdog;
use crate::web::chart::fmt_num;

const WIDTH: f64 = 380.0;
const HEIGHT: f64 = 210.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 28.0;

/// Axis ticks: (plot coordinate, label).
type Ticks = Vec<(f64, String)>;

/// A point with its interval: plot coordinates and what hovering it says.
pub struct Dot {
    pub x: f64,
    pub y: f64,
    pub lo: f64,
    pub hi: f64,
    pub title: String,
}

/// One chart: lines, dots with intervals, a marked x (the turnover) and a marked y (½).
pub struct Plot {
    pub id: &'static str,
    pub title: String,
    pub color: &'static str,
    /// (name, colour, points "x,y x,y").
    pub lines: Vec<(String, &'static str, String)>,
    pub dots: Vec<Dot>,
    pub x_ticks: Ticks,
    pub y_ticks: Ticks,
    /// A vertical mark and its label.
    pub mark_x: Option<(f64, String)>,
    /// A horizontal reference line.
    pub mark_y: Option<f64>,
}

impl Plot {
    pub fn width(&self) -> f64 {
        WIDTH
    }
    pub fn height(&self) -> f64 {
        HEIGHT
    }
    pub fn left(&self) -> f64 {
        LEFT
    }
    pub fn right(&self) -> f64 {
        WIDTH - RIGHT
    }
    pub fn top(&self) -> f64 {
        TOP
    }
    pub fn bottom(&self) -> f64 {
        HEIGHT - BOTTOM
    }
}

/// Maps data to plot coordinates.
struct Frame {
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn new(x1: f64, ys: impl Iterator<Item = f64>, fixed: Option<(f64, f64)>) -> Self {
        let (mut y0, mut y1) = fixed.unwrap_or((f64::MAX, f64::MIN));
        if fixed.is_none() {
            for y in ys {
                (y0, y1) = (y0.min(y), y1.max(y));
            }
        }
        if y1 <= y0 {
            let pad = if y0.abs() < 1e-12 || !y0.is_finite() { 1.0 } else { y0.abs() * 0.1 };
            (y0, y1) = if y0.is_finite() { (y0 - pad, y0 + pad) } else { (0.0, 1.0) };
        }
        Self { x1: if x1 > 0.0 { x1 } else { 1.0 }, y0, y1 }
    }
    fn px(&self, x: f64) -> f64 {
        LEFT + x / self.x1 * (WIDTH - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - (y.clamp(self.y0, self.y1) - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)
    }
    fn line(&self, pts: impl Iterator<Item = (f64, f64)>) -> String {
        pts.map(|(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y))).collect::<Vec<_>>().join(" ")
    }
    fn ticks(&self) -> (Ticks, Ticks) {
        let xs = [0.0, self.x1 / 2.0, self.x1].iter().map(|&x| (self.px(x), fmt_num(x))).collect();
        let ys = [self.y0, (self.y0 + self.y1) / 2.0, self.y1].iter().map(|&y| (self.py(y), fmt_num(y))).collect();
        (xs, ys)
    }
}

/// The charts of a spot check's figures (none before it has points).
pub fn plots(w: &Watchdog) -> Vec<Plot> {
    if w.points.is_empty() {
        return Vec::new();
    }
    let turnover = w.fit.as_ref().and_then(|f| f.turnover);
    let x1 = w.points.iter().map(|p| p.sqrt_kl).fold(0.0, f64::max).max(turnover.unwrap_or(0.0)) * 1.05;
    let mut out = vec![win_plot(w, x1, turnover), rm_plot(w, x1)];
    if w.points.iter().any(|p| p.ensemble_std.is_some()) {
        out.push(spread_plot(w, x1));
    }
    out
}

fn win_plot(w: &Watchdog, x1: f64, turnover: Option<f64>) -> Plot {
    let f = Frame::new(x1, std::iter::empty::<f64>(), Some((0.0, 1.0)));
    let dots = w
        .points
        .iter()
        .filter_map(|p| {
            let r = p.win_rate?;
            let title = format!("√KL {:.3}: win rate {:.2} [{:.2}, {:.2}] over {} judgements", p.sqrt_kl, r, p.ci_low?, p.ci_high?, p.judgements);
            Some(Dot { x: f.px(p.sqrt_kl), y: f.py(r), lo: f.py(p.ci_low?), hi: f.py(p.ci_high?), title })
        })
        .collect();
    let mut lines = Vec::new();
    if let Some(fit) = &w.fit {
        let curve = (0..=48).map(|i| x1 * i as f64 / 48.0).map(|d| (d, fit.at(d)));
        lines.push(("Gao's curve fitted to people".to_string(), "#9c36b5", f.line(curve)));
    }
    let (x_ticks, y_ticks) = f.ticks();
    let mark_x = turnover.map(|d| (f.px(d), format!("d* = {d:.2}")));
    Plot {
        id: "watch-win-rate",
        title: "people's win rate against the start".into(),
        color: "#2f9e44",
        lines,
        dots,
        x_ticks,
        y_ticks,
        mark_x,
        mark_y: Some(f.py(0.5)),
    }
}

fn rm_plot(w: &Watchdog, x1: f64) -> Plot {
    let f = Frame::new(x1, w.points.iter().map(|p| p.rm_score), None);
    let lines = vec![("reward model score".to_string(), "#1f6feb", f.line(w.points.iter().map(|p| (p.sqrt_kl, p.rm_score))))];
    let dots = w.points.iter().map(|p| Dot {
        x: f.px(p.sqrt_kl),
        y: f.py(p.rm_score),
        lo: f.py(p.rm_score),
        hi: f.py(p.rm_score),
        title: format!("√KL {:.3}: score {}", p.sqrt_kl, fmt_num(p.rm_score)),
    });
    let (x_ticks, y_ticks) = f.ticks();
    Plot {
        id: "watch-rm-score",
        title: "reward model score".into(),
        color: "#1f6feb",
        lines,
        dots: dots.collect(),
        x_ticks,
        y_ticks,
        mark_x: None,
        mark_y: None,
    }
}

fn spread_plot(w: &Watchdog, x1: f64) -> Plot {
    let pts: Vec<(f64, f64)> = w.points.iter().filter_map(|p| Some((p.sqrt_kl, p.ensemble_std?))).collect();
    let f = Frame::new(x1, pts.iter().map(|p| p.1), None);
    let lines = vec![("ensemble disagreement".to_string(), "#e8590c", f.line(pts.iter().copied()))];
    let (x_ticks, y_ticks) = f.ticks();
    Plot {
        id: "watch-ensemble-std",
        title: "ensemble disagreement (members' std)".into(),
        color: "#e8590c",
        lines,
        dots: Vec::new(),
        x_ticks,
        y_ticks,
        mark_x: None,
        mark_y: None,
    }
}

/// The watchdog section of a spot check's page: its figures, charts, table rows and a sentence.
pub struct WatchSection {
    pub w: Watchdog,
    pub plots: Vec<Plot>,
    pub rows: Vec<[String; 8]>,
    pub verdict: String,
}

impl WatchSection {
    pub fn of(w: Watchdog) -> Self {
        let opt = |v: Option<f64>, digits: usize| v.map_or("–".to_string(), |v| format!("{v:.digits$}"));
        let rows = w
            .points
            .iter()
            .map(|p| {
                let interval = match (p.ci_low, p.ci_high) {
                    (Some(lo), Some(hi)) => format!("{lo:.2}–{hi:.2}"),
                    _ => "–".into(),
                };
                [
                    p.checkpoint.clone(),
                    format!("{:.3}", p.sqrt_kl),
                    p.iteration.to_string(),
                    format!("{:.4}", p.rm_score),
                    opt(p.ensemble_std, 4),
                    p.judgements.to_string(),
                    opt(p.win_rate, 3),
                    interval,
                ]
            })
            .collect();
        Self { plots: plots(&w), rows, verdict: verdict(&w), w }
    }
}

/// What the figures say, in a sentence or two.
pub fn verdict(w: &Watchdog) -> String {
    let (Some(first), Some(last)) = (w.points.first(), w.points.last()) else { return "No grid checkpoints sampled yet.".into() };
    let mut out = format!(
        "The reward model's score went from {} at √KL {:.2} to {} at √KL {:.2}.",
        fmt_num(first.rm_score),
        first.sqrt_kl,
        fmt_num(last.rm_score),
        last.sqrt_kl
    );
    let judged: Vec<_> = w.points.iter().filter(|p| p.win_rate.is_some()).collect();
    match judged.iter().max_by(|a, b| a.win_rate.unwrap_or(0.0).total_cmp(&b.win_rate.unwrap_or(0.0))) {
        None => out.push_str(" No judgements of its pairs yet."),
        Some(best) => {
            let n: u64 = judged.iter().map(|p| p.judgements).sum();
            out.push_str(&format!(
                " People's win rate against the start peaked at {:.2} (√KL {:.2}) and is {} at the last checkpoint ({n} judgements in all).",
                best.win_rate.unwrap_or(0.0),
                best.sqrt_kl,
                opt_rate(last.win_rate)
            ));
        }
    }
    match w.fit.as_ref().map(|f| (f.turnover, f.peak_win_rate)) {
        Some((Some(d), Some(peak))) => out.push_str(&format!(" Gao's curve fitted to people turns over at d* = {d:.2} (win rate {peak:.2} there).")),
        Some(_) => out.push_str(" Gao's curve fitted to people has not turned over."),
        None => {}
    }
    out
}

fn opt_rate(r: Option<f64>) -> String {
    r.map_or("unjudged".into(), |r| format!("{r:.2}"))
}

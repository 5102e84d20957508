//! The model leaderboard: Bradley–Terry strengths fitted to every pairwise comparison between
//! two different models, with bootstrap confidence intervals. Ties count half a win each way.
//! The fit is Hunter's MM algorithm (2004) on the win matrix, with a small symmetric prior
//! (0.1 wins each way on every compared pair) so an unbeaten model keeps a finite strength.
//! Strengths are natural-log odds units, centred so their mean is 0; Elo = 400/ln 10 × that.

use rand::{Rng, SeedableRng};

/// Comparisons between two models, aggregated.
#[derive(Debug, Clone)]
pub struct Cell {
    pub a: String,
    pub b: String,
    pub a_wins: f64,
    pub b_wins: f64,
    pub ties: f64,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub model: String,
    pub strength: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub elo: f64,
    pub win_rate: f64,
    pub wins: f64,
    pub losses: f64,
    pub ties: f64,
    pub comparisons: f64,
}

const PRIOR: f64 = 0.1;

/// Fits log-strengths (mean 0) to a win matrix `w[i][j]` (i beat j, ties already halved).
pub fn fit(n: usize, w: &[Vec<f64>]) -> Vec<f64> {
    let mut p = vec![1.0; n];
    let wins: Vec<f64> = (0..n).map(|i| w[i].iter().sum()).collect();
    for _ in 0..500 {
        let mut next = vec![0.0; n];
        for i in 0..n {
            let denom: f64 = (0..n).filter(|&j| j != i).map(|j| (w[i][j] + w[j][i]) / (p[i] + p[j])).sum();
            next[i] = if denom > 0.0 { wins[i] / denom } else { p[i] };
        }
        let g = (next.iter().map(|x: &f64| x.max(1e-300).ln()).sum::<f64>() / n as f64).exp();
        let change = next.iter().zip(&p).map(|(a, b)| (a / g - b).abs()).fold(0.0, f64::max);
        p = next.iter().map(|x| x / g).collect();
        if change < 1e-10 {
            break;
        }
    }
    let logs: Vec<f64> = p.iter().map(|x| x.max(1e-300).ln()).collect();
    let mean = logs.iter().sum::<f64>() / n as f64;
    logs.iter().map(|x| x - mean).collect()
}

/// The leaderboard, best first; `rounds` bootstrap resamples of the comparisons (seeded).
pub fn leaderboard(cells: &[Cell], rounds: usize, seed: u64) -> Vec<Entry> {
    let mut models: Vec<String> = cells.iter().flat_map(|c| [c.a.clone(), c.b.clone()]).collect();
    models.sort();
    models.dedup();
    let n = models.len();
    if n == 0 {
        return Vec::new();
    }
    let idx = |m: &str| models.binary_search_by(|x| x.as_str().cmp(m)).unwrap_or(0);
    // Outcomes: (i, j, kind) with kind 0 = i won, 1 = j won, 2 = tie, and their counts.
    let mut outcomes: Vec<(usize, usize, u8, f64)> = Vec::new();
    for c in cells {
        let (i, j) = (idx(&c.a), idx(&c.b));
        for (kind, count) in [(0u8, c.a_wins), (1, c.b_wins), (2, c.ties)] {
            if count > 0.0 {
                outcomes.push((i, j, kind, count));
            }
        }
    }
    #[allow(clippy::needless_range_loop)]
    let matrix = |counts: &dyn Fn(usize) -> f64| {
        let mut w = vec![vec![0.0; n]; n];
        for (k, &(i, j, kind, _)) in outcomes.iter().enumerate() {
            let c = counts(k);
            match kind {
                0 => w[i][j] += c,
                1 => w[j][i] += c,
                _ => {
                    w[i][j] += c / 2.0;
                    w[j][i] += c / 2.0;
                }
            }
        }
        for i in 0..n {
            for j in 0..n {
                if i != j && (w[i][j] + w[j][i]) > 0.0 {
                    w[i][j] += PRIOR;
                }
            }
        }
        w
    };
    let strengths = fit(n, &matrix(&|k| outcomes[k].3));
    // Bootstrap: resample the comparisons with replacement (a multinomial over outcomes).
    let total: f64 = outcomes.iter().map(|o| o.3).sum();
    let cumulative: Vec<f64> = outcomes
        .iter()
        .scan(0.0, |acc, o| {
            *acc += o.3;
            Some(*acc)
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
    for _ in 0..rounds {
        let mut counts = vec![0.0; outcomes.len()];
        for _ in 0..total as usize {
            let u = rng.gen::<f64>() * total;
            let k = cumulative.partition_point(|&c| c <= u).min(outcomes.len() - 1);
            counts[k] += 1.0;
        }
        let s = fit(n, &matrix(&|k| counts[k]));
        for (i, v) in s.into_iter().enumerate() {
            samples[i].push(v);
        }
    }
    let mut entries: Vec<Entry> = (0..n)
        .map(|i| {
            let (mut wins, mut losses, mut ties) = (0.0, 0.0, 0.0);
            for &(a, b, kind, c) in &outcomes {
                match (kind, a == i, b == i) {
                    (0, true, _) | (1, _, true) => wins += c,
                    (0, _, true) | (1, true, _) => losses += c,
                    (2, true, _) | (2, _, true) => ties += c,
                    _ => {}
                }
            }
            let s = &mut samples[i];
            s.sort_by(f64::total_cmp);
            let q = |f: f64| if s.is_empty() { strengths[i] } else { s[((s.len() - 1) as f64 * f).round() as usize] };
            let comparisons = wins + losses + ties;
            Entry {
                model: models[i].clone(),
                strength: strengths[i],
                ci_low: q(0.025),
                ci_high: q(0.975),
                elo: 1000.0 + strengths[i] * 400.0 / std::f64::consts::LN_10,
                win_rate: if comparisons > 0.0 { (wins + ties / 2.0) / comparisons } else { 0.0 },
                wins,
                losses,
                ties,
                comparisons,
            }
        })
        .collect();
    entries.sort_by(|a, b| b.strength.total_cmp(&a.strength));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(a: &str, b: &str, aw: f64, bw: f64, t: f64) -> Cell {
        Cell { a: a.into(), b: b.into(), a_wins: aw, b_wins: bw, ties: t }
    }

    #[test]
    fn strengths_recover_the_odds_of_a_known_model() {
        // Bradley–Terry with strengths 4 : 2 : 1 gives P(a beats b) = 4/6 etc.; feed the
        // expected counts of 600 comparisons per pair and the fit must return log 4 : log 2 : 0.
        let cells = [cell("a", "b", 400.0, 200.0, 0.0), cell("b", "c", 400.0, 200.0, 0.0), cell("a", "c", 480.0, 120.0, 0.0)];
        let board = leaderboard(&cells, 50, 1);
        let names: Vec<&str> = board.iter().map(|e| e.model.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let gap_ab = board[0].strength - board[1].strength;
        let gap_bc = board[1].strength - board[2].strength;
        assert!((gap_ab - 2f64.ln()).abs() < 0.01 && (gap_bc - 2f64.ln()).abs() < 0.01, "{gap_ab} {gap_bc}");
        for e in &board {
            assert!(e.ci_low <= e.strength && e.strength <= e.ci_high, "{e:?}");
            assert!(e.ci_high - e.ci_low < 0.5, "1800 comparisons give a tight interval: {e:?}");
        }
        assert!((board[0].win_rate - 880.0 / 1200.0).abs() < 1e-9);
    }

    #[test]
    fn an_unbeaten_model_stays_finite_and_few_comparisons_give_wide_intervals() {
        let board = leaderboard(&[cell("new", "old", 5.0, 0.0, 1.0)], 200, 7);
        assert_eq!(board[0].model, "new");
        assert!(board[0].strength.is_finite() && board[0].strength > 0.5);
        assert!(board[0].ci_high - board[0].ci_low > 0.5, "{:?}", board[0]);
        assert_eq!(board[0].ties, 1.0);
        assert!((board[0].win_rate - 5.5 / 6.0).abs() < 1e-9);
    }
}

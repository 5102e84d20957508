//! `rewardlab simulate`: replays a labelled preference file as if people labelled it through a
//! queue strategy. Per seed, the pairs are shuffled and a held-out share set aside; every
//! strategy starts from the same first batch (the pool's first pairs) and, each round, the real
//! trainer (`rewardlab-train rm --ensemble K`, a small model from scratch) is trained on the
//! labels revealed so far, scores the held-out pairs and the pool, and the strategy picks the
//! next batch to reveal; a revealed label is flipped for a `noise` share of pairs (fixed per
//! seed and pair, as AlpacaFarm's simulated annotators flip theirs). Prints held-out accuracy
//! against labels used per strategy with 95% intervals over seeds, the labels each strategy
//! needs to reach fifo's final accuracy, and writes an SVG chart.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::domain::queue::QueueStrategy;
use crate::domain::simulate::{accuracy, labels_to_reach, mean_ci, select, PairRow};

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Labelled preference pairs: JSONL (or .jsonl.gz) of {"chosen", "rejected"} (HH-RLHF's
    /// form; an explicit "prompt" is kept).
    #[arg(long)]
    pub data: PathBuf,
    /// Strategies to compare, comma-separated: fifo, uncertainty, thompson.
    #[arg(long, default_value = "fifo,uncertainty,thompson")]
    pub strategy: String,
    /// Labels revealed in all, per strategy and seed.
    #[arg(long)]
    pub budget: usize,
    /// Rounds: the budget is revealed in this many equal batches, the reward model retrained after each.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Share of revealed labels flipped (0 to 0.5).
    #[arg(long, default_value_t = 0.0)]
    pub noise: f64,
    /// Seeds (shuffles, held-out splits, flips and training seeds); intervals need two or more.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Share of the pairs held out for evaluation.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Use only the file's first N pairs.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Ensemble members per reward model.
    #[arg(long, default_value_t = 3)]
    pub ensemble: u32,
    /// Training epochs per round.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0.003)]
    pub lr: f64,
    /// Model size: embedding width, layers, heads, tokens kept per text, vocabulary.
    #[arg(long, default_value_t = 32)]
    pub n_embd: usize,
    #[arg(long, default_value_t = 1)]
    pub n_layer: usize,
    #[arg(long, default_value_t = 2)]
    pub n_head: usize,
    #[arg(long, default_value_t = 96)]
    pub max_len: usize,
    #[arg(long, default_value_t = 512)]
    pub vocab_size: usize,
    /// Where the chart (SVG) is written.
    #[arg(long, default_value = "simulate.svg")]
    pub chart: PathBuf,
    /// The rewardlab-train binary [default: beside this one, else on PATH].
    #[arg(long, env = "REWARDLAB_TRAIN")]
    pub trainer: Option<PathBuf>,
    /// Scratch directory for the rounds' data and models [default: a new one under the system's
    /// temporary directory, removed at the end].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// Checked settings.
struct Plan {
    strategies: Vec<QueueStrategy>,
    pool: Vec<PairRow>,
    trainer: PathBuf,
    work: PathBuf,
    keep_work: bool,
}

fn check(args: &SimulateArgs) -> Result<Plan> {
    let mut strategies = Vec::new();
    for s in args.strategy.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let q: QueueStrategy = s.parse().map_err(|e| anyhow!("--strategy: {e}"))?;
        if q == QueueStrategy::NewestFirst {
            bail!("--strategy: newest-first has no meaning in a replay (the pool's pairs have no age); use fifo, uncertainty or thompson");
        }
        if !strategies.contains(&q) {
            strategies.push(q);
        }
    }
    if strategies.is_empty() {
        bail!("--strategy: expected a comma-separated list of fifo, uncertainty, thompson");
    }
    if args.rounds == 0 || args.budget < args.rounds {
        bail!("--budget ({}) must be at least --rounds ({}), which must be at least 1", args.budget, args.rounds);
    }
    if !(0.0..=0.5).contains(&args.noise) {
        bail!("--noise: expected a share from 0 to 0.5, got {}", args.noise);
    }
    if args.seeds == 0 || args.seeds > 100 {
        bail!("--seeds: expected 1 to 100, got {}", args.seeds);
    }
    if !(args.test_fraction > 0.0 && args.test_fraction < 0.9) {
        bail!("--test-fraction: expected a share above 0 and below 0.9, got {}", args.test_fraction);
    }
    if !(1..=32).contains(&args.ensemble) || args.epochs == 0 || !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--ensemble must be 1 to 32, --epochs at least 1 and --lr positive");
    }
    let mut pool = read_pairs(&args.data)?;
    if let Some(limit) = args.limit {
        pool.truncate(limit);
    }
    let test = held_out_count(pool.len(), args.test_fraction);
    if pool.len() < 10 || pool.len() - test < args.budget {
        bail!(
            "{}: {} pairs leave {} to label after holding out {}; --budget {} needs at least that many (and the file at least 10 pairs)",
            args.data.display(),
            pool.len(),
            pool.len().saturating_sub(test),
            test,
            args.budget
        );
    }
    let trainer = args.trainer.clone().unwrap_or_else(crate::jobs::worker::default_trainer);
    crate::jobs::worker::check_trainer(&trainer)?;
    let (work, keep_work) = match &args.work_dir {
        Some(dir) => (dir.clone(), true),
        None => (std::env::temp_dir().join(format!("rewardlab-simulate-{}", uuid::Uuid::new_v4().simple())), false),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    Ok(Plan { strategies, pool, trainer, work, keep_work })
}

fn held_out_count(n: usize, fraction: f64) -> usize {
    ((n as f64 * fraction).ceil() as usize).max(1)
}

/// Every pair of the file, with the line number of the first bad one.
fn read_pairs(path: &Path) -> Result<Vec<PairRow>> {
    let file = std::fs::File::open(path).with_context(|| format!("--data: cannot open {}", path.display()))?;
    let reader: Box<dyn BufRead> = match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))),
        _ => Box::new(std::io::BufReader::new(file)),
    };
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: cannot read the line", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(PairRow::parse(&line).map_err(|e| anyhow!("{}:{}: {e}", path.display(), n + 1))?);
    }
    Ok(out)
}

/// Held-out accuracy per strategy, per evaluation point (labels used), per seed.
struct Results {
    labels: Vec<usize>,
    acc: Vec<Vec<Vec<f64>>>,
}

pub fn run(args: SimulateArgs) -> Result<()> {
    let plan = check(&args)?;
    let started = Instant::now();
    let batches = batch_sizes(args.budget, args.rounds);
    let labels: Vec<usize> = (1..=batches.len()).map(|r| batches[..r].iter().sum()).collect();
    let mut results = Results { labels, acc: vec![vec![Vec::new(); args.rounds]; plan.strategies.len()] };
    for seed in 0..args.seeds {
        run_seed(&args, &plan, seed, &batches, &mut results)?;
    }
    print_report(&args, &plan, &results);
    std::fs::write(&args.chart, chart(&plan.strategies, &results)).with_context(|| format!("--chart: cannot write {}", args.chart.display()))?;
    println!("chart: {}", args.chart.display());
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    if !plan.keep_work {
        let _ = std::fs::remove_dir_all(&plan.work);
    }
    Ok(())
}

/// The budget in `rounds` batches, the first ones one larger when it does not divide.
fn batch_sizes(budget: usize, rounds: usize) -> Vec<usize> {
    (0..rounds).map(|r| budget / rounds + usize::from(r < budget % rounds)).collect()
}

fn run_seed(args: &SimulateArgs, plan: &Plan, seed: u64, batches: &[usize], results: &mut Results) -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..plan.pool.len()).collect();
    order.shuffle(&mut rng);
    let test: Vec<usize> = order[..held_out_count(order.len(), args.test_fraction)].to_vec();
    let pool: Vec<usize> = order[test.len()..].to_vec();
    let flips: Vec<bool> = (0..plan.pool.len()).map(|_| rng.gen::<f64>() < args.noise).collect();
    // Every strategy starts from the same first batch and so the same first model.
    let mut first: Option<(f64, Vec<[Vec<f64>; 2]>)> = None;
    for (si, &strategy) in plan.strategies.iter().enumerate() {
        let mut pick_rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(7919).wrapping_add(si as u64));
        let mut labelled: Vec<usize> = pool[..batches[0]].to_vec();
        let mut remaining: Vec<usize> = pool[batches[0]..].to_vec();
        for round in 0..batches.len() {
            let t = Instant::now();
            let (acc, scores) = match (&first, round) {
                (Some(f), 0) => f.clone(),
                _ => {
                    let dir = plan.work.join(format!("s{seed}-{}-r{round}", strategy.as_str()));
                    let out = train_and_score(args, plan, &dir, seed * 1000 + round as u64, &labelled, &flips, &test, &remaining)?;
                    if round == 0 {
                        first = Some(out.clone());
                    }
                    out
                }
            };
            results.acc[si][round].push(acc);
            eprintln!(
                "seed {}/{} {:<11} round {}/{}: {:>5} labels, held-out accuracy {acc:.4} ({:.1} s)",
                seed + 1,
                args.seeds,
                strategy.as_str(),
                round + 1,
                batches.len(),
                labelled.len(),
                t.elapsed().as_secs_f64()
            );
            if let Some(&next) = batches.get(round + 1) {
                let chosen = select(strategy, &remaining_positions(&remaining), &scores, next, &mut pick_rng);
                let chosen_pool: Vec<usize> = chosen.iter().map(|&i| remaining[i]).collect();
                labelled.extend(&chosen_pool);
                remaining.retain(|i| !chosen_pool.contains(i));
            }
        }
    }
    Ok(())
}

fn remaining_positions(remaining: &[usize]) -> Vec<usize> {
    (0..remaining.len()).collect()
}

/// Trains an ensemble on the labelled pairs (as revealed), then scores the held-out pairs and
/// the remaining pool; answers the held-out accuracy and the pool's member rewards (in
/// `remaining`'s order).
#[allow(clippy::too_many_arguments)]
fn train_and_score(
    args: &SimulateArgs,
    plan: &Plan,
    dir: &Path,
    seed: u64,
    labelled: &[usize],
    flips: &[bool],
    test: &[usize],
    remaining: &[usize],
) -> Result<(f64, Vec<[Vec<f64>; 2]>)> {
    std::fs::create_dir_all(dir)?;
    let train = dir.join("train.jsonl");
    write_lines(&train, labelled.iter().map(|&i| plan.pool[i].revealed(flips[i])))?;
    let eval = dir.join("eval.jsonl");
    write_lines(&eval, test.iter().chain(remaining).map(|&i| plan.pool[i].revealed(false)))?;
    let model = dir.join("rm");
    let n = |x: usize| x.to_string();
    let mut rm: Vec<String> =
        ["rm", "--data", &path_str(&train), "--out", &path_str(&model), "--ensemble", &args.ensemble.to_string()].map(String::from).to_vec();
    rm.extend(
        [
            ("--val-fraction", "0".to_string()),
            ("--seed", seed.to_string()),
            ("--epochs", n(args.epochs)),
            ("--lr", args.lr.to_string()),
            ("--batch-size", "16".to_string()),
            ("--n-embd", n(args.n_embd)),
            ("--n-layer", n(args.n_layer)),
            ("--n-head", n(args.n_head)),
            ("--max-len", n(args.max_len)),
            ("--vocab-size", n(args.vocab_size)),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v]),
    );
    trainer(plan, dir, &rm)?;
    let scores = dir.join("scores.jsonl");
    trainer(plan, dir, &["score", "--model", &path_str(&model), "--data", &path_str(&eval), "--out", &path_str(&scores)].map(String::from))?;
    let members = read_member_scores(&scores)?;
    if members.len() != test.len() + remaining.len() {
        bail!("{}: {} scores for {} pairs", scores.display(), members.len(), test.len() + remaining.len());
    }
    let pool_scores = members[test.len()..].to_vec();
    // The round's models are not needed again.
    let _ = std::fs::remove_dir_all(&model);
    Ok((accuracy(&members[..test.len()]), pool_scores))
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn write_lines(path: &Path, rows: impl Iterator<Item = Value>) -> Result<()> {
    let mut text = String::new();
    for row in rows {
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Runs the trainer with `args`, its output in `dir/trainer.log`; an error quotes its last lines.
fn trainer(plan: &Plan, dir: &Path, args: &[String]) -> Result<()> {
    let log = dir.join("trainer.log");
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let status = Command::new(&plan.trainer)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("starting {}", plan.trainer.display()))?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("rewardlab-train {} exited with {status}:\n{}", args[0], tail.join("\n"));
    }
    Ok(())
}

/// Per line of a `score` output: [chosen's member rewards, rejected's] (a single model: its reward).
fn read_member_scores(path: &Path) -> Result<Vec<[Vec<f64>; 2]>> {
    let mut out = Vec::new();
    for (n, line) in std::fs::read_to_string(path)?.lines().enumerate() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        let nums = |x: &Value| -> Vec<f64> { x.as_array().map(|a| a.iter().map(|y| y.as_f64().unwrap_or(f64::NAN)).collect()).unwrap_or_default() };
        let pair = match v["member_rewards"].as_array() {
            Some(m) if m.len() == 2 => [nums(&m[0]), nums(&m[1])],
            _ => [vec![v["chosen_reward"].as_f64().unwrap_or(f64::NAN)], vec![v["rejected_reward"].as_f64().unwrap_or(f64::NAN)]],
        };
        out.push(pair);
    }
    Ok(out)
}

fn print_report(args: &SimulateArgs, plan: &Plan, r: &Results) {
    println!(
        "replay of {} ({} pairs; {} held out per seed), budget {} in {} rounds, noise {}, {} seed(s), ensembles of {}",
        args.data.display(),
        plan.pool.len(),
        held_out_count(plan.pool.len(), args.test_fraction),
        args.budget,
        args.rounds,
        args.noise,
        args.seeds,
        args.ensemble
    );
    println!("held-out accuracy (mean ± 95% interval over seeds) against labels used:");
    print!("{:<12}", "labels");
    for l in &r.labels {
        print!("{l:>16}");
    }
    println!();
    for (si, s) in plan.strategies.iter().enumerate() {
        print!("{:<12}", s.as_str());
        for xs in &r.acc[si] {
            let (m, h) = mean_ci(xs);
            print!("{:>16}", if h.is_nan() { format!("{m:.4}") } else { format!("{m:.4} ± {h:.4}") });
        }
        println!();
    }
    let means = |si: usize| -> Vec<f64> { r.acc[si].iter().map(|xs| mean_ci(xs).0).collect() };
    let Some(fifo) = plan.strategies.iter().position(|&s| s == QueueStrategy::Fifo) else {
        println!("(no fifo baseline among the strategies: no labels-to-reach figures)");
        return;
    };
    let target = means(fifo).last().copied().unwrap_or(f64::NAN);
    println!("labels needed to reach fifo's final mean accuracy {target:.4}:");
    for (si, s) in plan.strategies.iter().enumerate() {
        match labels_to_reach(&r.labels, &means(si), target) {
            Some(l) => println!("  {:<12} {l} ({:+.0}% against fifo's {})", s.as_str(), (l as f64 / args.budget as f64 - 1.0) * 100.0, args.budget),
            None => println!("  {:<12} not reached within {} labels", s.as_str(), args.budget),
        }
    }
}

/// An SVG line chart: mean held-out accuracy against labels, one line per strategy with its
/// 95% band.
fn chart(strategies: &[QueueStrategy], r: &Results) -> String {
    const W: f64 = 640.0;
    const H: f64 = 400.0;
    const M: f64 = 56.0;
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let stats: Vec<Vec<(f64, f64)>> = r.acc.iter().map(|pts| pts.iter().map(|xs| mean_ci(xs)).collect()).collect();
    let ys = stats.iter().flatten().flat_map(|&(m, h)| [m - if h.is_nan() { 0.0 } else { h }, m + if h.is_nan() { 0.0 } else { h }]).filter(|y| y.is_finite());
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let (lo, hi) = if lo.is_finite() { ((lo - 0.01).max(0.0), (hi + 0.01).min(1.0)) } else { (0.0, 1.0) };
    let x_max = *r.labels.last().unwrap_or(&1) as f64;
    let x = |l: usize| M + (l as f64 / x_max) * (W - 2.0 * M);
    let y = |a: f64| H - M - (a - lo) / (hi - lo).max(1e-9) * (H - 2.0 * M);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    svg += &format!("<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n<text x=\"{M}\" y=\"20\" font-size=\"14\">Held-out accuracy against labels used (mean, 95% band over seeds)</text>\n");
    svg += &format!("<line x1=\"{M}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", H - M, W - M, H - M);
    svg += &format!("<line x1=\"{M}\" y1=\"{M}\" x2=\"{M}\" y2=\"{}\" stroke=\"black\"/>\n", H - M);
    for &l in &r.labels {
        svg += &format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{l}</text>\n", x(l), H - M + 16.0);
    }
    for i in 0..=4 {
        let a = lo + (hi - lo) * i as f64 / 4.0;
        svg += &format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{a:.3}</text>\n", M - 6.0, y(a) + 4.0);
    }
    svg += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">labels used</text>\n", W / 2.0, H - 12.0);
    for (si, s) in strategies.iter().enumerate() {
        let c = colours[si % colours.len()];
        let pts: Vec<(usize, f64, f64)> = r.labels.iter().zip(&stats[si]).map(|(&l, &(m, h))| (l, m, if h.is_nan() { 0.0 } else { h })).collect();
        let upper: Vec<String> = pts.iter().map(|&(l, m, h)| format!("{:.1},{:.1}", x(l), y(m + h))).collect();
        let lower: Vec<String> = pts.iter().rev().map(|&(l, m, h)| format!("{:.1},{:.1}", x(l), y(m - h))).collect();
        svg += &format!("<polygon points=\"{} {}\" fill=\"{c}\" fill-opacity=\"0.15\" stroke=\"none\"/>\n", upper.join(" "), lower.join(" "));
        let line: Vec<String> = pts.iter().map(|&(l, m, _)| format!("{:.1},{:.1}", x(l), y(m))).collect();
        svg += &format!("<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"/>\n", line.join(" "));
        svg += &format!("<text x=\"{}\" y=\"{}\" fill=\"{c}\">{}</text>\n", W - M - 90.0, M + 16.0 * si as f64, s.as_str());
    }
    svg + "</svg>\n"
}

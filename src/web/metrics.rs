//! `/metrics` in Prometheus' text format: request counts and latencies by route pattern (never
//! the raw path, so ids do not make new series) and status, judgements stored per project, and
//! the figures a lead watches, computed in SQL at scrape time and kept for a few seconds so that
//! frequent scrapes cost one computation. Off unless a token (`--metrics-token`) or a separate address
//! (`--metrics-bind`) is configured.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use super::error::{ApiError, AppError};
use crate::db::metrics::Figures;
use crate::settings::Secret;

/// How long computed figures are served before they are computed again.
pub const FIGURES_TTL: Duration = Duration::from_secs(5);
/// How long the review backlog is served before it is counted again: it needs every project's
/// agreement figures (the review stream's order), too much for every scrape.
pub const REVIEW_BACKLOG_TTL: Duration = Duration::from_secs(60);

/// Judgements waiting in each project's review stream, by slug.
type Backlog = Vec<(String, i64)>;

/// The server's request metrics and its cache of the lead's figures.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    judgements: IntCounterVec,
    figures: Mutex<Option<(Instant, String)>>,
    review_backlog: Mutex<Option<(Instant, Backlog)>>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("rewardlab_http_requests_total", "HTTP requests answered, by method, route pattern and status"),
            &["method", "route", "status"],
        )
        .expect("a valid metric");
        let buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let latency = HistogramVec::new(
            HistogramOpts::new("rewardlab_http_request_duration_seconds", "Time to answer an HTTP request, by method, route pattern and status")
                .buckets(buckets),
            &["method", "route", "status"],
        )
        .expect("a valid metric");
        let judgements = IntCounterVec::new(
            Opts::new("rewardlab_judgements_total", "Judgements this server stored, per project (judgements per minute: 60 * rate(…[1m]))"),
            &["project"],
        )
        .expect("a valid metric");
        registry.register(Box::new(requests.clone())).expect("registered once");
        registry.register(Box::new(latency.clone())).expect("registered once");
        registry.register(Box::new(judgements.clone())).expect("registered once");
        Self { registry, requests, latency, judgements, figures: Mutex::new(None), review_backlog: Mutex::new(None) }
    }

    /// Counts a judgement stored in project `slug`.
    pub fn judgement_stored(&self, slug: &str) {
        self.judgements.with_label_values(&[slug]).inc();
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    /// The request metrics followed by the lead's figures (computed at most every [`FIGURES_TTL`]).
    async fn render(&self, pool: &sqlx::PgPool, quality: &std::sync::Arc<crate::services::quality_cache::Cache>) -> Result<String, AppError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).map_err(anyhow::Error::from)?;
        let cached = self.figures.lock().expect("the figures lock").as_ref().filter(|(at, _)| at.elapsed() < FIGURES_TTL).map(|(_, text)| text.clone());
        let figures = match cached {
            Some(text) => text,
            None => {
                let figures = crate::db::metrics::figures(&mut *pool.acquire().await?).await?;
                let cached =
                    self.review_backlog.lock().expect("the backlog lock").as_ref().filter(|(at, _)| at.elapsed() < REVIEW_BACKLOG_TTL).map(|(_, b)| b.clone());
                let backlog = match cached {
                    Some(b) => b,
                    None => {
                        let b = crate::services::review::backlogs(pool, quality).await?;
                        *self.review_backlog.lock().expect("the backlog lock") = Some((Instant::now(), b.clone()));
                        b
                    }
                };
                let text = encode_figures(&figures, &backlog)?;
                *self.figures.lock().expect("the figures lock") = Some((Instant::now(), text.clone()));
                text
            }
        };
        let mut text = String::from_utf8(out).map_err(anyhow::Error::from)?;
        text.push_str(&figures);
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The lead's figures in the text format.
fn encode_figures(f: &Figures, review_backlog: &[(String, i64)]) -> anyhow::Result<String> {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let real = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<GaugeVec> {
        let g = GaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let open =
        gauge("rewardlab_open_items", "Items the labelling queue holds open, per project (closed as they complete, at most a few seconds late)", &["project"])?;
    let leases = gauge("rewardlab_live_leases", "Tasks leased to a labeller and not yet expired, per project", &["project"])?;
    let active = gauge("rewardlab_active_labellers", "Members whose newest task in the project was leased in the last 15 minutes", &["project"])?;
    let agreement = real(
        "rewardlab_rm_agreement",
        "Validation accuracy of the project's newest succeeded reward model: the share of held-out human comparisons it orders the same way",
        &["project", "run"],
    )?;
    let kl = real("rewardlab_ppo_kl", "The last reported KL to the reference policy of the project's newest PPO run that reported one", &["project", "run"])?;
    let runs = gauge("rewardlab_runs", "Training runs by project and status", &["project", "status"])?;
    let paused = gauge("rewardlab_paused_labellers", "Labellers paused in the project for their gold score (not yet lifted)", &["project"])?;
    let deliveries = gauge(
        "rewardlab_webhook_deliveries",
        "Webhook deliveries by project and state: pending (waiting for an attempt or a retry), delivered, failed (gave up)",
        &["project", "state"],
    )?;
    let lease = real(
        "rewardlab_worker_lease_remaining_seconds",
        "Seconds until the earliest lease of a worker's running runs expires; each heartbeat renews it, so a negative value is a worker that stopped beating",
        &["worker"],
    )?;
    for p in &f.projects {
        let slug = [p.slug.as_str()];
        open.with_label_values(&slug).set(p.open_items);
        leases.with_label_values(&slug).set(p.live_leases);
        active.with_label_values(&slug).set(p.active_labellers);
        paused.with_label_values(&slug).set(p.paused_labellers);
        if let (Some(value), Some(run)) = (p.rm_agreement, p.rm_run) {
            agreement.with_label_values(&[p.slug.as_str(), &run.to_string()]).set(value);
        }
        if let (Some(value), Some(run)) = (p.ppo_kl, p.ppo_run) {
            kl.with_label_values(&[p.slug.as_str(), &run.to_string()]).set(value);
        }
    }
    let backlog = gauge(
        "rewardlab_review_backlog",
        "Judgements in the project's review stream not yet reviewed: those on low-agreement items, by flagged or paused labellers, and the random sample at the review rate (counted at most every minute)",
        &["project"],
    )?;
    for (slug, n) in review_backlog {
        backlog.with_label_values(&[slug.as_str()]).set(*n);
    }
    for r in &f.runs {
        runs.with_label_values(&[r.slug.as_str(), r.status.as_str()]).set(r.count);
    }
    for (slug, state, n) in &f.webhook_deliveries {
        deliveries.with_label_values(&[slug.as_str(), state.as_str()]).set(*n);
    }
    for w in &f.workers {
        lease.with_label_values(&[w.worker.as_str()]).set(w.lease_remaining_seconds);
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}

/// Counts and times every request by the pattern of the route that answered it.
pub async fn track(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let method = req.method().clone();
    let res = next.call(req).await;
    if let Some(metrics) = metrics {
        let (route, status) = match &res {
            Ok(r) => (r.request().match_pattern().unwrap_or_else(|| "unmatched".into()), r.status().as_u16()),
            Err(e) => ("unmatched".into(), e.as_response_error().status_code().as_u16()),
        };
        metrics.observe(method.as_str(), &route, status, start.elapsed().as_secs_f64());
    }
    res
}

/// What `/metrics` needs to answer.
pub struct Scrape {
    pub pool: sqlx::PgPool,
    pub quality: std::sync::Arc<crate::services::quality_cache::Cache>,
    pub metrics: web::Data<Metrics>,
    /// The bearer token a scraper must send; `None` on a separate metrics address.
    pub token: Option<Secret<String>>,
}

/// `GET /metrics`.
pub async fn scrape(req: HttpRequest, scrape: web::Data<Scrape>) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &scrape.token {
        let given = req.headers().get("Authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        if !super::auth::constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
            return Err(AppError::Unauthorized.into());
        }
    }
    let text = scrape.metrics.render(&scrape.pool, &scrape.quality).await?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}

/// A server answering only `/metrics` on its own address (`--metrics-bind`), e.g. one that only
/// the monitoring network reaches; with a token it is still required.
pub fn separate_server(
    bind: &str,
    pool: sqlx::PgPool,
    quality: std::sync::Arc<crate::services::quality_cache::Cache>,
    metrics: web::Data<Metrics>,
    token: Option<Secret<String>>,
) -> anyhow::Result<(actix_web::dev::Server, u16)> {
    use anyhow::Context;
    let scrape = web::Data::new(Scrape { pool, quality, metrics, token });
    let server = actix_web::HttpServer::new(move || actix_web::App::new().app_data(scrape.clone()).route("/metrics", web::get().to(self::scrape)))
        .workers(1)
        .bind(bind)
        .with_context(|| format!("listening for metrics scrapes on {bind}"))?;
    let port = server.addrs().first().map(|a| a.port()).unwrap_or(0);
    Ok((server.disable_signals().run(), port))
}

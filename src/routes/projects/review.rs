//! The review page for a project's reviewers and leads: the stream's next judgement as the
//! labeller made it, accepted (`a`) or rejected with a reason (`r`), and, on an item whose
//! labellers disagree, its final judgement; and the page where a labeller sees their rejected
//! work and why.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db::projects::Project;
use crate::db::review::Rejected;
use crate::domain::quality::parse_letter_ranking;
use crate::domain::review::Decision;
use crate::domain::{ItemId, JudgementId, ResponseId, Role};
use crate::routes::pages::{html, redirect, Layout};
use crate::services::project;
use crate::services::review::{self, AdjudicationInput, Entry};
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/review.html")]
pub struct ReviewPage {
    pub layout: Layout,
    pub project: Project,
    pub rate: f64,
    pub pending: i64,
    pub entry: Option<Entry>,
    /// The next judgements after this one (their labellers and why they are here).
    pub queue: Vec<Entry>,
}

impl ReviewPage {
    pub fn pct(&self) -> String {
        format!("{:.0}%", self.rate * 100.0)
    }

    /// The response ids in the order shown, for the adjudication form.
    pub fn shown_ids(&self) -> String {
        self.entry.as_ref().map(|e| e.responses.iter().map(|r| r.response_id.to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default()
    }

    pub fn seconds(&self, ms: &Option<i64>) -> String {
        ms.map_or_else(|| "–".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
    }

    pub fn agreement(&self, w: &Option<f64>) -> String {
        w.map_or_else(|| "– (one labeller)".into(), |w| format!("{w:.2}"))
    }

    pub fn pairwise(&self) -> bool {
        self.project.kind == crate::domain::TaskKind::Pairwise
    }
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Reviewer).await?;
    let s = review::stream(&state.pool, &state.quality, &p, auth.user.id, 6).await?;
    let mut entries = s.entries.into_iter();
    let entry = entries.next();
    Ok(html(&ReviewPage { layout: Layout::of(&auth), project: p, rate: s.rate, pending: s.pending, entry, queue: entries.collect() }))
}

#[derive(Deserialize)]
pub struct ReviewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
}

pub async fn decide(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, form: web::Form<ReviewForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, judgement) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Reviewer).await?;
    let judgement: JudgementId = judgement.parse().map_err(|_| AppError::NotFound)?;
    let decision: Decision = form.decision.parse().map_err(AppError::Invalid)?;
    review::review(&state.pool, &p, auth.user.id, judgement, decision, &form.reason).await?;
    Ok(redirect(&format!("/projects/{}/review", p.slug)))
}

#[derive(Deserialize)]
pub struct AdjudicationForm {
    #[serde(default)]
    csrf: String,
    /// Response letters as shown on the review page, best first: `B > A = C`.
    #[serde(default)]
    ranking: String,
    /// The response ids in the order the letters name them, comma-separated.
    #[serde(default)]
    shown: String,
    #[serde(default)]
    strength: String,
    #[serde(default)]
    both_bad: Option<String>,
    #[serde(default)]
    note: String,
}

impl AdjudicationForm {
    fn tiers(&self) -> Result<Vec<Vec<ResponseId>>, String> {
        let shown: Vec<ResponseId> =
            self.shown.split(',').map(|s| s.trim().parse().map_err(|_| "shown: expected the response ids as shown".to_string())).collect::<Result<_, _>>()?;
        let tiers = parse_letter_ranking(&self.ranking, shown.len()).map_err(|e| format!("ranking: {e}"))?;
        Ok(tiers.iter().map(|t| t.iter().map(|&i| shown[i]).collect()).collect())
    }

    fn strength(&self) -> Result<Option<i16>, String> {
        match self.strength.trim() {
            "" => Ok(None),
            s => s.parse().map(Some).map_err(|_| format!("strength: expected 1, 2 or 3, got {s:?}")),
        }
    }
}

pub async fn adjudicate(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
    form: web::Form<AdjudicationForm>,
) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, item) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Reviewer).await?;
    let item: ItemId = item.parse().map_err(|_| AppError::NotFound)?;
    let tiers = form.tiers().map_err(AppError::Invalid)?;
    let strength = form.strength().map_err(AppError::Invalid)?;
    let input = AdjudicationInput { ranking: &tiers, strength, both_bad: form.both_bad.is_some(), note: &form.note };
    review::adjudicate(&state.pool, &p, auth.user.id, item, &input).await?;
    Ok(redirect(&format!("/projects/{}/review", p.slug)))
}

#[derive(Template)]
#[template(path = "projects/rejected.html")]
pub struct RejectedPage {
    pub layout: Layout,
    pub project: Project,
    pub rejected: Vec<Rejected>,
}

impl RejectedPage {
    pub fn prompt(&self, r: &Rejected) -> String {
        crate::export::prompt_string(&r.prompt, &None)
    }

    pub fn letter(&self, k: &usize) -> char {
        char::from(b'A' + (*k % 26) as u8)
    }

    pub fn rank(&self, r: &Rejected, k: &usize) -> String {
        r.ranks.get(*k).map_or_else(String::new, |x| x.to_string())
    }
}

pub async fn rejected(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Labeller).await?;
    let rejected = review::rejected(&state.pool, &p, auth.user.id).await?;
    Ok(html(&RejectedPage { layout: Layout::of(&auth), project: p, rejected }))
}

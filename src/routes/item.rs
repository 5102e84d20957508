//! One item as its project's leads see it: the prompt, each response with its model and, for
//! generated ones, their provenance (runs, checkpoint and its sha256, sampling settings), and
//! every judgement of it.

use actix_web::{web, HttpResponse};
use askama::Template;

use super::pages::{html, Layout};
use super::projects::tabs::TabBar;
use crate::db::items::{self, ItemView, JudgementView, ResponseView};
use crate::db::projects::Project;
use crate::domain::provenance::Provenance;
use crate::domain::{ItemId, Role};
use crate::services::project;
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "items/show.html")]
pub struct ItemPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    pub item: ItemView,
    pub prompt: String,
    pub responses: Vec<ResponseRow>,
    pub judgements: Vec<JudgementRow>,
    /// The item's gold reference, when it is a gold item or honeypot.
    pub gold: Option<crate::db::quality::Gold>,
}

/// A response with its letter (as judgements refer to it) and provenance.
pub struct ResponseRow {
    pub letter: char,
    pub r: ResponseView,
    pub provenance: Option<Provenance>,
    pub policy_run: Option<uuid::Uuid>,
    pub generate_run: Option<uuid::Uuid>,
}

/// A judgement, summarised in words.
pub struct JudgementRow {
    pub j: JudgementView,
    pub ranking: String,
    pub flags: String,
}

fn letter(position: usize) -> char {
    char::from(b'A' + (position % 26) as u8)
}

impl ResponseRow {
    fn new(position: usize, r: ResponseView) -> Self {
        let provenance = r.metadata.as_ref().and_then(Provenance::from_metadata);
        let run = |id: Option<&String>| id.and_then(|s| s.parse().ok());
        let (policy_run, generate_run) = provenance.as_ref().map_or((None, None), |p| (run(p.policy_run.as_ref()), run(p.generate_run.as_ref())));
        Self { letter: letter(position), r, provenance, policy_run, generate_run }
    }
}

impl JudgementRow {
    fn new(j: JudgementView) -> Self {
        let ranking = j.ranks.as_ref().map_or_else(String::new, |ranks| {
            let mut order: Vec<(i16, char)> = ranks.iter().enumerate().map(|(p, r)| (*r, letter(p))).collect();
            order.sort();
            order.iter().map(|(r, l)| format!("{r}. {l}")).collect::<Vec<_>>().join(" · ")
        });
        let flags = j.flags.as_object().map_or_else(String::new, |m| {
            let mut parts: Vec<(usize, String)> = m
                .iter()
                .filter_map(|(p, names)| {
                    let names: Vec<&str> = names.as_array()?.iter().filter_map(|n| n.as_str()).collect();
                    (!names.is_empty()).then(|| (p.parse().unwrap_or(0), names.join(", ")))
                })
                .collect();
            parts.sort();
            parts.iter().map(|(p, n)| format!("{}: {n}", letter(*p))).collect::<Vec<_>>().join("; ")
        });
        Self { j, ranking, flags }
    }
}

impl ItemPage {
    /// The gold reference in letters, best first (`B > A = C`); empty when not gold.
    pub fn gold_ranking(&self) -> String {
        let Some(g) = &self.gold else { return String::new() };
        let mut levels = g.ranks.clone();
        levels.sort();
        levels.dedup();
        let tier = |l: &i16| g.ranks.iter().enumerate().filter(|(_, r)| *r == l).map(|(p, _)| letter(p).to_string()).collect::<Vec<_>>().join(" = ");
        levels.iter().map(tier).collect::<Vec<_>>().join(" > ")
    }

    /// The item's metadata as indented JSON (empty when there is none).
    pub fn metadata(&self) -> String {
        self.item.metadata.as_ref().and_then(|m| serde_json::to_string_pretty(m).ok()).unwrap_or_default()
    }
}

pub async fn show(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (slug, item) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let item: ItemId = item.parse().map_err(|_| AppError::NotFound)?;
    let mut conn = state.pool.acquire().await?;
    let (item, responses, judgements) = items::for_lead(&mut conn, p.id, item, auth.user.id).await?.ok_or(AppError::NotFound)?;
    let prompt = crate::export::prompt_string(&item.prompt, &item.prompt_raw);
    let responses = responses.into_iter().enumerate().map(|(p, r)| ResponseRow::new(p, r)).collect();
    let judgements = judgements.into_iter().map(JudgementRow::new).collect();
    drop(conn);
    let gold = crate::services::quality::gold_of(&state.pool, item.id).await?;
    Ok(html(&ItemPage { layout: Layout::of(&auth), tabs: TabBar::new(&p, "items"), project: p, item, prompt, responses, judgements, gold }))
}

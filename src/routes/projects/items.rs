//! The Items tab: the lead's item browser (search the texts; filter by status, model,
//! labeller, flag, source and date; keyset pages) and the import form.

use actix_web::{web, HttpResponse};
use askama::Template;

use super::tabs::TabBar;
use crate::db::item_list::ItemRow;
use crate::db::projects::Project;
use crate::domain::item_filter::{parse_cursor, ItemFilter, ItemQuery};
use crate::domain::{ItemId, Role};
use crate::routes::pages::{html, redirect, Layout};
use crate::services::{items, project};
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/items.html")]
pub struct ItemsPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    /// The query as typed, to fill the form in again.
    pub q: ItemQuery,
    pub items: Vec<ItemRow>,
    /// The link to the next page, with the same filters.
    pub next: Option<String>,
    /// Whether this is a later page (a link back to the first is shown).
    pub later: bool,
    /// This page's path and query, to come back to after excluding items.
    pub here: String,
}

impl ItemsPage {
    /// Whether `value` is the selected option of a select whose current value is `current`.
    pub fn selected(&self, current: &str, value: &str) -> bool {
        current == value
    }

    /// An item's status from its submitted judgements and the overlap.
    pub fn status(&self, i: &ItemRow) -> &'static str {
        if i.excluded {
            return "excluded";
        }
        match i.done {
            0 => "unlabelled",
            n if n < i64::from(self.project.overlap.get()) => "in progress",
            _ => "complete",
        }
    }
}

/// The query string of the same filters at cursor `before`.
fn next_link(slug: &str, q: &ItemQuery, before: i64) -> String {
    let fields = [
        ("q", &q.q),
        ("responses", &q.responses),
        ("status", &q.status),
        ("model", &q.model),
        ("labeller", &q.labeller),
        ("flag", &q.flag),
        ("source", &q.source),
        ("from", &q.from),
        ("to", &q.to),
        ("gold", &q.gold),
        ("review", &q.review),
        ("min_agreement", &q.min_agreement),
        ("max_agreement", &q.max_agreement),
    ];
    let mut url = form_urlencoded_pairs(fields.iter().filter(|(_, v)| !v.trim().is_empty()).map(|(k, v)| (*k, v.as_str())));
    if !url.is_empty() {
        url.push('&');
    }
    format!("/projects/{slug}/items?{url}before={before}")
}

fn form_urlencoded_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    pairs.map(|(k, v)| format!("{k}={}", urlencoding(v))).collect::<Vec<_>>().join("&")
}

/// Percent-encodes everything but unreserved characters.
fn urlencoding(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn show(
    state: web::Data<AppState>,
    auth: Auth,
    req: actix_web::HttpRequest,
    slug: web::Path<String>,
    q: web::Query<ItemQuery>,
) -> Result<HttpResponse, PageError> {
    let q = q.into_inner();
    let filter = ItemFilter::parse(&q).map_err(AppError::Invalid)?;
    let before = parse_cursor(&q.before).map_err(AppError::Invalid)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let page = items::browse(&state.pool, &state.quality, &p, &auth.user, &filter, before).await?;
    let next = page.next.map(|n| next_link(p.slug.as_str(), &q, n));
    let here = req.uri().path_and_query().map(|pq| pq.to_string()).unwrap_or_default();
    let tabs = TabBar::new(&p, "items");
    let page = ItemsPage { layout: Layout::of(&auth), tabs, project: p, q, items: page.items, next, later: before.is_some(), here };
    Ok(html(&page))
}

/// Excludes the items ticked in the list (`item` fields), then shows the list again (`back`,
/// one of this project's item pages).
pub async fn exclude(
    state: web::Data<AppState>,
    auth: Auth,
    slug: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, PageError> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("");
    auth.check_csrf(field("csrf"))?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let ids: Vec<ItemId> = form
        .iter()
        .filter(|(k, _)| k == "item")
        .map(|(_, v)| v.parse().map_err(|_| AppError::Invalid(format!("item: expected an item id, got {v:?}"))))
        .collect::<Result<_, _>>()?;
    items::exclude(&state.pool, &p, &auth.user, &ids).await?;
    let list = format!("/projects/{}/items", p.slug.as_str());
    let back = Some(field("back")).filter(|b| b.starts_with(&list) && !b.contains("//")).unwrap_or(&list);
    Ok(redirect(back))
}

/// The ticked items (`item` fields) of a bulk action's form, after its CSRF check.
fn ticked(auth: &Auth, form: &[(String, String)]) -> Result<Vec<ItemId>, AppError> {
    auth.check_csrf(field(form, "csrf"))?;
    form.iter().filter(|(k, _)| k == "item").map(|(_, v)| v.parse().map_err(|_| AppError::Invalid(format!("item: expected an item id, got {v:?}")))).collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// Sends the ticked items back with the reason given (their judgements rejected, the items
/// reopened for other labellers), then shows the list again.
pub async fn send_back(
    state: web::Data<AppState>,
    auth: Auth,
    slug: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, PageError> {
    let ids = ticked(&auth, &form)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    crate::services::review::send_back_items(&state.pool, &p, auth.user.id, &ids, field(&form, "reason")).await?;
    let list = format!("/projects/{}/items", p.slug.as_str());
    let back = Some(field(&form, "back")).filter(|b| b.starts_with(&list) && !b.contains("//")).unwrap_or(&list);
    Ok(redirect(back))
}

/// Marks the ticked items gold from their adjudicated or unanimous judgements, and says what
/// became of each.
pub async fn mark_gold(
    state: web::Data<AppState>,
    auth: Auth,
    slug: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, PageError> {
    let ids = ticked(&auth, &form)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let outcomes = crate::services::review::mark_gold_from_judgements(&state.pool, &p, auth.user.id, &ids).await?;
    let marked = outcomes.iter().filter(|o| o.marked).count();
    let refused: Vec<String> = outcomes.iter().filter(|o| !o.marked).map(|o| format!("{}: {}", o.item, o.reason)).collect();
    let message = if refused.is_empty() {
        format!("{marked} item(s) marked gold.")
    } else {
        format!("{marked} item(s) marked gold. Not marked: {}.", refused.join("; "))
    };
    let page =
        crate::routes::pages::MessagePage { layout: Layout::of(&auth), title: "Mark gold", message, back: format!("/projects/{}/items", p.slug.as_str()) };
    Ok(html(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_keeps_the_filters_encoded() {
        let q = ItemQuery { q: "a&b c".into(), flag: "*".into(), ..ItemQuery::default() };
        assert_eq!(next_link("demo", &q, 42), "/projects/demo/items?q=a%26b%20c&flag=%2A&before=42");
    }
}

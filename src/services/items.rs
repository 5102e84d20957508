//! The lead's item browser: a page of a project's items matching a filter, and excluding items.

use sqlx::PgPool;

use super::error::{AppError, DbContext};
use crate::db::item_list::{self, ItemRow};
use crate::db::projects::Project;
use crate::db::users::User;
use crate::domain::item_filter::ItemFilter;
use crate::domain::ItemId;

/// Most items excluded in one request.
pub const MAX_EXCLUDE: usize = 1000;

/// Items a page shows.
pub const PAGE: i64 = 50;

/// A page of items and the cursor of the next one (none on the last page).
pub struct ItemPage {
    pub items: Vec<ItemRow>,
    pub next: Option<i64>,
}

pub async fn browse(pool: &PgPool, p: &Project, user: &User, filter: &ItemFilter, before: Option<i64>) -> Result<ItemPage, AppError> {
    let mut conn = pool.acquire().await?;
    // Agreement is computed from the judgements (as the quality report does), then filtered on.
    let in_agreement: Option<Vec<ItemId>> = match filter.filters_agreement() {
        true => {
            let rows = crate::db::quality::judged(&mut conn, p.id, None).await.context("reading judgements for agreement")?;
            let items = tokio::task::spawn_blocking(move || crate::domain::quality::item_agreement(&rows)).await.map_err(|e| AppError::Unexpected(e.into()))?;
            Some(items.into_iter().filter(|a| filter.agreement_matches(a.w)).map(|a| a.item).collect())
        }
        false => None,
    };
    let mut items =
        item_list::page(&mut conn, p.id, user.id, p.overlap.get(), filter, before, PAGE + 1, in_agreement.as_deref()).await.context("listing items")?;
    let next = (items.len() as i64 > PAGE).then(|| {
        items.truncate(PAGE as usize);
        items.last().map(|i| i.seq)
    });
    Ok(ItemPage { items, next: next.flatten() })
}

/// Excludes items of `p` (its lead's action, checked in the query); how many were new.
pub async fn exclude(pool: &PgPool, p: &Project, user: &User, items: &[ItemId]) -> Result<u64, AppError> {
    if items.is_empty() {
        return Err(AppError::Invalid("items: choose at least one item".into()));
    }
    if items.len() > MAX_EXCLUDE {
        return Err(AppError::Invalid(format!("items: at most {MAX_EXCLUDE} at once, got {}", items.len())));
    }
    let mut tx = pool.begin().await?;
    let n = item_list::exclude(&mut tx, p.id, user.id, items).await.context("excluding items")?;
    tx.commit().await.context("excluding items")?;
    Ok(n)
}

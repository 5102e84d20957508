//! The lead's item browser: a page of a project's items matching a filter, and excluding items.

use std::sync::Arc;

use sqlx::PgPool;

use super::error::{AppError, DbContext};
use super::quality_cache::Cache;
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

pub async fn browse(pool: &PgPool, cache: &Arc<Cache>, p: &Project, user: &User, filter: &ItemFilter, before: Option<i64>) -> Result<ItemPage, AppError> {
    // Agreement comes from the project's quality figures (as the quality report's), then is filtered on.
    let in_agreement: Option<Vec<ItemId>> = match filter.filters_agreement() {
        true => {
            let figures = cache.figures(pool, p.id, p.kind).await?;
            Some(figures.computed.items.iter().filter(|a| filter.agreement_matches(a.w)).map(|a| a.item).collect())
        }
        false => None,
    };
    let mut tx = pool.begin().await?;
    if in_agreement.is_some() {
        crate::db::plan_for_arguments(&mut tx).await.context("listing items")?;
    }
    let conn = &mut *tx;
    let mut items = item_list::page(conn, p.id, user.id, p.overlap.get(), filter, before, PAGE + 1, in_agreement.as_deref()).await.context("listing items")?;
    tx.commit().await?;
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

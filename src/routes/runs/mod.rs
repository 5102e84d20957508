//! The runs pages of a project's lead: the Runs tab (runs grouped by chain, the form that
//! starts a run with typed fields, schedules), a run's own page, and two runs compared.

pub mod list;
pub mod regression;
pub mod schedules;
pub mod show;
pub mod start;

pub use list::list;
pub use schedules::{add_schedule, delete_schedule};
pub use show::{cancel, compare, file, live, show};
pub use start::start;

use crate::db::runs::{self as dbr, Run};
use crate::domain::RunId;
use crate::web::auth::Auth;
use crate::web::error::AppError;
use crate::web::AppState;

/// The run if the caller leads its project and it belongs to `slug`.
async fn lead_run(state: &AppState, auth: &Auth, slug: &str, id: &str) -> Result<Run, AppError> {
    let id: RunId = id.parse().map_err(|_| AppError::NotFound)?;
    let mut conn = state.pool.acquire().await?;
    dbr::get_for_lead(&mut conn, id, auth.user.id).await?.filter(|r| r.slug == slug).ok_or(AppError::NotFound)
}

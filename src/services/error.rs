//! What a use case can answer besides success: variants a user can act on, and `Unexpected`
//! for everything else (logged, never shown). The web layer maps them to HTTP statuses.

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("sign in first")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooMany(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("the database is not reachable right now (it may be restarting); try again in a few seconds")]
    Unavailable,
    #[error("something went wrong on our side")]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Self::Unavailable,
            // admin_shutdown, crash_shutdown, cannot_connect_now and the connection exceptions:
            // the server is going down or coming back up.
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&c.as_ref())) => {
                Self::Unavailable
            }
            // A NUL character that slipped past the checks at the boundary: still the caller's input.
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "22021" || c == "22P05") => {
                Self::Invalid("text may not contain the NUL character (\\u0000)".into())
            }
            _ => Self::Unexpected(e.into()),
        }
    }
}

/// `.context("…")` for a database error crossing into a use case: the variants a user can act
/// on (unavailable, a NUL in their text) stay; anything else carries `what` into the log.
pub trait DbContext<T> {
    fn context(self, what: &'static str) -> Result<T, AppError>;
}

impl<T> DbContext<T> for sqlx::Result<T> {
    fn context(self, what: &'static str) -> Result<T, AppError> {
        self.map_err(|e| match AppError::from(e) {
            AppError::Unexpected(e) => AppError::Unexpected(e.context(what)),
            other => other,
        })
    }
}

//! One error type for the web layer, the use cases' [`AppError`]. Pages render it as an HTML
//! page, the API as `{"error": {"code", "message"}}`. Database text never reaches a user.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

pub use crate::services::error::{AppError, DbContext};

impl AppError {
    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::Invalid(_) => "invalid",
            Self::Conflict(_) => "conflict",
            Self::TooMany(_) => "too_many_requests",
            Self::TooLarge(_) => "too_large",
            Self::Unavailable => "unavailable",
            Self::Unexpected(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn log(&self) {
        match self {
            Self::Unexpected(e) => log::error!("{e:#}"),
            Self::Unavailable => log::warn!("a request failed while the database was unreachable"),
            _ => {}
        }
    }
}

/// The error of a page handler: an HTML page, or the login page for a visitor.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PageError(#[from] pub AppError);

/// `?` on database and unexpected errors inside page and API handlers.
macro_rules! from_unexpected {
    ($($target:ident),*) => {$(
        impl From<sqlx::Error> for $target {
            fn from(e: sqlx::Error) -> Self {
                Self(e.into())
            }
        }

        impl From<anyhow::Error> for $target {
            fn from(e: anyhow::Error) -> Self {
                Self(e.into())
            }
        }
    )*};
}

from_unexpected!(PageError, ApiError);

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.0.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.log();
        if matches!(self.0, AppError::Unauthorized) {
            return HttpResponse::SeeOther().insert_header(("Location", "/login")).finish();
        }
        let page = super::page::ErrorPage { layout: Default::default(), status: self.0.status().as_u16(), message: self.0.to_string() };
        super::page::html_with_status(self.0.status(), &page)
    }
}

/// The error of an API handler: JSON.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub AppError);

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.log();
        HttpResponse::build(self.0.status()).json(serde_json::json!({"error": {"code": self.0.code(), "message": self.0.to_string()}}))
    }
}

impl From<crate::services::runs::Refusal> for AppError {
    fn from(e: crate::services::runs::Refusal) -> Self {
        match e {
            crate::services::runs::Refusal::Invalid(message) => Self::Invalid(message),
            crate::services::runs::Refusal::Database(e) => e.into(),
        }
    }
}

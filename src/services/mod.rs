//! Use cases the pages (`routes/`), the JSON API (`api/`) and the CLI share, written once. They
//! take values already parsed into domain types and the caller already authenticated; each
//! owns its transaction, and answers an [`AppError`]. Below them only `db/`, `export/`,
//! `import` and `domain/`; nothing here knows about HTTP.

pub mod accounts;
pub mod error;
pub mod exports;
pub mod imports;
pub mod items;
pub mod labelling;
pub mod people;
pub mod projects;
pub mod quality;
pub mod quality_cache;
pub mod queue;
pub mod regression;
pub mod review;
pub mod runs;
pub mod watchdog;
pub mod webhooks;

pub use error::AppError;
pub use projects::project;

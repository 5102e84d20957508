// `sqlx::migrate!` embeds the migrations at compile time; a new file in `migrations/` must
// rebuild the crate (sqlx's documented remedy). The query macros read `.sqlx/` (see
// scripts/sqlx-prepare), which cargo does not know about either.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=.sqlx");
}

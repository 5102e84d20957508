//! The platform's integration tests: the real server on port 0, a real PostgreSQL (a private
//! cluster started by the harness, a fresh database per test) and a real headless browser.

mod access;
mod auth;
mod browser;
mod cli;
mod export;
mod helpers;
mod import;
mod labelling;
mod lifecycle;
mod quality;
mod robustness;
mod runs;
mod webdriver;

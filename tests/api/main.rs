//! The platform's integration tests: the real server on port 0, a real PostgreSQL (a private
//! cluster started by the harness, a fresh database per test) and a real headless browser.

mod access;
mod auth;
mod browser;
mod cli;
mod export;
mod first_steps;
mod forgetting;
mod helpers;
mod import;
mod item_browser;
mod label_page;
mod labelling;
mod lead_pages;
mod lifecycle;
mod metrics;
mod mpi_runs;
mod multi_server;
mod openapi;
mod people;
mod pgbouncer;
mod python_client;
mod quality;
mod queue;
mod regression;
mod review;
mod robustness;
mod run_form;
mod runs;
mod simulate;
mod tokens;
mod trl;
mod watchdog;
mod webdriver;
mod webhooks;

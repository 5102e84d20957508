//! rewardlab: the platform for the human side of RLHF. Labelling teams rank and compare model
//! outputs in a browser; judgements are stored in PostgreSQL and exported as versioned
//! preference datasets.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod db;
pub mod domain;
pub mod export;
pub mod import;
pub mod jobs;
pub mod private_fs;
pub mod routes;
pub mod services;
pub mod settings;
pub mod simulate;
pub mod startup;
pub mod web;

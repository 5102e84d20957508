//! Project pages: the list and a new project, the project itself (for a lead in tabs, see
//! `tabs`: overview, labellers and members, models, items, exports, runs, webhooks, settings), its
//! guidelines and the labelling page. One file an action; each page struct sits beside its
//! handler.

pub mod export;
pub mod guidelines;
pub mod import;
pub mod index;
pub mod items;
pub mod label;
pub mod labellers;
pub mod members;
pub mod models;
pub mod quality;
pub mod review;
pub mod settings;
pub mod show;
pub mod tabs;
pub mod webhooks;

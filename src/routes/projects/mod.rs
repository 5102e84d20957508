//! Project pages: the list and a new project, the project itself (the lead's dashboard,
//! members, import, exports, settings), its guidelines and the labelling page. One file an
//! action; each page struct sits beside its handler.

pub mod export;
pub mod guidelines;
pub mod import;
pub mod index;
pub mod label;
pub mod members;
pub mod quality;
pub mod settings;
pub mod show;

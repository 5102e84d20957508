//! Use cases the pages, the JSON API and the CLI share: each parses nothing (its caller did,
//! at the boundary), checks what needs the database, and decides what commits together.

pub mod runs;

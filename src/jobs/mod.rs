//! Background work on training runs: what a run needs before it is queued (`admit`), when
//! schedules fire (`schedule`), and how workers execute runs (`worker`). What a run is lives
//! in `domain::runs`.

pub mod admit;
pub mod schedule;
pub mod webhooks;
pub mod worker;

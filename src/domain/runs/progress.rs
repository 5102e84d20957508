//! How far a run is: steps (or PPO iterations) done against those planned, which the trainer
//! reports with each step, and the time left at the pace of the current attempt.

/// What the metrics of a run's current attempt say about its pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// The first and the last step of the attempt, with seconds since the run started.
    pub first: (i64, f64),
    pub last: (i64, f64),
    /// Steps the trainer plans in all (none from a trainer that does not say).
    pub planned: Option<i64>,
}

/// A run's progress as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub done: i64,
    pub planned: Option<i64>,
    /// Seconds left at the attempt's pace; none before two steps, or without a plan.
    pub seconds_left: Option<f64>,
}

impl Progress {
    /// Done steps out of planned ones, finished or not.
    pub fn from_pace(p: Pace, finished: bool) -> Self {
        let planned = p.planned.filter(|n| *n > 0);
        let done = if finished { planned.unwrap_or(p.last.0).max(p.last.0) } else { p.last.0 };
        let (steps, secs) = (p.last.0 - p.first.0, p.last.1 - p.first.1);
        let seconds_left = match planned {
            Some(n) if !finished && steps > 0 && secs > 0.0 => Some((n - done).max(0) as f64 * secs / steps as f64),
            _ => None,
        };
        Self { done, planned, seconds_left }
    }

    /// The share done, from 0 to 1, when the plan is known.
    pub fn fraction(&self) -> Option<f64> {
        self.planned.map(|n| (self.done as f64 / n as f64).clamp(0.0, 1.0))
    }

    /// "37 of 120 steps (31%)".
    pub fn summary(&self, unit: &str) -> String {
        match (self.planned, self.fraction()) {
            (Some(n), Some(f)) => format!("{} of {n} {unit} ({:.0}%)", self.done, f * 100.0),
            _ => format!("{} {unit}", self.done),
        }
    }

    /// "about 4 min left", or empty when unknown.
    pub fn time_left(&self) -> String {
        match self.seconds_left {
            None => String::new(),
            Some(s) if s < 60.0 => format!("about {:.0} s left", s.max(1.0)),
            Some(s) if s < 3600.0 => format!("about {:.0} min left", s / 60.0),
            Some(s) => format!("about {:.1} h left", s / 3600.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_follows_the_pace_of_the_attempt() {
        let p = Progress::from_pace(Pace { first: (10, 100.0), last: (30, 140.0), planned: Some(130) }, false);
        assert_eq!((p.done, p.seconds_left), (30, Some(200.0)));
        assert_eq!(p.summary("steps"), "30 of 130 steps (23%)");
        assert_eq!(p.time_left(), "about 3 min left");
    }

    #[test]
    fn without_a_plan_or_a_second_step_there_is_no_estimate() {
        let p = Progress::from_pace(Pace { first: (1, 5.0), last: (1, 5.0), planned: Some(10) }, false);
        assert_eq!((p.seconds_left, p.time_left()), (None, String::new()));
        let p = Progress::from_pace(Pace { first: (1, 5.0), last: (4, 9.0), planned: None }, false);
        assert_eq!((p.fraction(), p.summary("steps")), (None, "4 steps".into()));
    }

    #[test]
    fn a_finished_run_is_complete() {
        let p = Progress::from_pace(Pace { first: (1, 0.0), last: (9, 9.0), planned: Some(10) }, true);
        assert_eq!((p.fraction(), p.seconds_left), (Some(1.0), None));
    }
}

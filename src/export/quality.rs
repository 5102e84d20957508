//! What quality-aware exports know about the snapshot's judgements: each labeller's gold score
//! and each item's agreement (Kendall's W of its labellers, leaving out excluded labellers),
//! both computed from the judgements visible in the snapshot, so a replay gives the same bytes.

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;

use super::Options;
use crate::domain::agreement::mean;
use crate::domain::quality::{gold_task_score, item_agreement};
use crate::domain::{ItemId, UserId};

/// Quality figures and filters for one export.
#[derive(Debug, Default)]
pub struct Context {
    gold: HashMap<UserId, f64>,
    agreement: HashMap<ItemId, f64>,
    excluded: HashSet<UserId>,
    min_agreement: Option<f64>,
}

impl Context {
    pub async fn load(conn: &mut PgConnection, project: crate::domain::ProjectId, snapshot: &str, options: &Options) -> anyhow::Result<Self> {
        let kind = crate::db::quality::project_kind(conn, project).await?;
        let rows = crate::db::quality::judged(conn, project, Some(snapshot)).await?;
        let excluded: HashSet<UserId> = options.excluded_labellers.iter().copied().collect();
        let mut scores: HashMap<UserId, Vec<f64>> = HashMap::new();
        for r in &rows {
            if let Some(s) = r.reference.as_ref().and_then(|g| gold_task_score(kind, &r.ranks, g)) {
                scores.entry(r.user).or_default().push(s);
            }
        }
        let gold = scores.into_iter().filter_map(|(u, s)| Some((u, mean(&s)?))).collect();
        let kept: Vec<_> = rows.into_iter().filter(|r| !excluded.contains(&r.user)).collect();
        let agreement = item_agreement(&kept).into_iter().filter_map(|a| Some((a.item, a.w?))).collect();
        Ok(Self { gold, agreement, excluded, min_agreement: options.min_agreement })
    }

    /// Whether a judgement by `user` on `item` is exported.
    pub fn keeps(&self, user: Option<UserId>, item: ItemId) -> bool {
        user.is_none_or(|u| !self.excluded.contains(&u)) && self.min_agreement.is_none_or(|m| self.agreement.get(&item).is_some_and(|w| *w >= m))
    }

    pub fn agreement(&self, item: ItemId) -> Option<f64> {
        self.agreement.get(&item).copied()
    }

    /// (the labeller's gold score, the item's agreement) for a row.
    pub fn of(&self, row: &crate::db::exports::JudgementRow) -> (Option<f64>, Option<f64>) {
        (row.user_id().and_then(|u| self.gold.get(&u).copied()), self.agreement(row.item_id()))
    }
}

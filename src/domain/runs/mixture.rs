//! A run's data mixture: which export snapshots its training rows come from, and how much of
//! them is new. Exports are cumulative (each snapshot holds every row visible when it was
//! taken), so a row of the run's export is *old* when an earlier snapshot of the project (same
//! format and options) already held it, attributed to the earliest such snapshot, and *new*
//! otherwise. With `replay_share` r the run trains on every new row plus old rows drawn
//! (seeded) so that they make r of the training rows — retraining on new data with a replay of
//! old data; without it, on the whole export as before.

use serde_json::{json, Value};

/// An earlier snapshot, oldest first, as the mixture names it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub export_id: String,
    pub created_at: String,
    pub revision: u32,
}

/// Which rows (by index; `band[i]`: the earliest earlier snapshot holding row i, `None` when
/// new) a run trains on: all of them without a replay share; with share r every new row and
/// `round(new · r / (1 − r))` old rows (at most all of them) drawn with `seed`. With no new
/// row every old row is kept (there is nothing to replay beside).
pub fn select(bands: &[Option<usize>], replay_share: Option<f64>, seed: u64) -> Vec<bool> {
    let Some(r) = replay_share else { return vec![true; bands.len()] };
    let new = bands.iter().filter(|b| b.is_none()).count();
    let old: Vec<usize> = (0..bands.len()).filter(|&i| bands[i].is_some()).collect();
    if new == 0 {
        return vec![true; bands.len()];
    }
    let r = r.clamp(0.0, 0.95);
    let want = ((new as f64 * r / (1.0 - r)).round() as usize).min(old.len());
    // A seeded shuffle of the old rows' indices: each keyed by a hash of (seed, index).
    let mut keyed: Vec<(u64, usize)> = old.iter().map(|&i| (splitmix(seed ^ splitmix(i as u64)), i)).collect();
    keyed.sort_unstable();
    let mut keep: Vec<bool> = bands.iter().map(Option::is_none).collect();
    for &(_, i) in &keyed[..want] {
        keep[i] = true;
    }
    keep
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The mixture as recorded on the run (`input.resolved.data_mixture`): per snapshot (the
/// earlier ones oldest first, then the run's own, whose rows are the new ones) the rows the
/// export holds from it and the rows trained on; the totals and the shares of new and old.
pub fn summary(export: &Snapshot, earlier: &[Snapshot], bands: &[Option<usize>], keep: &[bool], replay_share: Option<f64>, seed: u64) -> Value {
    let count = |band: Option<usize>, only_kept: bool| bands.iter().zip(keep).filter(|(b, k)| **b == band && (**k || !only_kept)).count();
    let mut snapshots: Vec<Value> = earlier
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"export_id": s.export_id, "created_at": s.created_at, "revision": s.revision, "rows": count(Some(i), false), "used": count(Some(i), true), "new": false}))
        .collect();
    snapshots.push(json!({"export_id": export.export_id, "created_at": export.created_at, "revision": export.revision, "rows": count(None, false), "used": count(None, true), "new": true}));
    let (new, old) = (count(None, false), bands.len() - count(None, false));
    let used_new = count(None, true);
    let used = keep.iter().filter(|k| **k).count();
    let share = |n: usize| if used == 0 { 0.0 } else { n as f64 / used as f64 };
    json!({
        "export_id": export.export_id,
        "snapshots": snapshots,
        "rows": {"new": new, "old": old},
        "used": {"new": used_new, "old": used - used_new, "total": used},
        "share": {"new": share(used_new), "old": share(used - used_new)},
        "replay_share": replay_share,
        "seed": seed,
    })
}

/// Rows of the run page's mixture table: (snapshot, taken, rows in the export, rows trained on,
/// new or old), from a recorded mixture.
pub fn table(mixture: &Value) -> Vec<[String; 5]> {
    let Some(snapshots) = mixture["snapshots"].as_array() else { return Vec::new() };
    snapshots
        .iter()
        .map(|s| {
            let id = s["export_id"].as_str().unwrap_or_default();
            [
                id.get(..8).unwrap_or(id).to_string(),
                s["created_at"].as_str().unwrap_or_default().get(..19).unwrap_or_default().replace('T', " "),
                s["rows"].to_string(),
                s["used"].to_string(),
                if s["new"] == Value::Bool(true) { "new".into() } else { "old".into() },
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str) -> Snapshot {
        Snapshot { export_id: id.into(), created_at: "2026-11-30T10:00:00Z".into(), revision: 2 }
    }

    #[test]
    fn replay_keeps_every_new_row_and_a_seeded_share_of_old_ones() {
        // 30 old rows (20 first seen in snapshot 0, 10 in snapshot 1) and 14 new ones.
        let bands: Vec<Option<usize>> = (0..44)
            .map(|i| match i {
                0..20 => Some(0),
                20..30 => Some(1),
                _ => None,
            })
            .collect();
        assert!(select(&bands, None, 1).iter().all(|k| *k), "no replay share: the whole export");
        let keep = select(&bands, Some(0.3), 7);
        assert!(keep[30..].iter().all(|k| *k), "every new row");
        let old = keep[..30].iter().filter(|k| **k).count();
        assert_eq!(old, 6, "14 · 0.3 / 0.7 = 6 old rows");
        assert_eq!(keep, select(&bands, Some(0.3), 7), "the same seed draws the same rows");
        assert_ne!(keep, select(&bands, Some(0.3), 8), "another seed, other rows");
        assert_eq!(select(&bands, Some(0.0), 1).iter().filter(|k| **k).count(), 14, "share 0: new rows only");
        assert_eq!(select(&bands, Some(0.9), 1).iter().filter(|k| **k).count(), 44, "capped at the old rows there are");
        let all_old = vec![Some(0); 5];
        assert_eq!(select(&all_old, Some(0.3), 1), vec![true; 5], "nothing new: the old rows");

        let m = summary(&snap("cccccccc-1"), &[snap("aaaaaaaa-1"), snap("bbbbbbbb-1")], &bands, &keep, Some(0.3), 7);
        assert_eq!(m["rows"], json!({"new": 14, "old": 30}));
        assert_eq!(m["used"], json!({"new": 14, "old": 6, "total": 20}));
        assert!((m["share"]["old"].as_f64().unwrap() - 0.3).abs() < 1e-12, "{m}");
        assert_eq!(m["snapshots"][0]["rows"], 20);
        assert_eq!(m["snapshots"][1]["rows"], 10);
        assert_eq!(m["snapshots"][2]["used"], 14);
        assert_eq!(m["snapshots"][2]["new"], true);
        let t = table(&m);
        assert_eq!(t.len(), 3);
        assert_eq!(t[2], ["cccccccc".to_string(), "2026-11-30 10:00:00".into(), "14".into(), "14".into(), "new".into()]);
    }
}

//! Importing items: lines are parsed on a blocking thread and arrive here in batches, which are
//! inserted with one `UNNEST` statement per table inside the caller's transaction. Items whose
//! id (or content hash) is already in the project are skipped with their responses.

use serde_json::Value;
use sqlx::PgConnection;

use crate::domain::import::ImportItem;
use crate::domain::{ItemId, ProjectId, ResponseId, UserId};

/// What one batch added.
#[derive(Debug, Default, Clone, Copy)]
pub struct Added {
    pub items: u64,
    pub responses: u64,
    pub judgements: u64,
}

/// Inserts a batch; returns what was new.
pub async fn insert_batch(conn: &mut PgConnection, project: ProjectId, batch: &[ImportItem]) -> sqlx::Result<Added> {
    let ids: Vec<ItemId> = batch.iter().map(|_| ItemId::new()).collect();
    let ext: Vec<&str> = batch.iter().map(|i| i.external_id.as_str()).collect();
    let raws: Vec<Option<&str>> = batch.iter().map(|i| i.prompt_raw.as_deref()).collect();
    let prompts: Vec<Value> = batch.iter().map(|i| serde_json::to_value(&i.prompt).unwrap_or(Value::Null)).collect();
    let metas: Vec<Option<Value>> = batch.iter().map(|i| i.metadata.clone()).collect();
    let counts: Vec<i32> = batch.iter().map(|i| i.responses.len() as i32).collect();
    let instructions: Vec<Option<&str>> = batch.iter().map(|i| i.instructions.as_deref()).collect();
    // A gold reference as an array literal (UNNEST cannot take an array of arrays).
    let golds: Vec<Option<String>> =
        batch.iter().map(|i| i.gold.as_ref().map(|g| format!("{{{}}}", g.ranks.iter().map(i16::to_string).collect::<Vec<_>>().join(",")))).collect();
    let explanations: Vec<Option<&str>> = batch.iter().map(|i| i.gold.as_ref().map(|g| g.explanation.as_str())).collect();
    let inserted: Vec<ItemId> = sqlx::query_scalar!(
        r#"INSERT INTO items (id, project_id, external_id, prompt, metadata, n_responses, prompt_raw, instructions, gold_ranks, gold_explanation, is_open)
           SELECT u.id, $1, u.ext, u.prompt, u.meta, u.n, u.raw, u.instructions, u.gold::smallint[], u.expl, u.gold IS NULL
           FROM UNNEST($2::uuid[], $3::text[], $4::jsonb[], $5::jsonb[], $6::int[], $7::text[], $8::text[], $9::text[], $10::text[])
                AS u(id, ext, prompt, meta, n, raw, instructions, gold, expl)
           ON CONFLICT (project_id, external_id) DO NOTHING RETURNING id AS "id: ItemId""#,
        project as ProjectId,
        ids.as_slice() as &[ItemId],
        ext.as_slice() as &[&str],
        prompts.as_slice(),
        metas.as_slice() as &[Option<Value>],
        counts.as_slice(),
        raws.as_slice() as &[Option<&str>],
        instructions.as_slice() as &[Option<&str>],
        golds.as_slice() as &[Option<String>],
        explanations.as_slice() as &[Option<&str>],
    )
    .fetch_all(&mut *conn)
    .await?;
    let new: std::collections::HashSet<ItemId> = inserted.iter().copied().collect();
    let fresh: Vec<(ItemId, &ImportItem)> = ids.into_iter().zip(batch).filter(|(id, _)| new.contains(id)).collect();
    let responses = insert_responses(conn, &fresh).await?;
    let judgements = insert_imported_choices(conn, project, &fresh).await?;
    Ok(Added { items: fresh.len() as u64, responses, judgements })
}

async fn insert_responses(conn: &mut PgConnection, fresh: &[(ItemId, &ImportItem)]) -> sqlx::Result<u64> {
    let (mut ids, mut items, mut pos, mut models, mut texts, mut metas) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (item, it) in fresh {
        for (p, r) in it.responses.iter().enumerate() {
            ids.push(ResponseId::new());
            items.push(*item);
            pos.push(p as i32);
            models.push(r.model.as_str());
            texts.push(r.text.as_str());
            metas.push(r.metadata.clone());
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query!(
        "INSERT INTO responses (id, item_id, position, model, text, metadata)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::text[], $6::jsonb[])",
        ids.as_slice() as &[ResponseId],
        items.as_slice() as &[ItemId],
        pos.as_slice(),
        models.as_slice() as &[&str],
        texts.as_slice() as &[&str],
        metas.as_slice() as &[Option<Value>],
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A preference pair's human choice (response 0 over response 1) as an imported judgement.
async fn insert_imported_choices(conn: &mut PgConnection, project: ProjectId, fresh: &[(ItemId, &ImportItem)]) -> sqlx::Result<u64> {
    let items: Vec<ItemId> = fresh.iter().filter(|(_, it)| it.imported_choice).map(|(id, _)| *id).collect();
    if items.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query!(
        "INSERT INTO judgements (id, project_id, item_id, source, ranks, display_order)
         SELECT gen_random_uuid(), $1, u.item, 'import', '{1,2}', '{0,1}' FROM UNNEST($2::uuid[]) AS u(item)",
        project as ProjectId,
        items.as_slice() as &[ItemId],
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// An item as its project's leads see it.
#[derive(Debug, Clone)]
pub struct ItemView {
    pub id: ItemId,
    pub external_id: String,
    pub prompt: Value,
    pub prompt_raw: Option<String>,
    pub metadata: Option<Value>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Shown to labellers above the prompt (Markdown).
    pub instructions: Option<String>,
}

/// One response of an item, with its model and metadata.
#[derive(Debug, Clone)]
pub struct ResponseView {
    pub id: ResponseId,
    pub model: String,
    pub text: String,
    pub metadata: Option<Value>,
}

/// One judgement of an item.
#[derive(Debug, Clone)]
pub struct JudgementView {
    pub labeller: String,
    pub ranks: Option<Vec<i16>>,
    pub strength: Option<i16>,
    pub both_bad: bool,
    pub demonstration: Option<String>,
    pub flags: Value,
    pub rating: Option<i16>,
    pub comment: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The item `item` of `project` with its responses and judgements, if `user` leads the
/// project (or is an admin); scoped in the query, so the rest is only read for such a caller.
pub async fn for_lead(
    conn: &mut PgConnection,
    project: ProjectId,
    item: ItemId,
    user: UserId,
) -> sqlx::Result<Option<(ItemView, Vec<ResponseView>, Vec<JudgementView>)>> {
    let found = sqlx::query_as!(
        ItemView,
        "SELECT i.id, i.external_id, i.prompt, i.prompt_raw, i.metadata, i.created_at, i.instructions FROM items i JOIN users u ON u.id = $3
         WHERE i.id = $1 AND i.project_id = $2
           AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = i.project_id AND m.user_id = u.id AND m.role = 'lead'))",
        item as ItemId,
        project as ProjectId,
        user as UserId,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(found) = found else { return Ok(None) };
    let responses = sqlx::query_as!(ResponseView, "SELECT id, model, text, metadata FROM responses WHERE item_id = $1 ORDER BY position", found.id as ItemId)
        .fetch_all(&mut *conn)
        .await?;
    let judgements = sqlx::query_as!(
        JudgementView,
        r#"SELECT COALESCE(u.email, 'imported') AS "labeller!", j.ranks, j.strength, j.both_bad, j.demonstration, j.flags, j.rating, j.comment,
                  j.created_at
             FROM judgements j LEFT JOIN users u ON u.id = j.user_id WHERE j.item_id = $1 ORDER BY j.seq"#,
        found.id as ItemId,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some((found, responses, judgements)))
}

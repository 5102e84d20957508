-- The review stream samples a project's judgements by the last 32 bits of their id
-- (`domain::review::sample_point`). With an index on that number, the stream and its count read
-- only the sampled share of the project's judgements (10% at a 0.1 rate) instead of scanning
-- all of them; `db::review` compares the same expression with a bigint so the index applies.
CREATE INDEX judgements_review_sample ON judgements (project_id, (('x' || right(id::text, 8))::bit(32)::bigint));

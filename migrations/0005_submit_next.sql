-- A submission and the caller's next lease in one call and one transaction, and the task's
-- rules returned with every lease so the server can check the next submission without asking
-- again. rl_submit checks the caller's membership itself (the server's rules lookup did).
-- Forward-only: never edit once landed.

CREATE OR REPLACE FUNCTION rl_submit(p_task uuid, p_user uuid, p_judgement uuid, p_key text, p_ranks smallint[], p_strength smallint,
                                     p_both_bad boolean, p_demonstration text, p_flags jsonb, p_rating smallint, p_comment text)
RETURNS TABLE (outcome text, judgement uuid) LANGUAGE plpgsql AS $$
DECLARE
    t           record;
    v_overlap   int;
    v_prior     uuid;
    v_prior_for uuid;
    v_done      int;
BEGIN
    SELECT tk.*, p.overlap AS overlap INTO t FROM tasks tk JOIN projects p ON p.id = tk.project_id
    WHERE tk.id = p_task AND tk.user_id = p_user
      AND (EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = tk.project_id AND m.user_id = p_user)
           OR EXISTS (SELECT 1 FROM users u WHERE u.id = p_user AND u.is_admin))
    FOR UPDATE OF tk;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::uuid;
        RETURN;
    END IF;
    v_overlap := t.overlap;
    SELECT j.id, j.task_id INTO v_prior, v_prior_for FROM judgements j WHERE j.user_id = p_user AND j.idempotency_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT CASE WHEN v_prior_for = p_task THEN 'repeat' ELSE 'key_reused' END, v_prior;
        RETURN;
    END IF;
    IF t.status <> 'leased' THEN
        RETURN QUERY SELECT t.status, NULL::uuid;
        RETURN;
    END IF;
    IF t.expires_at <= now() AND (SELECT 1 FROM items i WHERE i.id = t.item_id FOR NO KEY UPDATE) = 1
       AND (SELECT count(*) FROM tasks o WHERE o.item_id = t.item_id AND o.user_id <> p_user
            AND (o.status = 'submitted' OR (o.status = 'leased' AND o.expires_at > now() - interval '5 seconds'))) >= v_overlap THEN
        RETURN QUERY SELECT 'expired'::text, NULL::uuid;
        RETURN;
    END IF;
    INSERT INTO judgements (id, project_id, item_id, task_id, user_id, source, idempotency_key, ranks, display_order,
                            strength, both_bad, demonstration, flags, rating, comment, time_on_task_ms)
    VALUES (p_judgement, t.project_id, t.item_id, p_task, p_user, 'labeller', p_key, p_ranks, t.display_order,
            p_strength, p_both_bad, p_demonstration, p_flags, p_rating, p_comment,
            (extract(epoch FROM now() - t.leased_at) * 1000)::bigint);
    UPDATE tasks SET status = 'submitted' WHERE id = p_task;
    SELECT count(*) INTO v_done FROM tasks o WHERE o.item_id = t.item_id AND o.status = 'submitted';
    IF v_done >= v_overlap THEN
        UPDATE items SET done_count = v_done, is_open = false WHERE id = t.item_id;
    END IF;
    RETURN QUERY SELECT 'stored'::text, p_judgement;
END $$;

-- rl_next, with the task's rules: the project's kind, ties, rating and flags, and the item's
-- response ids in position order.
CREATE FUNCTION rl_next_task(p_slug text, p_user uuid, p_task uuid)
RETURNS TABLE (member boolean, task uuid, prompt jsonb, expires_at timestamptz, responses json, response_ids uuid[],
               kind task_kind, allow_ties boolean, rating_enabled boolean, flags text[]) LANGUAGE plpgsql AS $$
DECLARE
    p       record;
    v_task  uuid;
BEGIN
    SELECT pr.id, pr.overlap, pr.lease_seconds, pr.kind, pr.allow_ties, pr.rating_enabled, pr.flags INTO p
    FROM projects pr JOIN users u ON u.id = p_user
    LEFT JOIN memberships m ON m.project_id = pr.id AND m.user_id = u.id
    WHERE pr.slug = p_slug AND (m.user_id IS NOT NULL OR u.is_admin);
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::uuid, NULL::jsonb, NULL::timestamptz, NULL::json, NULL::uuid[], NULL::task_kind, NULL::boolean, NULL::boolean, NULL::text[];
        RETURN;
    END IF;
    v_task := rl_lease(p.id, p_user, p.overlap, p.lease_seconds, p_task);
    RETURN QUERY
        SELECT true, t.id, i.prompt, t.expires_at,
               COALESCE((SELECT json_agg(json_build_object('id', r.id, 'text', r.text) ORDER BY o.k)
                         FROM unnest(t.display_order) WITH ORDINALITY AS o(pos, k)
                         JOIN responses r ON r.item_id = t.item_id AND r.position = o.pos), '[]'::json),
               COALESCE((SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = t.item_id), '{}'),
               p.kind, p.allow_ties, p.rating_enabled, p.flags
        FROM (SELECT 1) one LEFT JOIN tasks t ON t.id = v_task LEFT JOIN items i ON i.id = t.item_id;
END $$;

-- A submission, then (when it was stored or repeated, and `p_slug` is given) the caller's next
-- task in the same project, in one transaction.
CREATE FUNCTION rl_submit_next(p_task uuid, p_user uuid, p_judgement uuid, p_key text, p_ranks smallint[], p_strength smallint,
                               p_both_bad boolean, p_demonstration text, p_flags jsonb, p_rating smallint, p_comment text,
                               p_slug text, p_next_task uuid)
RETURNS TABLE (outcome text, judgement uuid, member boolean, task uuid, prompt jsonb, expires_at timestamptz, responses json,
               response_ids uuid[], kind task_kind, allow_ties boolean, rating_enabled boolean, flags text[]) LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    SELECT * INTO s FROM rl_submit(p_task, p_user, p_judgement, p_key, p_ranks, p_strength, p_both_bad, p_demonstration, p_flags, p_rating, p_comment);
    IF s.outcome NOT IN ('stored', 'repeat') OR p_slug IS NULL THEN
        RETURN QUERY SELECT s.outcome, s.judgement, NULL::boolean, NULL::uuid, NULL::jsonb, NULL::timestamptz, NULL::json, NULL::uuid[],
                            NULL::task_kind, NULL::boolean, NULL::boolean, NULL::text[];
        RETURN;
    END IF;
    RETURN QUERY SELECT s.outcome, s.judgement, n.* FROM rl_next_task(p_slug, p_user, p_next_task) n;
END $$;

DROP FUNCTION rl_next(text, uuid, uuid);

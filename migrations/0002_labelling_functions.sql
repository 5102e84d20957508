-- Leasing and submitting as one server-side call each: the steps and their locking rules are
-- the same as before, without a client round trip per step.

-- How many labellers an item has: submitted tasks and live leases. A lease counts here for 5 s
-- after it lapses, so a submission racing its own expiry (accepted while `expires_at > now()`)
-- can never share its slot with a new lease.
CREATE FUNCTION rl_taken(p_item uuid) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM tasks t
    WHERE t.item_id = p_item AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))
$$;

-- Closes complete items near the head of the project's queue. `is_open` only keeps the queue's
-- index small (rl_taken is the truth), so this may lag: a submission closes its own item when it
-- sees it complete, and leases sweep now and then for the ones a race left open.
CREATE FUNCTION rl_sweep(p_project uuid, p_overlap int, p_limit int) RETURNS void LANGUAGE sql AS $$
    -- Only complete items are updated (and so locked); a complete item is never a lease
    -- candidate, so this waits for no lease.
    UPDATE items i SET is_open = false, done_count = c.n
    FROM (SELECT head.id, head.n FROM (
              SELECT it.id, (SELECT count(*) FROM tasks t WHERE t.item_id = it.id AND t.status = 'submitted')::int AS n
              FROM items it WHERE it.project_id = p_project AND it.is_open ORDER BY it.seq LIMIT p_limit) head
          WHERE head.n >= p_overlap) c
    WHERE i.id = c.id AND i.is_open
$$;

-- The caller's live lease in the project, else a new one: the first open item (in import
-- order) that still needs a labeller and that the caller never had, locked with
-- FOR NO KEY UPDATE SKIP LOCKED and re-checked under the lock by a fresh statement. Submissions
-- never lock the item (turning a lease into a judgement leaves the count unchanged), so leases
-- and submissions do not wait for each other. A lease lost in a crash is harmless, so its
-- commit does not wait for the WAL flush.
CREATE FUNCTION rl_lease(p_project uuid, p_user uuid, p_overlap int, p_lease_seconds int, p_task uuid)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_task  uuid;
    v_item  uuid;
    v_n     int;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT id INTO v_task FROM tasks
    WHERE user_id = p_user AND project_id = p_project AND status = 'leased' AND expires_at > now()
    ORDER BY leased_at LIMIT 1;
    IF FOUND THEN
        RETURN v_task;
    END IF;
    FOR attempt IN 1..20 LOOP
        -- rl_taken written out: a SQL function with a FROM clause is not inlined, and calling
        -- it for every scanned row cost a third of this scan.
        SELECT i.id, i.n_responses INTO v_item, v_n FROM items i
        WHERE i.project_id = p_project AND i.is_open
          AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = p_user)
          AND (SELECT count(*) FROM tasks t WHERE t.item_id = i.id
               AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))) < p_overlap
        ORDER BY i.seq LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED;
        IF NOT FOUND THEN
            PERFORM rl_sweep(p_project, p_overlap, 1000);
            RETURN NULL;
        END IF;
        INSERT INTO tasks (id, project_id, item_id, user_id, display_order, expires_at)
        SELECT p_task, p_project, v_item, p_user,
               COALESCE((SELECT array_agg(x ORDER BY random()) FROM generate_series(0, v_n - 1) AS x), '{}'),
               now() + make_interval(secs => p_lease_seconds)
        WHERE rl_taken(v_item) < p_overlap
          AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = v_item AND t.user_id = p_user)
        RETURNING id INTO v_task;
        IF v_task IS NOT NULL THEN
            IF random() < 0.02 THEN
                PERFORM rl_sweep(p_project, p_overlap, 64);
            END IF;
            RETURN v_task;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- Stores a checked judgement for the caller's own task. Outcomes: 'stored', 'repeat' (the
-- same idempotency key again: the earlier judgement), 'key_reused', 'not_found', 'submitted',
-- 'skipped', 'expired' (the lease lapsed and others have since taken the item).
CREATE FUNCTION rl_submit(p_task uuid, p_user uuid, p_judgement uuid, p_key text, p_ranks smallint[], p_strength smallint,
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
    WHERE tk.id = p_task AND tk.user_id = p_user FOR UPDATE OF tk;
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
    -- A lapsed lease is honoured only if the item still needs someone once every other
    -- labeller's claim is counted, checked under the item's lock as leases are.
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
    -- Only the judgement that completes the item touches its row.
    SELECT count(*) INTO v_done FROM tasks o WHERE o.item_id = t.item_id AND o.status = 'submitted';
    IF v_done >= v_overlap THEN
        UPDATE items SET done_count = v_done, is_open = false WHERE id = t.item_id;
    END IF;
    RETURN QUERY SELECT 'stored'::text, p_judgement;
END $$;

-- The next task for the caller in the project `p_slug`, in one call: the membership check
-- (site admins may label any project), the lease, and the task as the labeller sees it
-- (responses in the recorded display order, no model names). `member` is false when the caller
-- may not see the project; `task` is NULL when nothing is left for them.
CREATE FUNCTION rl_next(p_slug text, p_user uuid, p_task uuid)
RETURNS TABLE (member boolean, task uuid, prompt jsonb, expires_at timestamptz, responses json) LANGUAGE plpgsql AS $$
DECLARE
    p       record;
    v_task  uuid;
BEGIN
    SELECT pr.id, pr.overlap, pr.lease_seconds INTO p
    FROM projects pr JOIN users u ON u.id = p_user
    LEFT JOIN memberships m ON m.project_id = pr.id AND m.user_id = u.id
    WHERE pr.slug = p_slug AND (m.user_id IS NOT NULL OR u.is_admin);
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::uuid, NULL::jsonb, NULL::timestamptz, NULL::json;
        RETURN;
    END IF;
    v_task := rl_lease(p.id, p_user, p.overlap, p.lease_seconds, p_task);
    RETURN QUERY
        SELECT true, t.id, i.prompt, t.expires_at,
               COALESCE((SELECT json_agg(json_build_object('id', r.id, 'text', r.text) ORDER BY o.k)
                         FROM unnest(t.display_order) WITH ORDINALITY AS o(pos, k)
                         JOIN responses r ON r.item_id = t.item_id AND r.position = o.pos), '[]'::json)
        FROM (SELECT 1) one LEFT JOIN tasks t ON t.id = v_task LEFT JOIN items i ON i.id = t.item_id;
END $$;

-- Long texts compress with lz4 where the server has it (faster than the default pglz).
DO $$
BEGIN
    ALTER TABLE responses ALTER COLUMN text SET COMPRESSION lz4;
    ALTER TABLE items ALTER COLUMN prompt SET COMPRESSION lz4;
    ALTER TABLE items ALTER COLUMN prompt_raw SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available; keeping the default compression';
END $$;

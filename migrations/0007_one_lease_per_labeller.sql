-- One live lease per labeller, even when one labeller's calls race (two tabs, a double click
-- on "next", a submission with `next` beside a plain "next"): every lease decision for a
-- labeller takes that labeller's transaction-scoped advisory lock first, and re-reads their
-- live lease after it. `rl_submit_batch` takes the locks of all its labellers up front, in key
-- order, before any task lock, so batches cannot deadlock on them.
-- Forward-only: never edit once landed.

-- The advisory lock key of a labeller's lease decisions.
CREATE FUNCTION rl_labeller_lock(p_user uuid) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('rl_lease:' || p_user::text, 0)
$$;

CREATE OR REPLACE FUNCTION rl_next_task(p_slug text, p_user uuid, p_task uuid)
RETURNS TABLE (member boolean, task uuid, prompt jsonb, expires_at timestamptz, responses json, response_ids uuid[],
               kind task_kind, allow_ties boolean, rating_enabled boolean, flags text[]) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p  record;
    v  rl_lease_view;
BEGIN
    -- A lease lost in a crash is harmless, so its commit does not wait for the WAL flush.
    PERFORM set_config('synchronous_commit', 'off', true);
    -- One lease decision per labeller at a time: a second call waits here, then sees the first
    -- one's lease (the next statement takes a fresh snapshot) and answers it.
    PERFORM pg_advisory_xact_lock(rl_labeller_lock(p_user));
    SELECT pr.id, pr.overlap, pr.lease_seconds, pr.kind, pr.allow_ties, pr.rating_enabled, pr.flags,
           (SELECT CASE WHEN n.status = 'leased' AND n.expires_at > now() THEN n.id END FROM tasks n
            WHERE n.user_id = p_user AND n.project_id = pr.id ORDER BY n.leased_at DESC LIMIT 1) AS live
      INTO p
    FROM projects pr JOIN users u ON u.id = p_user
    LEFT JOIN memberships m ON m.project_id = pr.id AND m.user_id = u.id
    WHERE pr.slug = p_slug AND (m.user_id IS NOT NULL OR u.is_admin);
    IF NOT FOUND THEN
        member := false;
        RETURN NEXT;
        RETURN;
    END IF;
    IF p.live IS NOT NULL THEN
        v := rl_task_view(p.live);
    ELSE
        v := rl_take(p.id, p_user, p.overlap, p.lease_seconds, p_task);
    END IF;
    RETURN QUERY SELECT true, v.task, v.prompt, v.expires_at, v.responses, v.response_ids, p.kind, p.allow_ties, p.rating_enabled, p.flags;
END $$;

CREATE OR REPLACE FUNCTION rl_submit_batch(p_entries jsonb, p_wait boolean)
RETURNS TABLE (idx int, outcome text, judgement uuid, member boolean, task uuid, prompt jsonb, expires_at timestamptz, responses json,
               response_ids uuid[], kind task_kind, allow_ties boolean, rating_enabled boolean, flags text[]) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    e        record;
    t        record;
    v        rl_lease_view;
    v_stored int;
    v_done   int;
    v_prior     uuid;
    v_prior_for uuid;
    v_live      uuid;
BEGIN
    -- The labellers whose next task this batch may lease, locked before any task (in key order,
    -- as every caller takes them first), so a lease decision never races another of theirs.
    PERFORM pg_advisory_xact_lock(k.key)
    FROM (SELECT DISTINCT rl_labeller_lock((x->>'user')::uuid) AS key FROM jsonb_array_elements(p_entries) x
          WHERE (x->>'next')::boolean ORDER BY 1) k;
    FOR e IN SELECT * FROM ROWS FROM (jsonb_to_recordset(p_entries) AS (
                 task uuid, "user" uuid, judgement uuid, key text, ranks smallint[], strength smallint, both_bad boolean,
                 demonstration text, flags jsonb, rating smallint, comment text, next boolean, next_task uuid)) WITH ORDINALITY AS x(
                 task, "user", judgement, key, ranks, strength, both_bad, demonstration, flags, rating, comment, next, next_task, n)
             ORDER BY x.task, x.n LOOP
        idx := e.n;
        outcome := NULL; judgement := NULL; member := NULL; task := NULL; prompt := NULL; expires_at := NULL; responses := NULL;
        response_ids := NULL; kind := NULL; allow_ties := NULL; rating_enabled := NULL; flags := NULL;
        -- The task, locked; the caller's membership (site admins may label any project); the
        -- project's rules; an earlier judgement under this idempotency key; the caller's newest
        -- task in the project (their live lease if it is another, leased and unexpired one).
        SELECT tk.project_id, tk.item_id, tk.status, tk.expires_at AS lease_expires, tk.leased_at, tk.display_order,
               pr.overlap, pr.lease_seconds, pr.kind, pr.allow_ties, pr.rating_enabled, pr.flags,
               j.id AS prior, j.task_id AS prior_for,
               (SELECT CASE WHEN n.status = 'leased' AND n.expires_at > now() THEN n.id END FROM tasks n
                WHERE n.user_id = e."user" AND n.project_id = tk.project_id ORDER BY n.leased_at DESC LIMIT 1) AS newest_live
          INTO t
        FROM tasks tk JOIN projects pr ON pr.id = tk.project_id
        LEFT JOIN judgements j ON j.user_id = e."user" AND j.idempotency_key = e.key
        WHERE tk.id = e.task AND tk.user_id = e."user"
          AND (EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = tk.project_id AND m.user_id = e."user")
               OR EXISTS (SELECT 1 FROM users u WHERE u.id = e."user" AND u.is_admin))
        FOR UPDATE OF tk;
        IF NOT FOUND THEN
            outcome := 'not_found';
            RETURN NEXT;
            CONTINUE;
        END IF;
        v_prior := t.prior;
        v_prior_for := t.prior_for;
        IF v_prior IS NULL AND t.status <> 'leased' THEN
            -- Waiting for the task's lock may have been waiting for this very key's first
            -- submission: look again with a fresh snapshot.
            SELECT j.id, j.task_id INTO v_prior, v_prior_for FROM judgements j WHERE j.user_id = e."user" AND j.idempotency_key = e.key;
        END IF;
        v_live := t.newest_live;
        IF v_prior IS NOT NULL THEN
            outcome := CASE WHEN v_prior_for = e.task THEN 'repeat' ELSE 'key_reused' END;
            judgement := v_prior;
            -- The first submission may have leased the next task after this statement's
            -- snapshot (we waited for its lock): look again, so a double click gets that lease
            -- back instead of a second one.
            SELECT CASE WHEN n.status = 'leased' AND n.expires_at > now() THEN n.id END INTO v_live FROM tasks n
            WHERE n.user_id = e."user" AND n.project_id = t.project_id ORDER BY n.leased_at DESC LIMIT 1;
        ELSIF t.status <> 'leased' THEN
            outcome := t.status;
        ELSIF t.lease_expires <= now() AND NOT p_wait THEN
            outcome := 'retry';
        ELSIF t.lease_expires <= now() AND rl_lapsed_lease_lost(t.item_id, e."user", t.overlap) THEN
            outcome := 'expired';
        ELSE
            -- Store, mark the task submitted and count the item's submissions, in one statement
            -- (its parts share a snapshot, in which this task is not yet submitted).
            WITH ins AS (
                INSERT INTO judgements (id, project_id, item_id, task_id, user_id, source, idempotency_key, ranks, display_order,
                                        strength, both_bad, demonstration, flags, rating, comment, time_on_task_ms)
                VALUES (e.judgement, t.project_id, t.item_id, e.task, e."user", 'labeller', e.key, e.ranks, t.display_order,
                        e.strength, COALESCE(e.both_bad, false), e.demonstration, COALESCE(e.flags, '{}'), e.rating, COALESCE(e.comment, ''),
                        (extract(epoch FROM now() - t.leased_at) * 1000)::bigint)
                ON CONFLICT (user_id, idempotency_key) DO NOTHING
                RETURNING 1),
            upd AS (UPDATE tasks SET status = 'submitted' WHERE id = e.task AND EXISTS (SELECT 1 FROM ins) RETURNING 1)
            SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM tasks o WHERE o.item_id = t.item_id AND o.status = 'submitted')
              INTO v_stored, v_done;
            IF v_stored = 0 THEN
                -- Another submission with this key committed between our look and our insert.
                SELECT j.id, j.task_id INTO v_prior, v_prior_for FROM judgements j WHERE j.user_id = e."user" AND j.idempotency_key = e.key;
                outcome := CASE WHEN v_prior_for = e.task THEN 'repeat' ELSE 'key_reused' END;
                judgement := v_prior;
            ELSE
                outcome := 'stored';
                judgement := e.judgement;
                -- Only the judgement that completes the item touches its row, and only when no
                -- lease scan holds it.
                IF v_done + 1 >= t.overlap THEN
                    UPDATE items i SET done_count = v_done + 1, is_open = false
                    WHERE i.id = (SELECT l.id FROM items l WHERE l.id = t.item_id FOR NO KEY UPDATE SKIP LOCKED);
                END IF;
            END IF;
        END IF;
        IF outcome IN ('stored', 'repeat') AND e.next THEN
            -- The next task: the newest one when it is another live lease, else a new lease.
            IF v_live IS NOT NULL AND v_live <> e.task THEN
                v := rl_task_view(v_live);
            ELSE
                v := rl_take(t.project_id, e."user", t.overlap, t.lease_seconds, e.next_task);
            END IF;
            member := true;
            task := v.task;
            prompt := v.prompt;
            expires_at := v.expires_at;
            responses := v.responses;
            response_ids := v.response_ids;
            kind := t.kind;
            allow_ties := t.allow_ties;
            rating_enabled := t.rating_enabled;
            flags := t.flags;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

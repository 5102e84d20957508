-- Submissions in batches, and the hot path in fewer statements.
--
-- The server gathers the submissions that arrive together and sends them in one call and one
-- transaction (`rl_submit_batch`), so the per-call and per-commit costs are paid once per
-- batch. Within it, every statement a PL/pgSQL function runs pays for its own executor start-up
-- and snapshot (a quarter of PostgreSQL's time under the benchmark, when a submission and the
-- next lease took twenty statements). Per submission now:
--   * one statement locks the task and reads the project's rules, the caller's membership, the
--     idempotency key's earlier judgement and the caller's newest task in the project;
--   * one statement stores the judgement, marks the task submitted and counts the item;
--   * one statement picks and locks the next item and shuffles its responses (the display order,
--     the responses as shown and the rules' response ids in one pass), and one inserts the lease
--     after re-counting the item under its lock with a fresh snapshot.
-- A batch holds its leases' item locks until it commits, so nothing in a batch waits for an
-- item lock: items are closed only when their lock is free (the sweep closes the rest), and a
-- submission on a lapsed lease, which must count the item under its lock, answers 'retry' to be
-- sent again alone (`p_wait`). Tasks are locked in task order.
-- Semantics are otherwise those of 0002-0005, with two corrections: a submission now always
-- commits synchronously (since 0005 it shared a transaction with the next lease, whose
-- `synchronous_commit = off` then applied to the judgement too), and two submissions racing
-- with one idempotency key answer 'repeat' / 'key_reused' instead of a unique-violation error.
-- Forward-only: never edit once landed.

CREATE TYPE rl_lease_view AS (task uuid, prompt jsonb, expires_at timestamptz, responses json, response_ids uuid[]);

-- A new lease for the caller on the first open item (in import order) that still needs a
-- labeller and that the caller never had, or NULLs when none is left. The candidate is locked
-- FOR NO KEY UPDATE SKIP LOCKED and re-counted by the insert, a fresh statement, under the lock.
CREATE FUNCTION rl_take(p_project uuid, p_user uuid, p_overlap int, p_lease_seconds int, p_task uuid)
RETURNS rl_lease_view LANGUAGE plpgsql AS $$
DECLARE
    v         rl_lease_view;
    v_item    uuid;
    v_order   int[];
    v_expires timestamptz;
BEGIN
    FOR attempt IN 1..20 LOOP
        SELECT c.id, c.prompt, s.display_order, s.responses, s.response_ids
          INTO v_item, v.prompt, v_order, v.responses, v.response_ids
        FROM (SELECT i.id, i.prompt FROM items i
              WHERE i.project_id = p_project AND i.is_open
                AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = p_user)
                AND (SELECT count(*) FROM tasks t WHERE t.item_id = i.id
                     AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))) < p_overlap
              ORDER BY i.seq LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED) c
        CROSS JOIN LATERAL (
            SELECT COALESCE(array_agg(r.position ORDER BY r.k), '{}') AS display_order,
                   COALESCE(json_agg(json_build_object('id', r.id, 'text', r.text) ORDER BY r.k), '[]'::json) AS responses,
                   COALESCE(array_agg(r.id ORDER BY r.position), '{}') AS response_ids
            FROM (SELECT rs.id, rs.position, rs.text, random() AS k FROM responses rs WHERE rs.item_id = c.id) r) s;
        IF NOT FOUND THEN
            PERFORM rl_sweep(p_project, p_overlap, 1000);
            RETURN v;
        END IF;
        INSERT INTO tasks (id, project_id, item_id, user_id, display_order, expires_at)
        SELECT p_task, p_project, v_item, p_user, v_order, now() + make_interval(secs => p_lease_seconds)
        WHERE (SELECT count(*) FROM tasks t WHERE t.item_id = v_item
               AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))) < p_overlap
        ON CONFLICT (item_id, user_id) DO NOTHING
        RETURNING tasks.expires_at INTO v_expires;
        IF FOUND THEN
            IF random() < 0.02 THEN
                PERFORM rl_sweep(p_project, p_overlap, 64);
            END IF;
            v.task := p_task;
            v.expires_at := v_expires;
            RETURN v;
        END IF;
    END LOOP;
    RETURN (NULL, NULL, NULL, NULL, NULL)::rl_lease_view;
END $$;

-- Whether a lapsed lease of `p_user` on the item has lost its slot: the item's other claims
-- (submissions, and leases live or lapsed for under 5 s) fill its overlap. Counted under the
-- item's lock, as leases count.
CREATE FUNCTION rl_lapsed_lease_lost(p_item uuid, p_user uuid, p_overlap int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM items i WHERE i.id = p_item FOR NO KEY UPDATE;
    RETURN (SELECT count(*) FROM tasks o WHERE o.item_id = p_item AND o.user_id <> p_user
            AND (o.status = 'submitted' OR (o.status = 'leased' AND o.expires_at > now() - interval '5 seconds'))) >= p_overlap;
END $$;

-- A task the caller already holds, as they see it.
CREATE FUNCTION rl_task_view(p_task uuid) RETURNS rl_lease_view LANGUAGE sql STABLE AS $$
    SELECT t.id, i.prompt, t.expires_at,
           COALESCE((SELECT json_agg(json_build_object('id', r.id, 'text', r.text) ORDER BY o.k)
                     FROM unnest(t.display_order) WITH ORDINALITY AS o(pos, k)
                     JOIN responses r ON r.item_id = t.item_id AND r.position = o.pos), '[]'::json),
           COALESCE((SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = t.item_id), '{}')
    FROM tasks t JOIN items i ON i.id = t.item_id WHERE t.id = p_task
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

-- Closes complete items near the head of the project's queue, as 0002's, but only those whose
-- row is not locked (a batch may hold a complete item's lock: its lease scan locked it before
-- the last submission committed); the next sweep closes those.
CREATE OR REPLACE FUNCTION rl_sweep(p_project uuid, p_overlap int, p_limit int) RETURNS void LANGUAGE sql AS $$
    UPDATE items i SET is_open = false, done_count = c.n
    FROM (SELECT it.id, head.n FROM (
              SELECT h.id, (SELECT count(*) FROM tasks t WHERE t.item_id = h.id AND t.status = 'submitted')::int AS n
              FROM items h WHERE h.project_id = p_project AND h.is_open ORDER BY h.seq LIMIT p_limit) head
          JOIN items it ON it.id = head.id
          WHERE head.n >= p_overlap
          FOR NO KEY UPDATE OF it SKIP LOCKED) c
    WHERE i.id = c.id AND i.is_open
$$;

-- Submissions, as a JSON array of
-- `{"task", "user", "judgement", "key", "ranks", "strength", "both_bad", "demonstration",
--   "flags", "rating", "comment", "next", "next_task"}`, answered with one row per entry (`idx`,
-- 1-based). Outcomes: 'stored', 'repeat' (the same idempotency key again: the earlier
-- judgement), 'key_reused', 'not_found', 'submitted', 'skipped', 'expired' (the lease lapsed
-- and others have since taken the item), and without `p_wait` 'retry' (a lapsed lease: send it
-- again alone, with `p_wait`). With `next`, a stored or repeated judgement also brings the
-- caller's next task in the project (their live lease, else a new one), with its rules.
CREATE FUNCTION rl_submit_batch(p_entries jsonb, p_wait boolean)
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

DROP FUNCTION rl_submit_next(uuid, uuid, uuid, text, smallint[], smallint, boolean, text, jsonb, smallint, text, text, uuid);
DROP FUNCTION rl_submit(uuid, uuid, uuid, text, smallint[], smallint, boolean, text, jsonb, smallint, text);
DROP FUNCTION rl_lease(uuid, uuid, int, int, uuid);

-- Label quality (issue 13): gold items and generated honeypots with their reference
-- judgements, onboarding and a mix-in rate of gold per labeller, pauses of labellers whose gold
-- score fell below the project's threshold, and extra labellers for items where labellers
-- disagree. A review state would be one more table keyed by judgement (judgements stay
-- immutable), read by the exports beside `labeller_pauses`.
-- Forward-only: never edit once landed.

-- ==== projects: quality settings ====

ALTER TABLE projects
    ADD COLUMN gold_onboarding integer NOT NULL DEFAULT 0 CHECK (gold_onboarding BETWEEN 0 AND 100),
    ADD COLUMN gold_rate double precision NOT NULL DEFAULT 0 CHECK (gold_rate >= 0 AND gold_rate <= 0.5),
    ADD COLUMN pause_below double precision CHECK (pause_below BETWEEN -1 AND 1),
    ADD COLUMN pause_min_gold integer NOT NULL DEFAULT 5 CHECK (pause_min_gold BETWEEN 1 AND 1000),
    ADD COLUMN extra_max integer NOT NULL DEFAULT 0 CHECK (extra_max BETWEEN 0 AND 20),
    ADD COLUMN extra_below double precision NOT NULL DEFAULT 0.5 CHECK (extra_below BETWEEN 0 AND 1);

-- ==== items: gold references, honeypots, extra labellers ====

-- A gold item carries its reference ranks (aligned with response positions, 1 = best, as
-- judgements' ranks); a honeypot is a gold item generated from `honeypot_of` with one clearly
-- worse response that must rank last. Gold items are never open in the ordinary queue
-- (`is_open` false): they are leased by the onboarding and mix-in path, to every labeller once.
ALTER TABLE items
    ADD COLUMN gold_ranks smallint[],
    ADD COLUMN gold_explanation text,
    ADD COLUMN honeypot_of uuid REFERENCES items ON DELETE CASCADE,
    ADD COLUMN extra_labellers integer NOT NULL DEFAULT 0 CHECK (extra_labellers >= 0),
    -- The extra labellers the item had when its agreement was last checked (-1: never), so a
    -- check looks only at items completed since.
    ADD COLUMN checked_extra integer NOT NULL DEFAULT -1;
CREATE INDEX items_gold ON items (project_id, seq) WHERE gold_ranks IS NOT NULL;
CREATE INDEX items_honeypot_of ON items (honeypot_of) WHERE honeypot_of IS NOT NULL;

-- ==== tasks: which were quality checks ====

-- 'onboarding' (the labeller then sees the reference) or 'gold' (mixed in, unmarked); NULL
-- for ordinary tasks. Gold tasks never count towards an item's overlap.
ALTER TABLE tasks ADD COLUMN check_kind text CHECK (check_kind IN ('onboarding', 'gold'));
CREATE INDEX tasks_checks ON tasks (user_id, project_id) WHERE check_kind IS NOT NULL;

-- ==== labeller pauses ====

CREATE TABLE labeller_pauses (
    id         uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    reason     text NOT NULL,
    score      double precision,
    gold_count integer,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    lifted_at  timestamptz,
    lifted_by  uuid REFERENCES users ON DELETE SET NULL,
    lift_note  text
);
CREATE UNIQUE INDEX labeller_pauses_active ON labeller_pauses (project_id, user_id) WHERE lifted_at IS NULL;
CREATE INDEX labeller_pauses_project ON labeller_pauses (project_id, paused_at);

-- ==== functions ====
--
-- The lease view gains the task's check kind and, when no task was leased because the
-- labeller is paused, the pause's reason; the functions that return it are replaced whole.

DROP FUNCTION rl_submit_batch(jsonb, boolean);
DROP FUNCTION rl_next_task(text, uuid, uuid);
DROP FUNCTION rl_take(uuid, uuid, integer, integer, uuid);
DROP FUNCTION rl_task_view(uuid);
DROP TYPE rl_lease_view;
CREATE TYPE rl_lease_view AS (task uuid, prompt jsonb, expires_at timestamptz, responses json, response_ids uuid[], check_kind text, paused text);

-- ==== function rl_sweep ====

-- Closes complete items near the head of the project's queue. `is_open` only keeps the queue's
-- index small (rl_taken is the truth), so this may lag: a submission closes its own item when it
-- sees it complete, and leases sweep now and then for the ones a race left open. Only items
-- whose row is not locked are closed (a batch may hold a complete item's lock: its lease scan
-- locked it before the last submission committed); the next sweep closes those. An item needs
-- the project's overlap plus its extra labellers.
CREATE OR REPLACE FUNCTION rl_sweep(p_project uuid, p_overlap int, p_limit int) RETURNS void LANGUAGE sql AS $$
    UPDATE items i SET is_open = false, done_count = c.n
    FROM (SELECT it.id, head.n FROM (
              SELECT h.id, h.extra_labellers, (SELECT count(*) FROM tasks t WHERE t.item_id = h.id AND t.status = 'submitted')::int AS n
              FROM items h WHERE h.project_id = p_project AND h.is_open ORDER BY h.seq LIMIT p_limit) head
          JOIN items it ON it.id = head.id
          WHERE head.n >= p_overlap + head.extra_labellers
          FOR NO KEY UPDATE OF it SKIP LOCKED) c
    WHERE i.id = c.id AND i.is_open
$$;

-- ==== function rl_take ====

-- A new lease for the caller, or NULLs when none is left (with `paused` set when the caller
-- is paused in the project). Quality checks first: while the caller has had fewer than the
-- project's `gold_onboarding` checks, the first unseen gold item in import order, marked
-- 'onboarding'; else, at the project's `gold_rate`, an unseen gold item or honeypot from a
-- random place on, marked 'gold'. Gold items have no overlap, so they need no lock. Otherwise the first open
-- item (in import order) that still needs a labeller (the overlap plus its extra labellers) and
-- that the caller never had: the candidate is locked FOR NO KEY UPDATE SKIP LOCKED and
-- re-counted by the insert, a fresh statement, under the lock.
CREATE FUNCTION rl_take(p_project uuid, p_user uuid, p_overlap int, p_lease_seconds int, p_task uuid)
RETURNS rl_lease_view LANGUAGE plpgsql AS $$
DECLARE
    v         rl_lease_view;
    q         record;
    v_item    uuid;
    v_extra   int;
    v_order   int[];
    v_expires timestamptz;
    v_check   text;
    v_lo      bigint;
    v_hi      bigint;
    v_from    bigint;
BEGIN
    SELECT pr.gold_onboarding, pr.gold_rate,
           (SELECT ps.reason FROM labeller_pauses ps WHERE ps.project_id = p_project AND ps.user_id = p_user AND ps.lifted_at IS NULL) AS paused
      INTO q FROM projects pr WHERE pr.id = p_project;
    IF q.paused IS NOT NULL THEN
        v.paused := q.paused;
        RETURN v;
    END IF;
    IF q.gold_onboarding > 0 AND (SELECT count(*) FROM (SELECT 1 FROM tasks t WHERE t.user_id = p_user AND t.project_id = p_project
                                                         AND t.check_kind IS NOT NULL LIMIT q.gold_onboarding) x) < q.gold_onboarding THEN
        v_check := 'onboarding';
    ELSIF q.gold_rate > 0 AND random() < q.gold_rate THEN
        v_check := 'gold';
    END IF;
    IF v_check IS NOT NULL THEN
        -- From a random gold item on (onboarding: from the first, so the lead's imported gold
        -- comes before honeypots generated later), the first the caller never had, wrapping
        -- around once: a few index probes, however many gold items the project has.
        SELECT min(g.seq), max(g.seq) INTO v_lo, v_hi FROM items g WHERE g.project_id = p_project AND g.gold_ranks IS NOT NULL;
        v_from := CASE WHEN v_check = 'onboarding' THEN v_lo ELSE v_lo + floor(random() * (v_hi - v_lo + 1))::bigint END;
        FOR pass IN 1..2 LOOP
            SELECT c.id, c.prompt, s.display_order, s.responses, s.response_ids
              INTO v_item, v.prompt, v_order, v.responses, v.response_ids
            FROM (SELECT i.id, i.prompt FROM items i
                  WHERE i.project_id = p_project AND i.gold_ranks IS NOT NULL AND i.seq >= v_from
                    -- A scalar subquery: probed per item through the (item, user) index.
                    AND (SELECT t.id FROM tasks t WHERE t.item_id = i.id AND t.user_id = p_user) IS NULL
                  ORDER BY i.seq LIMIT 1) c
            CROSS JOIN LATERAL (
                SELECT COALESCE(array_agg(r.position ORDER BY r.k), '{}') AS display_order,
                       COALESCE(json_agg(json_build_object('id', r.id, 'text', r.text) ORDER BY r.k), '[]'::json) AS responses,
                       COALESCE(array_agg(r.id ORDER BY r.position), '{}') AS response_ids
                FROM (SELECT rs.id, rs.position, rs.text, random() AS k FROM responses rs WHERE rs.item_id = c.id) r) s;
            EXIT WHEN FOUND OR v_from = v_lo;
            v_from := v_lo;
        END LOOP;
        IF v_item IS NOT NULL THEN
            INSERT INTO tasks (id, project_id, item_id, user_id, display_order, expires_at, check_kind)
            VALUES (p_task, p_project, v_item, p_user, v_order, now() + make_interval(secs => p_lease_seconds), v_check)
            ON CONFLICT (item_id, user_id) DO NOTHING
            RETURNING tasks.expires_at INTO v_expires;
            IF FOUND THEN
                v.task := p_task;
                v.expires_at := v_expires;
                v.check_kind := v_check;
                RETURN v;
            END IF;
        END IF;
        v := NULL;
    END IF;
    FOR attempt IN 1..20 LOOP
        SELECT c.id, c.extra_labellers, c.prompt, s.display_order, s.responses, s.response_ids
          INTO v_item, v_extra, v.prompt, v_order, v.responses, v.response_ids
        FROM (SELECT i.id, i.prompt, i.extra_labellers FROM items i
              WHERE i.project_id = p_project AND i.is_open
                AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = p_user)
                AND (SELECT count(*) FROM tasks t WHERE t.item_id = i.id
                     AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))) < p_overlap + i.extra_labellers
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
               AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))) < p_overlap + v_extra
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
    RETURN (NULL, NULL, NULL, NULL, NULL, NULL, NULL)::rl_lease_view;
END $$;

-- ==== function rl_lapsed_lease_lost ====

-- Whether a lapsed lease of `p_user` on the item has lost its slot: the item's other claims
-- (submissions, and leases live or lapsed for under 5 s) fill its overlap plus its extra
-- labellers. Counted under the item's lock, as leases count. A gold item has no slots to lose.
CREATE OR REPLACE FUNCTION rl_lapsed_lease_lost(p_item uuid, p_user uuid, p_overlap int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM items i WHERE i.id = p_item FOR NO KEY UPDATE;
    RETURN (SELECT i.gold_ranks IS NULL
                   AND (SELECT count(*) FROM tasks o WHERE o.item_id = p_item AND o.user_id <> p_user
                        AND (o.status = 'submitted' OR (o.status = 'leased' AND o.expires_at > now() - interval '5 seconds'))) >= p_overlap + i.extra_labellers
            FROM items i WHERE i.id = p_item);
END $$;

-- ==== function rl_task_view ====

-- A task the caller already holds, as they see it.
CREATE FUNCTION rl_task_view(p_task uuid) RETURNS rl_lease_view LANGUAGE sql STABLE AS $$
    SELECT t.id, i.prompt, t.expires_at,
           COALESCE((SELECT json_agg(json_build_object('id', r.id, 'text', r.text) ORDER BY o.k)
                     FROM unnest(t.display_order) WITH ORDINALITY AS o(pos, k)
                     JOIN responses r ON r.item_id = t.item_id AND r.position = o.pos), '[]'::json),
           COALESCE((SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = t.item_id), '{}'),
           t.check_kind, NULL::text
    FROM tasks t JOIN items i ON i.id = t.item_id WHERE t.id = p_task
$$;

-- ==== function rl_next_task ====

-- The next task for the caller in the project `p_slug`: the membership check (site admins may
-- label any project), then their live lease, else a new one, as the labeller sees it (responses
-- in the recorded display order, no model names), with the task's rules: the project's kind,
-- ties, rating and flags, and the item's response ids in position order, and its check kind.
-- `member` is false when the caller may not see the project; `task` is NULL when nothing is
-- left for them, and then `paused` is the reason when they are paused in the project.
CREATE FUNCTION rl_next_task(p_slug text, p_user uuid, p_task uuid)
RETURNS TABLE (member boolean, task uuid, prompt jsonb, expires_at timestamptz, responses json, response_ids uuid[],
               kind task_kind, allow_ties boolean, rating_enabled boolean, flags text[], check_kind text, paused text) LANGUAGE plpgsql AS $$
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
    RETURN QUERY SELECT true, v.task, v.prompt, v.expires_at, v.responses, v.response_ids, p.kind, p.allow_ties, p.rating_enabled, p.flags,
                        v.check_kind, v.paused;
END $$;

-- ==== function rl_submit_batch ====

-- Submissions, as a JSON array of
-- `{"task", "user", "judgement", "key", "ranks", "strength", "both_bad", "demonstration",
--   "flags", "rating", "comment", "next", "next_task"}`, answered with one row per entry (`idx`,
-- 1-based). Outcomes: 'stored', 'repeat' (the same idempotency key again: the earlier
-- judgement), 'key_reused', 'not_found', 'submitted', 'skipped', 'expired' (the lease lapsed
-- and others have since taken the item), and without `p_wait` 'retry' (a lapsed lease: send it
-- again alone, with `p_wait`). With `next`, a stored or repeated judgement also brings the
-- caller's next task in the project (their live lease, else a new one), with its rules (or,
-- with no task, `paused` when the caller is paused). A gold item is never closed: it has no
-- overlap.
CREATE FUNCTION rl_submit_batch(p_entries jsonb, p_wait boolean)
RETURNS TABLE (idx int, outcome text, judgement uuid, member boolean, task uuid, prompt jsonb, expires_at timestamptz, responses json,
               response_ids uuid[], kind task_kind, allow_ties boolean, rating_enabled boolean, flags text[], check_kind text, paused text)
LANGUAGE plpgsql AS $$
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
        response_ids := NULL; kind := NULL; allow_ties := NULL; rating_enabled := NULL; flags := NULL; check_kind := NULL; paused := NULL;
        -- The task, locked; the caller's membership (site admins may label any project); the
        -- project's rules; an earlier judgement under this idempotency key; the caller's newest
        -- task in the project (their live lease if it is another, leased and unexpired one).
        SELECT tk.project_id, tk.item_id, tk.status, tk.expires_at AS lease_expires, tk.leased_at, tk.display_order, tk.check_kind AS task_check,
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
                -- lease scan holds it; a quality check's (gold) item has no overlap to complete,
                -- and extra labellers are checked on the row itself.
                IF t.task_check IS NULL AND v_done + 1 >= t.overlap THEN
                    UPDATE items i SET done_count = v_done + 1, is_open = false
                    WHERE i.id = (SELECT l.id FROM items l WHERE l.id = t.item_id FOR NO KEY UPDATE SKIP LOCKED)
                      AND v_done + 1 >= t.overlap + i.extra_labellers AND i.gold_ranks IS NULL;
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
            check_kind := v.check_kind;
            paused := v.paused;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

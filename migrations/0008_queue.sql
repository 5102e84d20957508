-- Queue strategies (issue 15): the order in which leases hand out a project's open items.
-- 'fifo' (import order, as before), 'newest-first' (newest items first: a generate run's
-- samples before older items), 'uncertainty' (items whose response pairs the project's newest
-- reward model ensemble is least sure of first) and 'thompson' (double Thompson sampling with
-- the ensemble's members as posterior draws). After an rm run the worker scores the project's
-- responses and stores, per response, the ensemble's mean, standard deviation and member
-- rewards (`response_scores`), and per item the priority and each member's best response
-- (`items.queue_priority`, `items.queue_best`), replacing the previous model's.
-- Forward-only: never edit once landed.

CREATE TYPE queue_strategy AS ENUM ('fifo', 'newest-first', 'uncertainty', 'thompson');

-- The project's strategy, and the rm run whose scores its items' priorities come from (with
-- its number of ensemble members, which the thompson strategy draws from).
ALTER TABLE projects
    ADD COLUMN queue_strategy queue_strategy NOT NULL DEFAULT 'fifo',
    ADD COLUMN queue_run uuid REFERENCES runs ON DELETE SET NULL,
    ADD COLUMN queue_members integer NOT NULL DEFAULT 0 CHECK (queue_members >= 0),
    ADD COLUMN queue_scored_at timestamptz;

-- An ensemble's spread and its members' rewards beside the mean (NULL for a single model).
ALTER TABLE response_scores
    ADD COLUMN reward_std double precision,
    ADD COLUMN member_rewards double precision[];

-- From the project's newest reward model: the item's priority for 'uncertainty' (the largest,
-- over its response pairs, standard deviation across members of the reward difference; with a
-- single model minus the smallest reward gap), and per member the 0-based position index of
-- the response it rewards most. NULL: not scored.
ALTER TABLE items
    ADD COLUMN queue_priority double precision,
    ADD COLUMN queue_best smallint[];
CREATE INDEX items_open_priority ON items (project_id, queue_priority DESC NULLS LAST, seq) WHERE is_open;

-- ==== function rl_take ====

-- A new lease for the caller, or NULLs when none is left (with `paused` set when the caller
-- is paused in the project). Quality checks first: while the caller has had fewer than the
-- project's `gold_onboarding` checks, the first unseen gold item in import order, marked
-- 'onboarding'; else, at the project's `gold_rate`, an unseen gold item or honeypot from a
-- random place on, marked 'gold'. Gold items have no overlap, so they need no lock. Otherwise the first open
-- item, in the order of the project's queue strategy, that still needs a labeller (the overlap
-- plus its extra labellers) and that the caller never had: the candidate is locked FOR NO KEY
-- UPDATE SKIP LOCKED and re-counted by the insert, a fresh statement, under the lock. Orders:
-- 'fifo' import order; 'newest-first' newest import first (a generate run's samples);
-- 'uncertainty' the item's `queue_priority` (highest first, unscored items last, then import
-- order); 'thompson' double Thompson sampling over the ensemble members (see the loop).
CREATE OR REPLACE FUNCTION rl_take(p_project uuid, p_user uuid, p_overlap int, p_lease_seconds int, p_task uuid)
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
    v_pick    uuid;
    v_m1      int;
    v_m2      int;
BEGIN
    SELECT pr.gold_onboarding, pr.gold_rate, pr.queue_strategy, pr.queue_members,
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
        v_item := NULL;
        -- One statement per order, each an index scan (items_open for the import order either
        -- way, items_open_priority for the reward model's priority).
        IF q.queue_strategy = 'thompson' AND q.queue_members > 1 THEN
            -- Double Thompson sampling with the ensemble as the posterior: two distinct members
            -- drawn for this lease; of the 32 best candidates by priority, the first whose two
            -- draws name different best responses, else the first.
            v_m1 := 1 + floor(random() * q.queue_members)::int;
            v_m2 := 1 + (v_m1 + floor(random() * (q.queue_members - 1))::int) % q.queue_members;
            SELECT c.id INTO v_pick
            FROM (SELECT i.id, i.seq, i.queue_priority, i.queue_best FROM items i
                  WHERE i.project_id = p_project AND i.is_open
                    AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = p_user)
                    AND (SELECT count(*) FROM tasks t WHERE t.item_id = i.id
                         AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))) < p_overlap + i.extra_labellers
                  ORDER BY i.queue_priority DESC NULLS LAST, i.seq LIMIT 32) c
            ORDER BY (c.queue_best[v_m1] IS DISTINCT FROM c.queue_best[v_m2]) DESC, c.queue_priority DESC NULLS LAST, c.seq LIMIT 1;
            IF v_pick IS NOT NULL THEN
                SELECT i.id, i.extra_labellers INTO v_item, v_extra FROM items i WHERE i.id = v_pick AND i.is_open FOR NO KEY UPDATE SKIP LOCKED;
            END IF;
        END IF;
        IF v_item IS NOT NULL THEN
            -- thompson's pick, locked
        ELSIF q.queue_strategy = 'fifo' THEN
            SELECT i.id, i.extra_labellers INTO v_item, v_extra FROM items i
            WHERE i.project_id = p_project AND i.is_open
              AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = p_user)
              AND (SELECT count(*) FROM tasks t WHERE t.item_id = i.id
                   AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))) < p_overlap + i.extra_labellers
            ORDER BY i.seq LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED;
        ELSIF q.queue_strategy = 'newest-first' THEN
            SELECT i.id, i.extra_labellers INTO v_item, v_extra FROM items i
            WHERE i.project_id = p_project AND i.is_open
              AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = p_user)
              AND (SELECT count(*) FROM tasks t WHERE t.item_id = i.id
                   AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))) < p_overlap + i.extra_labellers
            ORDER BY i.seq DESC LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED;
        ELSE
            SELECT i.id, i.extra_labellers INTO v_item, v_extra FROM items i
            WHERE i.project_id = p_project AND i.is_open
              AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = p_user)
              AND (SELECT count(*) FROM tasks t WHERE t.item_id = i.id
                   AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))) < p_overlap + i.extra_labellers
            ORDER BY i.queue_priority DESC NULLS LAST, i.seq LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED;
        END IF;
        IF v_item IS NULL THEN
            PERFORM rl_sweep(p_project, p_overlap, 1000);
            RETURN v;
        END IF;
        SELECT i.prompt, s.display_order, s.responses, s.response_ids
          INTO v.prompt, v_order, v.responses, v.response_ids
        FROM items i CROSS JOIN LATERAL (
            SELECT COALESCE(array_agg(r.position ORDER BY r.k), '{}') AS display_order,
                   COALESCE(json_agg(json_build_object('id', r.id, 'text', r.text) ORDER BY r.k), '[]'::json) AS responses,
                   COALESCE(array_agg(r.id ORDER BY r.position), '{}') AS response_ids
            FROM (SELECT rs.id, rs.position, rs.text, random() AS k FROM responses rs WHERE rs.item_id = i.id) r) s
        WHERE i.id = v_item;
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


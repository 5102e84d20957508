-- Submitting a task turns its status from 'leased' to 'submitted'. With `status` in an index
-- that update had to write a new entry into every index of `tasks`; now leases find the
-- caller's live lease through their newest task in the project, `status` is in no index, and
-- the update is HOT (same page, no index touched; pages keep 15% free for it).
-- Forward-only: never edit once landed.

CREATE INDEX tasks_user_recent ON tasks (user_id, project_id, leased_at);
DROP INDEX tasks_user;
ALTER TABLE tasks SET (fillfactor = 85);

-- As in 0002, except: the live lease is the caller's newest task in the project when it is
-- still leased and unexpired (a caller only gets a new lease when they hold no live one), and
-- the "never had this item" re-check is the unique (item_id, user_id) index itself, and the
-- re-count under the lock is written out.
CREATE OR REPLACE FUNCTION rl_lease(p_project uuid, p_user uuid, p_overlap int, p_lease_seconds int, p_task uuid)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_live    uuid;
    v_status  text;
    v_expires timestamptz;
    v_task    uuid;
    v_item    uuid;
    v_n       int;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT id, status, expires_at INTO v_live, v_status, v_expires FROM tasks
    WHERE user_id = p_user AND project_id = p_project ORDER BY leased_at DESC LIMIT 1;
    IF FOUND AND v_status = 'leased' AND v_expires > now() THEN
        RETURN v_live;
    END IF;
    FOR attempt IN 1..20 LOOP
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
        -- rl_taken written out: a SQL function that is not inlined is parsed and planned again
        -- at every call.
        WHERE (SELECT count(*) FROM tasks t WHERE t.item_id = v_item
               AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))) < p_overlap
        ON CONFLICT (item_id, user_id) DO NOTHING
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

-- rewardlab's schema as of the migration baseline: migrations 0001-0008 of before issue 12,
-- squashed (their history is in git). Forward-only: never edit once landed; migrations/README.md
-- says how to change the schema or a function.
--
-- Sections: types · accounts · projects and labelling · exports · training runs · storage ·
-- functions (one delimited section each; a later migration replaces a function whole).

-- ==== types ====

CREATE TYPE task_kind AS ENUM ('ranking', 'pairwise', 'demonstration');
CREATE TYPE member_role AS ENUM ('lead', 'labeller');
-- A lease as the labeller sees it (rl_take, rl_task_view).
CREATE TYPE rl_lease_view AS (task uuid, prompt jsonb, expires_at timestamptz, responses json, response_ids uuid[]);

-- ==== accounts ====

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL UNIQUE CHECK (email = lower(email)),
    password_hash text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    pseudonym     text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id_hash    bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Sign-in attempts, reserved before the password is checked (outcome NULL while it is), so
-- concurrent attempts cannot check more passwords than the throttle allows. The throttle counts
-- per (email, client address), so an attacker elsewhere cannot lock the account's owner out.
CREATE TABLE login_attempts (
    id      bigserial PRIMARY KEY,
    email   text NOT NULL,
    address text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    outcome text CHECK (outcome IN ('failed', 'ok'))
);
CREATE INDEX login_attempts_key ON login_attempts (email, address, id);
CREATE INDEX login_attempts_address ON login_attempts (address, at);

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    name         text NOT NULL,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- ==== projects and labelling ====

CREATE TABLE projects (
    id             uuid PRIMARY KEY,
    slug           text NOT NULL UNIQUE,
    name           text NOT NULL,
    kind           task_kind NOT NULL,
    guidelines     text NOT NULL DEFAULT '',
    flags          text[] NOT NULL,
    allow_ties     boolean NOT NULL DEFAULT true,
    rating_enabled boolean NOT NULL DEFAULT false,
    overlap        integer NOT NULL CHECK (overlap BETWEEN 1 AND 100),
    lease_seconds  integer NOT NULL DEFAULT 1800 CHECK (lease_seconds > 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    role       member_role NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- Items and responses are immutable once imported; `txid` records the creating transaction so
-- an export snapshot can be replayed exactly with pg_visible_in_snapshot.
CREATE TABLE items (
    id          uuid PRIMARY KEY,
    seq         bigserial NOT NULL,
    project_id  uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    external_id text NOT NULL,
    prompt      jsonb NOT NULL,
    prompt_raw  text,
    metadata    jsonb,
    n_responses integer NOT NULL,
    done_count  integer NOT NULL DEFAULT 0,  -- set when the item completes (tasks hold the live count)
    is_open     boolean NOT NULL DEFAULT true,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, external_id)
);
CREATE INDEX items_open ON items (project_id, seq) WHERE is_open;

CREATE TABLE responses (
    id       uuid PRIMARY KEY,
    item_id  uuid NOT NULL REFERENCES items ON DELETE CASCADE,
    position integer NOT NULL,
    model    text NOT NULL,
    text     text NOT NULL,
    metadata jsonb,
    UNIQUE (item_id, position)
);

-- tasks and judgements carry project_id without a foreign key: every insert would otherwise
-- take a KEY SHARE lock on the one project row, and 32 labellers at once turn that into
-- multixact churn. Their item_id foreign key (cascading from the project) keeps them consistent.
CREATE TABLE tasks (
    id            uuid PRIMARY KEY,
    project_id    uuid NOT NULL,
    item_id       uuid NOT NULL REFERENCES items ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    display_order integer[] NOT NULL,
    status        text NOT NULL DEFAULT 'leased' CHECK (status IN ('leased', 'submitted', 'skipped')),
    skip_reason   text,
    leased_at     timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    UNIQUE (item_id, user_id)
) WITH (fillfactor = 85);
-- Leases find the caller's live lease through their newest task in the project, so `status` is
-- in no index and submitting (leased -> submitted) is a HOT update (pages keep 15% free for it).
CREATE INDEX tasks_user_recent ON tasks (user_id, project_id, leased_at);

-- Judgements are immutable rows; comparisons derive from `ranks` (1 = best, equal = tie),
-- aligned with response positions.
CREATE TABLE judgements (
    id              uuid PRIMARY KEY,
    seq             bigserial NOT NULL,
    project_id      uuid NOT NULL,
    item_id         uuid NOT NULL REFERENCES items ON DELETE CASCADE,
    task_id         uuid UNIQUE REFERENCES tasks,
    user_id         uuid REFERENCES users,
    source          text NOT NULL CHECK (source IN ('labeller', 'import')),
    idempotency_key text,
    ranks           smallint[],
    display_order   integer[],
    strength        smallint CHECK (strength BETWEEN 1 AND 3),
    both_bad        boolean NOT NULL DEFAULT false,
    demonstration   text,
    flags           jsonb NOT NULL DEFAULT '{}',
    rating          smallint CHECK (rating BETWEEN 1 AND 7),
    comment         text NOT NULL DEFAULT '',
    time_on_task_ms bigint,
    txid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX judgements_project ON judgements (project_id, seq);
CREATE INDEX judgements_item ON judgements (item_id);

-- ==== exports ====

CREATE TABLE exports (
    id         uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    format     text NOT NULL,
    options    jsonb NOT NULL DEFAULT '{}',
    snapshot   pg_snapshot NOT NULL,
    files      jsonb NOT NULL,
    created_by uuid REFERENCES users,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- ==== training runs: schedules, runs, their metrics and logs, reward-model scores ====

CREATE TABLE schedules (
    id                  uuid PRIMARY KEY,
    project_id          uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    cron                text,
    min_new_comparisons bigint CHECK (min_new_comparisons > 0),
    -- [{"kind", "config", "input"}...]: the runs one firing enqueues, each after the previous.
    chain               jsonb NOT NULL,
    enabled             boolean NOT NULL DEFAULT true,
    next_fire_at        timestamptz,
    last_fired_at       timestamptz,
    comparisons_at_last bigint NOT NULL DEFAULT 0,
    created_by          uuid REFERENCES users ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (cron IS NOT NULL OR min_new_comparisons IS NOT NULL)
);
CREATE INDEX schedules_project ON schedules (project_id);

CREATE TABLE runs (
    id               uuid PRIMARY KEY,
    seq              bigserial NOT NULL,
    project_id       uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('rm', 'sft', 'ppo', 'dpo', 'generate')),
    config           jsonb NOT NULL DEFAULT '{}',
    input            jsonb NOT NULL DEFAULT '{}',
    export_id        uuid REFERENCES exports,
    after_run        uuid REFERENCES runs ON DELETE CASCADE,
    schedule_id      uuid REFERENCES schedules ON DELETE SET NULL,
    status           text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    created_by       uuid REFERENCES users ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    worker           text,
    -- Raised by every claim; a worker may write only while the row still carries its fence.
    fence            bigint NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    lease_expires_at timestamptz,
    model_dir        text,
    resumed_from     text,
    error            text,
    summary          jsonb
);
CREATE INDEX runs_project ON runs (project_id, seq DESC);
CREATE INDEX runs_claimable ON runs (seq) WHERE status IN ('queued', 'running');

-- Metric events as the trainer emitted them; a resumed attempt re-emits steps after its
-- checkpoint, and readers keep the highest fence's value for each (event, step).
CREATE TABLE run_metrics (
    id     bigserial PRIMARY KEY,
    run_id uuid NOT NULL REFERENCES runs ON DELETE CASCADE,
    fence  bigint NOT NULL,
    event  text NOT NULL,
    step   bigint,
    data   jsonb NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_metrics_run ON run_metrics (run_id, event, id);

CREATE TABLE run_logs (
    id     bigserial PRIMARY KEY,
    run_id uuid NOT NULL REFERENCES runs ON DELETE CASCADE,
    fence  bigint NOT NULL,
    line   text NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_logs_run ON run_logs (run_id, id);

-- What a reward model said about each response of its project (written when its run succeeds).
CREATE TABLE response_scores (
    run_id      uuid NOT NULL REFERENCES runs ON DELETE CASCADE,
    response_id uuid NOT NULL REFERENCES responses ON DELETE CASCADE,
    reward      double precision NOT NULL,
    PRIMARY KEY (run_id, response_id)
);

-- ==== storage ====

-- Long texts compress with lz4 where the server has it (faster than the default pglz).
DO $$
BEGIN
    ALTER TABLE responses ALTER COLUMN text SET COMPRESSION lz4;
    ALTER TABLE items ALTER COLUMN prompt SET COMPRESSION lz4;
    ALTER TABLE items ALTER COLUMN prompt_raw SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available; keeping the default compression';
END $$;

-- ==== functions ====
--
-- Leasing and submitting run server-side, one call each. The server gathers the submissions
-- that arrive together and sends them in one call and one transaction (`rl_submit_batch`), so
-- per-call and per-commit costs are paid once per batch; within it, every statement a PL/pgSQL
-- function runs pays its own executor start-up and snapshot, so the hot path is written in few
-- statements. A batch holds its leases' item locks until it commits, so nothing in a batch waits
-- for an item lock: items are closed only when their lock is free (the sweep closes the rest),
-- and a submission on a lapsed lease, which must count the item under its lock, answers 'retry'
-- to be sent again alone (`p_wait`). Tasks are locked in task order. Every lease decision for a
-- labeller takes that labeller's advisory lock first (one live lease per labeller, even when
-- their calls race); a batch takes the locks of all its labellers up front, in key order,
-- before any task lock, so batches cannot deadlock on them.

-- ==== function rl_taken ====

-- How many labellers an item has: submitted tasks and live leases. A lease counts here for 5 s
-- after it lapses, so a submission racing its own expiry (accepted while `expires_at > now()`)
-- can never share its slot with a new lease.
CREATE FUNCTION rl_taken(p_item uuid) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM tasks t
    WHERE t.item_id = p_item AND (t.status = 'submitted' OR (t.status = 'leased' AND t.expires_at > now() - interval '5 seconds'))
$$;

-- ==== function rl_sweep ====

-- Closes complete items near the head of the project's queue. `is_open` only keeps the queue's
-- index small (rl_taken is the truth), so this may lag: a submission closes its own item when it
-- sees it complete, and leases sweep now and then for the ones a race left open. Only items
-- whose row is not locked are closed (a batch may hold a complete item's lock: its lease scan
-- locked it before the last submission committed); the next sweep closes those.
CREATE FUNCTION rl_sweep(p_project uuid, p_overlap int, p_limit int) RETURNS void LANGUAGE sql AS $$
    UPDATE items i SET is_open = false, done_count = c.n
    FROM (SELECT it.id, head.n FROM (
              SELECT h.id, (SELECT count(*) FROM tasks t WHERE t.item_id = h.id AND t.status = 'submitted')::int AS n
              FROM items h WHERE h.project_id = p_project AND h.is_open ORDER BY h.seq LIMIT p_limit) head
          JOIN items it ON it.id = head.id
          WHERE head.n >= p_overlap
          FOR NO KEY UPDATE OF it SKIP LOCKED) c
    WHERE i.id = c.id AND i.is_open
$$;

-- ==== function rl_labeller_lock ====

-- The advisory lock key of a labeller's lease decisions.
CREATE FUNCTION rl_labeller_lock(p_user uuid) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('rl_lease:' || p_user::text, 0)
$$;

-- ==== function rl_take ====

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

-- ==== function rl_lapsed_lease_lost ====

-- Whether a lapsed lease of `p_user` on the item has lost its slot: the item's other claims
-- (submissions, and leases live or lapsed for under 5 s) fill its overlap. Counted under the
-- item's lock, as leases count.
CREATE FUNCTION rl_lapsed_lease_lost(p_item uuid, p_user uuid, p_overlap int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM items i WHERE i.id = p_item FOR NO KEY UPDATE;
    RETURN (SELECT count(*) FROM tasks o WHERE o.item_id = p_item AND o.user_id <> p_user
            AND (o.status = 'submitted' OR (o.status = 'leased' AND o.expires_at > now() - interval '5 seconds'))) >= p_overlap;
END $$;

-- ==== function rl_task_view ====

-- A task the caller already holds, as they see it.
CREATE FUNCTION rl_task_view(p_task uuid) RETURNS rl_lease_view LANGUAGE sql STABLE AS $$
    SELECT t.id, i.prompt, t.expires_at,
           COALESCE((SELECT json_agg(json_build_object('id', r.id, 'text', r.text) ORDER BY o.k)
                     FROM unnest(t.display_order) WITH ORDINALITY AS o(pos, k)
                     JOIN responses r ON r.item_id = t.item_id AND r.position = o.pos), '[]'::json),
           COALESCE((SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = t.item_id), '{}')
    FROM tasks t JOIN items i ON i.id = t.item_id WHERE t.id = p_task
$$;

-- ==== function rl_next_task ====

-- The next task for the caller in the project `p_slug`: the membership check (site admins may
-- label any project), then their live lease, else a new one, as the labeller sees it (responses
-- in the recorded display order, no model names), with the task's rules: the project's kind,
-- ties, rating and flags, and the item's response ids in position order. `member` is false when
-- the caller may not see the project; `task` is NULL when nothing is left for them.
CREATE FUNCTION rl_next_task(p_slug text, p_user uuid, p_task uuid)
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

-- ==== function rl_submit_batch ====

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

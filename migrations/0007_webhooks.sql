-- Webhooks (issue 16): a project's endpoints, the outbox of events and their deliveries with
-- every attempt. Events are written by triggers on the rows that cause them, so an event
-- commits or rolls back with its cause (an aborted import writes none), whatever path made the
-- change (the batched submissions of rl_submit_batch, an import, the worker, the scheduler).
-- An event is written only when an enabled endpoint of its project subscribes to its type, and
-- fanned out to one delivery per such endpoint in the same transaction. Servers deliver them
-- in the background, claiming due deliveries with FOR UPDATE SKIP LOCKED.
-- Forward-only: never edit once landed.

-- ==== projects: the agreement alert's threshold ====

-- `agreement_below`: send `agreement.below_threshold` when the project's agreement between
-- labellers falls below it (NULL: never); `agreement_alerted`: it was sent and the agreement has
-- not recovered since (so one fall sends one event).
ALTER TABLE projects
    ADD COLUMN agreement_below double precision CHECK (agreement_below BETWEEN -1 AND 1),
    ADD COLUMN agreement_alerted boolean NOT NULL DEFAULT false;

-- ==== endpoints, events, deliveries, attempts ====

CREATE TABLE webhook_endpoints (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    url         text NOT NULL,
    description text NOT NULL DEFAULT '',
    events      text[] NOT NULL,
    -- `whsec_<base64 of 32 random bytes>` (Standard Webhooks); shown to the lead once.
    secret      text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    created_by  uuid REFERENCES users ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz
);
CREATE INDEX webhook_endpoints_project ON webhook_endpoints (project_id);

-- `data` is the event's payload; batched types (`batch_txid` set) gather one transaction's
-- rows of a project into one event, their number in `data.count`.
CREATE TABLE webhook_events (
    id         uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    type       text NOT NULL,
    data       jsonb NOT NULL,
    batch_txid xid8,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX webhook_events_batch ON webhook_events (project_id, type, batch_txid) WHERE batch_txid IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES webhook_events ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    last_latency_ms integer,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    id          bigserial PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    latency_ms  integer NOT NULL,
    error       text
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);

-- ==== functions ====

-- Writes an event of `p_type` for project `p_project` (its data `p_data` with the project's
-- slug as `project`) and one delivery per enabled endpoint of the project subscribed to it;
-- nothing, and no other lookup, when there is none. With `p_count`, the event is the
-- transaction's one event of this type in the project: a later call adds to its `count`.
CREATE FUNCTION rl_webhook_emit(p_project uuid, p_type text, p_data jsonb, p_count bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_event uuid;
    v_new   boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.project_id = p_project AND w.enabled AND p_type = ANY (w.events)) THEN
        RETURN;
    END IF;
    p_data := jsonb_build_object('project', (SELECT slug FROM projects WHERE id = p_project)) || p_data;
    IF p_count IS NULL THEN
        INSERT INTO webhook_events (id, project_id, type, data) VALUES (gen_random_uuid(), p_project, p_type, p_data) RETURNING id INTO v_event;
    ELSE
        INSERT INTO webhook_events AS ev (id, project_id, type, data, batch_txid)
        VALUES (gen_random_uuid(), p_project, p_type, p_data || jsonb_build_object('count', p_count), pg_current_xact_id())
        ON CONFLICT (project_id, type, batch_txid) WHERE batch_txid IS NOT NULL
        DO UPDATE SET data = ev.data || jsonb_build_object('count', (ev.data->>'count')::bigint + p_count)
        RETURNING ev.id, ev.xmax = 0 INTO v_event, v_new;
        IF NOT v_new THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO webhook_deliveries (id, event_id, endpoint_id)
    SELECT gen_random_uuid(), v_event, w.id FROM webhook_endpoints w WHERE w.project_id = p_project AND w.enabled AND p_type = ANY (w.events);
END $$;

-- items.imported: one event per project and transaction, counting the items.
CREATE FUNCTION rl_webhook_items_imported() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT n.project_id, count(*) AS n FROM new_items n WHERE n.honeypot_of IS NULL GROUP BY n.project_id LOOP
        PERFORM rl_webhook_emit(r.project_id, 'items.imported', '{}', r.n);
    END LOOP;
    RETURN NULL;
END $$;

-- judgements.stored: a labeller's judgement; one event per project and transaction (a
-- submitted batch), counting them.
CREATE FUNCTION rl_webhook_judgement_stored() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rl_webhook_emit(NEW.project_id, 'judgements.stored', '{}', 1);
    RETURN NULL;
END $$;

-- item.completed: an item closed because it has its judgements (not an exclusion).
CREATE FUNCTION rl_webhook_item_completed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rl_webhook_emit(NEW.project_id, 'item.completed',
        jsonb_build_object('item', NEW.id, 'external_id', NEW.external_id, 'judgements', NEW.done_count), NULL);
    RETURN NULL;
END $$;

-- export.created.
CREATE FUNCTION rl_webhook_export_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rl_webhook_emit(NEW.project_id, 'export.created',
        jsonb_build_object('export', NEW.id, 'format', NEW.format), NULL);
    RETURN NULL;
END $$;

-- run.started (its first claim), run.succeeded, run.failed.
CREATE FUNCTION rl_webhook_run_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_type text;
BEGIN
    v_type := CASE WHEN OLD.started_at IS NULL AND NEW.started_at IS NOT NULL THEN 'run.started'
                   WHEN NEW.status IS DISTINCT FROM OLD.status AND NEW.status = 'succeeded' THEN 'run.succeeded'
                   WHEN NEW.status IS DISTINCT FROM OLD.status AND NEW.status = 'failed' THEN 'run.failed' END;
    IF v_type IS NOT NULL THEN
        PERFORM rl_webhook_emit(NEW.project_id, v_type,
            jsonb_build_object('run', NEW.id, 'kind', NEW.kind, 'status', NEW.status, 'error', NEW.error), NULL);
    END IF;
    RETURN NULL;
END $$;

-- schedule.fired.
CREATE FUNCTION rl_webhook_schedule_fired() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rl_webhook_emit(NEW.project_id, 'schedule.fired', jsonb_build_object('schedule', NEW.id), NULL);
    RETURN NULL;
END $$;

-- labeller.paused.
CREATE FUNCTION rl_webhook_labeller_paused() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rl_webhook_emit(NEW.project_id, 'labeller.paused',
        jsonb_build_object('user', NEW.user_id, 'reason', NEW.reason, 'score', NEW.score), NULL);
    RETURN NULL;
END $$;

-- ==== triggers ====

CREATE TRIGGER webhook_items_imported AFTER INSERT ON items REFERENCING NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION rl_webhook_items_imported();
CREATE TRIGGER webhook_judgement_stored AFTER INSERT ON judgements
    FOR EACH ROW WHEN (NEW.source = 'labeller') EXECUTE FUNCTION rl_webhook_judgement_stored();
CREATE TRIGGER webhook_item_completed AFTER UPDATE OF is_open ON items
    FOR EACH ROW WHEN (OLD.is_open AND NOT NEW.is_open AND NEW.done_count > OLD.done_count) EXECUTE FUNCTION rl_webhook_item_completed();
CREATE TRIGGER webhook_export_created AFTER INSERT ON exports FOR EACH ROW EXECUTE FUNCTION rl_webhook_export_created();
CREATE TRIGGER webhook_run_changed AFTER UPDATE OF status, started_at ON runs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.started_at IS DISTINCT FROM NEW.started_at) EXECUTE FUNCTION rl_webhook_run_changed();
CREATE TRIGGER webhook_schedule_fired AFTER UPDATE OF last_fired_at ON schedules
    FOR EACH ROW WHEN (NEW.last_fired_at IS DISTINCT FROM OLD.last_fired_at) EXECUTE FUNCTION rl_webhook_schedule_fired();
CREATE TRIGGER webhook_labeller_paused AFTER INSERT ON labeller_pauses FOR EACH ROW EXECUTE FUNCTION rl_webhook_labeller_paused();

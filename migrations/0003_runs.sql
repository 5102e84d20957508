-- Training runs, their schedules, metrics and logs, and reward-model scores of responses.
-- Forward-only: never edit once landed.

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

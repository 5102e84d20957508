-- rewardlab schema, version 1. Forward-only: never edit once landed.

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

CREATE TABLE login_failures (
    id    bigserial PRIMARY KEY,
    email text NOT NULL,
    ip    text NOT NULL,
    at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email ON login_failures (email, at);
CREATE INDEX login_failures_ip ON login_failures (ip, at);

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    name         text NOT NULL,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE TYPE task_kind AS ENUM ('ranking', 'pairwise', 'demonstration');
CREATE TYPE member_role AS ENUM ('lead', 'labeller');

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
);
CREATE INDEX tasks_user ON tasks (user_id, project_id, status);

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

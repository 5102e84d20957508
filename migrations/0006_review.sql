-- Review and send-back (issue 13, item 5): a `reviewer` project role, the project's review
-- sampling rate, reviews of judgements (accepted, or rejected with a reason) and reviewers'
-- adjudications of items whose labellers disagree. Judgements stay immutable: a review is a
-- row of its own, read by the exports as of their snapshot (`txid`). A rejected judgement's
-- task becomes 'rejected', so it no longer counts towards the item's overlap, while the task
-- row still keeps its labeller from being given the item again (tasks are unique per item and
-- labeller): the reopened item goes to someone else.
-- Forward-only: never edit once landed.

-- ==== roles ====

-- Not used in this migration (a value added to an enum can be used only once committed).
ALTER TYPE member_role ADD VALUE IF NOT EXISTS 'reviewer';

-- ==== projects: review setting ====

ALTER TABLE projects ADD COLUMN review_rate double precision NOT NULL DEFAULT 0.1 CHECK (review_rate >= 0 AND review_rate <= 1);

-- ==== tasks: rejected work ====

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN ('leased', 'submitted', 'skipped', 'rejected'));

-- ==== reviews ====

-- Append-only: a judgement may be accepted and later rejected, never the other way round (a
-- rejection sent its item back to the queue), and rejected once at most.
CREATE TABLE judgement_reviews (
    id           uuid PRIMARY KEY,
    seq          bigserial NOT NULL,
    project_id   uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    judgement_id uuid NOT NULL REFERENCES judgements ON DELETE CASCADE,
    item_id      uuid NOT NULL,
    reviewer     uuid REFERENCES users ON DELETE SET NULL,
    decision     text NOT NULL CHECK (decision IN ('accepted', 'rejected')),
    reason       text NOT NULL DEFAULT '',
    txid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX judgement_reviews_judgement ON judgement_reviews (judgement_id, decision);
CREATE UNIQUE INDEX judgement_reviews_rejected ON judgement_reviews (judgement_id) WHERE decision = 'rejected';
CREATE INDEX judgement_reviews_project ON judgement_reviews (project_id, seq);

-- ==== adjudications ====

-- A reviewer's final judgement of an item (one per item): exports use it instead of the
-- labellers' judgements of the item. `seq` shares the judgements' sequence, so an export,
-- ordered by when rows were stored, places it where it was made.
CREATE TABLE adjudications (
    id         uuid PRIMARY KEY,
    seq        bigint NOT NULL DEFAULT nextval('judgements_seq_seq'),
    project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    item_id    uuid NOT NULL UNIQUE REFERENCES items ON DELETE CASCADE,
    reviewer   uuid REFERENCES users ON DELETE SET NULL,
    ranks      smallint[] NOT NULL,
    strength   smallint CHECK (strength BETWEEN 1 AND 3),
    both_bad   boolean NOT NULL DEFAULT false,
    note       text NOT NULL DEFAULT '',
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX adjudications_project ON adjudications (project_id, seq);

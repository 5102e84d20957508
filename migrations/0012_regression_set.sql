-- A frozen regression set per project (issue 15, item 5): held-out preference pairs of an
-- export snapshot's test split, copied when a lead freezes it and never changed afterwards; one
-- set at most is the project's active one. After every rm, dpo and ppo run the worker measures
-- the new model on the active set and stores each figure with the run.

CREATE TABLE regression_sets (
    id         uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects ON DELETE CASCADE,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 80),
    export_id  uuid NOT NULL REFERENCES exports ON DELETE CASCADE,
    pairs      integer NOT NULL CHECK (pairs > 0),
    prompts    integer NOT NULL CHECK (prompts > 0),
    active     boolean NOT NULL DEFAULT false,
    created_by uuid REFERENCES users ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

CREATE UNIQUE INDEX regression_sets_one_active ON regression_sets (project_id) WHERE active;

CREATE TABLE regression_pairs (
    set_id   uuid NOT NULL REFERENCES regression_sets ON DELETE CASCADE,
    n        integer NOT NULL,
    prompt   text NOT NULL,
    chosen   text NOT NULL,
    rejected text NOT NULL,
    PRIMARY KEY (set_id, n)
);

CREATE TABLE regression_results (
    run_id     uuid NOT NULL REFERENCES runs ON DELETE CASCADE,
    set_id     uuid NOT NULL REFERENCES regression_sets ON DELETE CASCADE,
    metric     text NOT NULL,
    value      double precision NOT NULL,
    n          integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, set_id, metric)
);

CREATE INDEX regression_results_set ON regression_results (set_id);

-- ==== function rl_regression_frozen ====
-- A frozen set's pairs never change, nor does what a set was frozen from: only which set is
-- active may.
CREATE FUNCTION rl_regression_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'regression_pairs' THEN
        RAISE EXCEPTION 'a frozen regression set''s pairs cannot change';
    END IF;
    IF (NEW.id, NEW.project_id, NEW.name, NEW.export_id, NEW.pairs, NEW.prompts, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.project_id, OLD.name, OLD.export_id, OLD.pairs, OLD.prompts, OLD.created_at) THEN
        RAISE EXCEPTION 'a frozen regression set cannot change (only which set is active can)';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER regression_pairs_frozen BEFORE UPDATE ON regression_pairs FOR EACH ROW EXECUTE FUNCTION rl_regression_frozen();
CREATE TRIGGER regression_sets_frozen BEFORE UPDATE ON regression_sets FOR EACH ROW EXECUTE FUNCTION rl_regression_frozen();

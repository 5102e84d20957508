-- People management without a shell (issue 13, item 9): accounts an admin deactivates, and
-- one-time invitation links; and the lead's item browser (item 7): items listed newest first
-- per project, word search over prompts, and items a lead excluded.
-- Forward-only: never edit once landed.

-- ==== accounts ====

-- A deactivated account signs in no more; its sessions and tokens stop working at once (the
-- lookups check this column, and deactivating also ends them).
ALTER TABLE users ADD COLUMN deactivated_at timestamptz;

-- An invitation: a link with a one-time token (stored only as a keyed hash) by which the
-- invitee sets their password. Single use, until `expires_at`; a new invitation of the same
-- account revokes the unused ones.
CREATE TABLE invites (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    created_by uuid REFERENCES users ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX invites_user ON invites (user_id);

-- ==== the item browser ====

-- Keyset pages of a project's items, newest first.
CREATE INDEX items_project_seq ON items (project_id, seq);

-- Items a lead excluded: they are leased no more and leave every export taken after (an export
-- sees an exclusion only when its snapshot does, so an earlier export replays unchanged). An
-- exclusion is permanent, like the judgements it sets aside.
CREATE TABLE item_exclusions (
    item_id     uuid PRIMARY KEY REFERENCES items ON DELETE CASCADE,
    project_id  uuid NOT NULL,
    excluded_by uuid REFERENCES users ON DELETE SET NULL,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- ==== function rl_prompt_doc ====

-- The words of a prompt (its turns' contents) for search: PostgreSQL's `simple` configuration (no
-- stemming, any language), over the first 100,000 characters (a tsvector holds at most 1 MB).
-- Responses have no such index: it would make imports several times slower (measured: 10,000
-- items of 4 responses 0.8 s without, 3.5 s with); the browser searches them on request.
CREATE FUNCTION rl_prompt_doc(p_prompt jsonb) RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('simple'::regconfig, left(replace(jsonb_path_query_array(p_prompt, '$[*].content')::text, '\n', ' '), 100000))
$$;

CREATE INDEX items_search ON items USING gin (rl_prompt_doc(prompt));

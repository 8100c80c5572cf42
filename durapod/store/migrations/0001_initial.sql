-- The durable record of every run, its checkpoints, and idempotency keys.

CREATE TABLE runs (
    -- The TaskRun's metadata.uid: one record, two doors (kubectl and HTTP).
    id          uuid PRIMARY KEY,
    namespace   text NOT NULL,
    name        text NOT NULL,
    task        text NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
    status      text NOT NULL DEFAULT 'Pending' CHECK (status IN (
                    'Pending', 'Queued', 'Starting', 'Running', 'Retrying', 'Resuming',
                    'Waiting', 'Succeeded', 'Failed', 'Cancelled', 'TimedOut')),
    attempt     integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    resumes     integer NOT NULL DEFAULT 0 CHECK (resumes >= 0),
    -- The TaskDefinition spec the run was admitted with; retries and resumes use it.
    definition  jsonb,
    output      jsonb,
    error       jsonb,
    tags        text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX runs_namespace_name ON runs (namespace, name);
CREATE INDEX runs_task_created ON runs (namespace, task, created_at DESC);
CREATE INDEX runs_recent ON runs (namespace, created_at DESC, id DESC);
CREATE INDEX runs_tags ON runs USING gin (tags);
CREATE INDEX runs_unfinished ON runs (status)
    WHERE status NOT IN ('Succeeded', 'Failed', 'Cancelled', 'TimedOut');

CREATE TABLE checkpoints (
    run_id     uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step       text NOT NULL,
    seq        integer NOT NULL CHECK (seq >= 0),
    output     jsonb,
    size       integer NOT NULL CHECK (size >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step),
    UNIQUE (run_id, seq)
);

-- One row per live idempotency key: the unique constraint, not a read-then-write, decides
-- which trigger creates the run. The row names the TaskRun and keeps the spec to create
-- it from, so any API replica can finish what a crashed one started.
CREATE TABLE idempotency_keys (
    namespace  text NOT NULL,
    task       text NOT NULL,
    key        text NOT NULL,
    run_name   text NOT NULL,
    spec       jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (namespace, task, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

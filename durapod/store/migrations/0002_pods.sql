-- Every pod a run has had: its attempt, timing, and what its runner reported.
-- The operator decides retries, resumes and waits from these rows.

CREATE TABLE pods (
    run_id      uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- 1, 2, 3, ... in the run; the pod is named <run>-<idx>.
    idx         integer NOT NULL CHECK (idx >= 1),
    attempt     integer NOT NULL CHECK (attempt >= 1),
    name        text NOT NULL,
    machine     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set once the API server has the pod: a row without it may never have had one.
    in_cluster  boolean NOT NULL DEFAULT false,
    started_at  timestamptz,
    finished_at timestamptz,
    -- How the pod ended, as the operator saw it.
    outcome     text CHECK (outcome IN ('Succeeded', 'Suspended', 'TaskError', 'Crashed',
                                        'Evicted', 'OOMKilled', 'TimedOut', 'Cancelled')),
    -- What the runner reported: exactly one of these, or none when it could not.
    output      jsonb,
    error       jsonb,
    suspend     jsonb,
    PRIMARY KEY (run_id, idx)
);

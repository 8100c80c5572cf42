-- The run record is the one truth of a run's lifecycle: the operator changes it only in
-- transactions guarded by `version`, moving the slot, pod record and outcome with it, and
-- projects it into the TaskRun status after the commit.

ALTER TABLE runs RENAME COLUMN status TO phase;

ALTER TABLE runs
    -- Bumped by every transition: a writer that read an older version changes nothing.
    ADD COLUMN version integer NOT NULL DEFAULT 0,
    -- Pods the run has had; the current one is <name>-<pods>.
    ADD COLUMN pods integer NOT NULL DEFAULT 0 CHECK (pods >= 0),
    ADD COLUMN machine text,
    -- When a Pending (delayed), Retrying or sleeping run is due.
    ADD COLUMN resume_at timestamptz,
    -- The child run a Waiting run waits for.
    ADD COLUMN waiting_for text,
    -- What a Queued run does once it holds a slot: start, retry, resume or pod.
    ADD COLUMN admit_as text,
    -- Why the run is in its phase (the conditions' message), and since when.
    ADD COLUMN message text NOT NULL DEFAULT '',
    ADD COLUMN transitioned_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN duplicate_of text,
    -- When a finished run's TaskRun is deleted by its TTL.
    ADD COLUMN expires_at timestamptz,
    -- Set once the TaskRun is gone: the record no longer answers for the name.
    ADD COLUMN removed_at timestamptz,
    -- The latest checkpoint shown in status.lastCheckpoint (one replica, at most once a second).
    ADD COLUMN shown_seq integer NOT NULL DEFAULT -1,
    ADD COLUMN shown_step text,
    ADD COLUMN shown_at timestamptz;

-- What the record takes over from the TaskRun status: the current pod and its machine.
UPDATE runs SET pods = p.idx, machine = p.machine
FROM (SELECT DISTINCT ON (run_id) run_id, idx, machine FROM pods ORDER BY run_id, idx DESC) p
WHERE p.run_id = runs.id;

-- A name stands for one live run: a TaskRun deleted and applied again is the new one.
-- Older records of a name (from before this rule) stop answering for it.
UPDATE runs SET removed_at = now()
WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY namespace, name
                                    ORDER BY created_at DESC, id DESC) AS n FROM runs) r
             WHERE r.n > 1);
DROP INDEX runs_namespace_name;
CREATE UNIQUE INDEX runs_live_name ON runs (namespace, name) WHERE removed_at IS NULL;
DROP INDEX runs_unfinished;
CREATE INDEX runs_unfinished ON runs (phase)
    WHERE phase NOT IN ('Succeeded', 'Failed', 'Cancelled', 'TimedOut') AND removed_at IS NULL;
CREATE INDEX runs_removed ON runs (removed_at) WHERE removed_at IS NOT NULL;

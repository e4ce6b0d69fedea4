-- When the store was last listed for orphaned blobs. Listing a whole store is costly (an
-- S3 bucket pages through every object), so one node per interval does it: the node whose
-- update of this row succeeds.
CREATE TABLE media_sweeps (
    singleton boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    swept_at  timestamptz NOT NULL
);

-- The sweep keeps the incoming bytes of backgrounded uploads that wait for their job.
CREATE INDEX media_uploads_incoming ON media_uploads (incoming_identifier);

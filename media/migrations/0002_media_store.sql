-- Which kind of store holds the blobs ("file" or "s3"). Recorded on the first start and
-- changed by a finished `strata media migrate-store`, so that a node configured for the
-- other store refuses to start instead of answering 404 for every blob.
CREATE TABLE media_store_current (
    singleton boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    kind      text        NOT NULL,
    since     timestamptz NOT NULL DEFAULT now()
);

-- Documents whose embedded vector fields need (re)computing. A write records them in its
-- own transaction; a dispatcher turns them into batched jobs on the tenant's
-- "strata.search" queue, so no write is ever left without its vector.
CREATE TABLE search_embed_pending (
    collection_id uuid NOT NULL REFERENCES collections ON DELETE CASCADE,
    field         text NOT NULL,
    doc_id        text NOT NULL,
    tenant_id     uuid NOT NULL REFERENCES tenants ON DELETE CASCADE,
    PRIMARY KEY (collection_id, field, doc_id)
);

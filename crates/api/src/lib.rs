//! ExportJob custom resource, shard task and result messages, CRD generation. Types only, no IO.

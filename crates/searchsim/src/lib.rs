//! An OpenSearch/Elasticsearch-compatible test cluster: in-memory indices, PIT, scroll, slices, faults, a data generator.
